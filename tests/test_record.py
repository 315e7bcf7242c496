"""The recorder: any loop gets a run's schedules, copies, file layout and crash safety."""

from __future__ import annotations

import textwrap

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import killed_after
from simkit.errors import ScenarioError
from simkit.io import recover, schema

#: Root attributes that say when, where and by what a file was made: the rest must match.
_PROVENANCE = set(schema.PROVENANCE_ATTRS) | {schema.ATTR_TITLE, schema.ATTR_SOURCE,
                                               schema.ATTR_HISTORY, schema.ATTR_SCENARIO}

_OUTPUTS = {
    "snap": {"every": 3, "fields": ["u"], "last": True},
    "early": {"at": [2, 5], "fields": ["u"]},
    "diag": {"every": 1, "diagnostics": ["total"],
             "summaries": {"u": ["mean", "max", "std", "l2", {"quantiles": [0.25, 0.5]},
                                 {"histogram": {"bins": 5, "range": [0.0, 60.0]}}]}},
    "mid": {"every": 2, "stage": "square", "fields": ["sq", "u"]},
}


def _group_tree(path):
    """Every group's variables (dims, dtype, values, attributes) and attributes."""
    def walk(group):
        variables = {name: (var.dimensions, var.dtype.str, np.ma.filled(var[...], np.nan),
                            {k: var.getncattr(k) for k in var.ncattrs()})
                     for name, var in group.variables.items()}
        attrs = {k: group.getncattr(k) for k in group.ncattrs() if k not in _PROVENANCE}
        return variables, attrs, {name: walk(child) for name, child in group.groups.items()}

    with netCDF4.Dataset(path) as ds:
        return walk(ds)


def _assert_same_file(got, want):
    got_vars, got_attrs, got_groups = got
    want_vars, want_attrs, want_groups = want
    assert got_attrs == want_attrs
    assert sorted(got_vars) == sorted(want_vars)
    for name, (dims, dtype, values, attrs) in want_vars.items():
        g_dims, g_dtype, g_values, g_attrs = got_vars[name]
        assert (g_dims, g_dtype, g_attrs) == (dims, dtype, attrs), name
        np.testing.assert_array_equal(g_values, values, err_msg=name)
    assert sorted(got_groups) == sorted(want_groups)
    for name in want_groups:
        _assert_same_file(got_groups[name], want_groups[name])


def _convert(backend):
    if backend == "torch":
        import torch

        return lambda a: torch.asarray(a, dtype=torch.float64)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray
    return np.asarray


def _square_then_shift_loop(rec, backend, steps):
    """The fixture solver ``SquareThenShift`` written as a plain loop (in place where the
    library allows, as the solver itself does)."""
    from array_api_compat import array_namespace

    u = _convert(backend)(np.arange(1.0, 9.0))
    xp = array_namespace(u)
    rec.step(0, time=0.0, u=u, total=xp.sum(u))
    for k in range(1, steps + 1):
        with rec.stage("square"):
            sq = u * u
            rec.probe("sq", sq)
            rec.probe("u", u)
        if backend == "jax":
            sq, u = sq + 5.0, u * 0.5
        else:
            sq += 5.0  # in place: captures taken before must not change
            u *= 0.5
        rec.step(k, time=float(k), u=u, total=xp.sum(u))


def test_recorder_file_equals_the_run_file_of_the_same_computation(backend, in_tmp):
    run = simkit.run({"solver": "fixture_solvers:SquareThenShift", "backend": backend,
                      "steps": 7, "dt": 1.0, "outputs": _OUTPUTS, "output": "run.nc"})
    with simkit.record("rec.nc", _OUTPUTS, coords={"i": (np.arange(8), "1", "index")},
                       dims={"u": ("i",), "sq": ("i",)}, time_units="s",
                       long_names={"u": "decaying value", "sq": "u squared", "total": "sum"},
                       ) as rec:
        _square_then_shift_loop(rec, backend, 7)
    _assert_same_file(_group_tree("rec.nc"), _group_tree(run.path))
    with netCDF4.Dataset("rec.nc") as ds:
        assert ds.getncattr(schema.ATTR_BACKEND) == backend
        assert ds.getncattr(schema.ATTR_STATUS) == schema.STATUS_COMPLETE
    mid = xr.open_dataset("rec.nc", group="mid")
    assert list(mid.step.values) == [2, 4, 6]
    # The probe was copied before the loop added 5 to it in place.
    u_before = xr.open_dataset("rec.nc", group="snap").u.sel(step=3).values * 2
    np.testing.assert_array_equal(mid.sq.sel(step=4).values, (u_before / 2) ** 2)


def test_captures_are_copies_taken_at_once(backend, in_tmp):
    convert = _convert(backend)
    u = convert(np.zeros(4))
    with simkit.record("c.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec:
        for i in range(4):
            rec.step(i, u=u)
            if backend == "jax":
                u = u + 1.0
            else:
                u += 1.0
    s = xr.open_dataset("c.nc", group="s")
    np.testing.assert_array_equal(s.u.values, np.arange(4.0)[:, None] * np.ones(4))
    np.testing.assert_array_equal(xr.open_dataset("c.nc").u.values, np.full(4, 3.0))
    assert s.u.dims == ("step", "u_dim0") and list(s.time.values) == [0.0, 1.0, 2.0, 3.0]


def test_conditional_captures_read_the_values_the_loop_passes(in_tmp):
    outputs = {"rise": {"when": {"diagnostic": "loss", "above": 0.5, "cooldown": 2},
                        "diagnostics": ["loss"]},
               "high": {"while": {"diagnostic": "loss", "above": 0.5, "every": 2},
                        "diagnostics": ["loss"]}}
    loss = [0.9, 0.1, 0.6, 0.7, 0.2, 0.8, 0.1, 0.9, 0.95, 0.3, 0.6]
    with simkit.record("w.nc", outputs) as rec:
        for i, value in enumerate(loss):
            rec.step(i, loss=value)
    # Edge-triggered: not at the start (step 0 is where recording begins); rising edges at 2,
    # 5 (the cooldown after 2 ends at 5), not 7 (within the cooldown after 5), 10.
    # Level-triggered: the even steps at which the loss is above 0.5.
    assert list(xr.open_dataset("w.nc", group="rise").step.values) == [2, 5, 10]
    assert list(xr.open_dataset("w.nc", group="high").step.values) == [0, 2, 8, 10]


def test_a_condition_in_a_union_keeps_its_edge_memory_while_another_member_fires(in_tmp):
    outputs = {"either": {"any": [{"every": 7}, {"when": {"diagnostic": "loss", "below": 0.15}}],
                          "diagnostics": ["loss"]}}
    loss = [0.9, 0.1, 0.6, 0.7, 0.2, 0.8, 0.1, 0.1, 0.1, 0.3, 0.6, 0.05, 0.4, 0.4, 0.1, 0.1]
    with simkit.record("u.nc", outputs) as rec:
        for i, value in enumerate(loss):
            assert rec.due(i)  # a condition may fire at any step
            rec.step(i, loss=value)
    # Falling edges at 1, 6, 11 and 14; every 7 at 0, 7 and 14. At 15 the loss was already low
    # at 14 (when every 7 fired too): no edge.
    assert list(xr.open_dataset("u.nc", group="either").step.values) == [0, 1, 6, 7, 11, 14]


def test_due_lets_a_loop_skip_values_and_callables_are_called_only_when_due(in_tmp):
    calls = []

    def expensive():
        calls.append(1)
        return np.ones(3)

    with simkit.record("d.nc", {"s": {"at": [0, 4], "fields": ["g"]},
                                "t": {"sim_time": 0.5, "diagnostics": ["x"]}}) as rec:
        due = []
        for i in range(6):
            due.append(rec.due(i, time=0.25 * i))
            rec.step(i, time=0.25 * i, g=expensive, x=float(i))
        assert len(calls) == 2  # at the captures of steps 0 and 4
    assert len(calls) == 3  # and once more for the final state, at close
    assert due == [True, False, True, False, True, False]
    assert list(xr.open_dataset("d.nc", group="t").step.values) == [0, 2, 4]


def test_bad_use_is_refused_with_one_line_naming_what(in_tmp):
    with pytest.raises(ScenarioError,
                       match=r"outputs.s.evry: unknown schedule key \(did you mean \"every\"\?\)"):
        simkit.record("x.nc", {"s": {"evry": 2, "fields": ["u"]}})
    rec = simkit.record("x.nc", {"s": {"every": 1, "fields": ["u"]}})
    rec.step(3, u=np.zeros(2))
    with pytest.raises(ScenarioError, match=r"step: expected a step after the last one "
                                            r"recorded \(3\), given 3"):
        rec.step(3, u=np.zeros(2))
    with pytest.raises(ScenarioError, match=r"expected the value 'u' that stream 's' keeps at "
                                            r"step 4, given v"):
        rec.step(4, v=1.0)
    with pytest.raises(ScenarioError, match=r"expected 'u' of shape \(2,\) \(as first seen\), "
                                            r"given shape \(3,\)"):
        rec.step(5, u=np.zeros(3))
    rec.close()
    with pytest.raises(ScenarioError, match="path: expected a new file"):
        simkit.record("x.nc", {"s": {"every": 1, "fields": ["u"]}})
    never = simkit.record("n.nc", {"s": {"every": 1, "fields": ["u"]},
                                   "m": {"every": 1, "stage": "half", "fields": ["h"]}})
    never.step(0, u=np.zeros(2))
    never.step(1, u=np.zeros(2))
    with pytest.raises(ScenarioError, match=r"outputs.m: expected every value the streams keep "
                                            r"by the second step that captures \(the file is laid "
                                            r"out from them\), given none for 'h' of stream 'm'"):
        never.step(2, u=np.zeros(2))
    with pytest.raises(ScenarioError, match="expected a new file"):
        simkit.record("x.nc", {"s": {"every": 1, "fields": ["u"]}})


def test_an_error_in_the_loop_keeps_the_captures_and_marks_the_file_failed(in_tmp):
    with pytest.raises(RuntimeError, match="diverged"), \
            simkit.record("f.nc", {"s": {"every": 1, "diagnostics": ["loss"]}}) as rec:
        for i in range(5):
            rec.step(i, loss=float(i))
        raise RuntimeError("diverged")
    with netCDF4.Dataset("f.nc") as ds:
        assert ds.getncattr(schema.ATTR_STATUS) == schema.STATUS_FAILED
        assert "diverged" in ds.getncattr(schema.ATTR_ERROR)
    assert list(xr.open_dataset("f.nc", group="s").loss.values) == [0, 1, 2, 3, 4]


def test_inspect_recover_and_plot_work_on_a_recorder_file(in_tmp):
    from simkit.io.inspect import describe
    from simkit.plot import plot

    with simkit.record("p.nc", {"s": {"every": 2, "fields": ["u"],
                                      "summaries": {"u": [{"histogram": {"bins": 4}}]}}},
                       coords={"x": np.linspace(0, 1, 6)}, dims={"u": ("x",)}) as rec:
        for i in range(9):
            rec.step(i, u=np.linspace(0, 1, 6) * i)
    text = describe("p.nc")
    assert "stream s: u, u_histogram; steps 0..8 every 2 (5)" in text
    assert "final state: step 8" in text
    assert recover("p.nc") == {"s": 5}
    assert plot("p.nc", "u").exists()
    with pytest.raises(ScenarioError, match=r"p.nc: expected the file of a scenario run, given a "
                                            r"recording of a loop"):
        simkit.resume("p.nc")
    # The range came from the first capture (all zeros: numpy's [c - 0.5, c + 0.5]).
    s = xr.open_dataset("p.nc", group="s")
    np.testing.assert_array_equal(s.u_bin_edge.values, np.linspace(-0.5, 0.5, 5))


_KILLED = textwrap.dedent("""
    import sys, numpy as np, simkit
    with simkit.record(sys.argv[1], {"s": {"every": 1, "fields": ["u"]},
                                     "d": {"every": 3, "diagnostics": ["loss"]}}) as rec:
        u = np.zeros((64, 64))
        for i in range(100000):
            u += 1.0
            rec.step(i, u=u, loss=float(i))
            if i % 7 == 0:
                rec.flush()
                print(i, flush=True)
""")


def test_sigkill_during_a_recorder_loop_keeps_every_committed_capture(tmp_path):
    path = tmp_path / "k.nc"
    committed = killed_after(_KILLED, [str(path)], 6)
    kept = recover(path)
    s = xr.open_dataset(path, group="s").load()
    d = xr.open_dataset(path, group="d").load()
    last = committed[-1]
    assert kept["s"] >= last + 1
    np.testing.assert_array_equal(s.step.values[:last + 1], np.arange(last + 1))
    for i in range(last + 1):
        assert np.all(s.u.values[i] == i + 1.0)
    assert list(d.step.values[: last // 3 + 1]) == list(range(0, last + 1, 3))
    assert list(d.loss.values[: last // 3 + 1]) == list(range(0, last + 1, 3))


def test_guide_recorder_example_runs_and_reads_back(in_tmp):
    import re
    from pathlib import Path

    guide = Path(__file__).parent.parent / "docs" / "guides" / "record-a-loop.md"
    text = guide.read_text()
    block = re.search(r"```python\n(import numpy as np, simkit\n.*?simkit\.record\(.*?)```",
                      text, re.S).group(1)
    exec(compile(block, str(guide), "exec"), {})  # noqa: S102 - the guide's own example
    tree = xr.open_datatree("runs/loop.nc")
    assert list(tree["snapshots"].step.values) == [*range(0, 1000, 100), 999]
    assert list(tree["mid"].step.values) == list(range(50, 1000, 50))
    assert list(tree["low"].step.values) == [100]  # loss 1/101 is the first below 0.01
    np.testing.assert_allclose(tree["mid"].h.sel(step=50).values, 0.5 * 0.049)
    train = tree["train"].to_dataset()
    assert train.u_histogram.dims == ("step", "u_bin")
    assert train.u_histogram.sum("u_bin").values.tolist() == [64.0] * 1000


def test_streams_may_be_given_as_typed_streams(in_tmp):
    outputs = {"s": simkit.Stream(every=5, fields=["u"]),
               "w": simkit.Stream(when=simkit.When("loss", above=0.5), diagnostics=["loss"]),
               "e": simkit.Stream(schedule=simkit.At((2, 3)) | simkit.Last(), fields=["u"])}
    mappings = {"s": {"every": 5, "fields": ["u"]},
                "w": {"when": {"diagnostic": "loss", "above": 0.5}, "diagnostics": ["loss"]},
                "e": {"at": [2, 3], "last": True, "fields": ["u"]}}
    loss = [0.1, 0.9, 0.2, 0.8, 0.7, 0.1, 0.6, 0.3, 0.2, 0.1, 0.9, 0.4]
    for path, given in (("t.nc", outputs), ("m.nc", mappings)):
        with simkit.record(path, given) as rec:
            for i, value in enumerate(loss):
                rec.step(i, u=np.full(2, float(i)), loss=value)
    _assert_same_file(_group_tree("t.nc"), _group_tree("m.nc"))
    s = xr.open_dataset("t.nc", group="s")
    assert list(s.step.values) == [0, 5, 10]
    np.testing.assert_array_equal(s.u.values[:, 0], [0.0, 5.0, 10.0])
    assert list(xr.open_dataset("t.nc", group="w").step.values) == [1, 3, 6, 10]
    assert list(xr.open_dataset("t.nc", group="e").step.values) == [2, 3, 11]
