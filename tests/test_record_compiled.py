"""Recording inside compiled code: ``rec.step`` in ``jax.jit`` / ``lax.scan`` / ``fori_loop`` /
``while_loop``, ``rec.scan``, and ``torch.compile``; each file is the host recording's file."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import killed_after
from simkit.errors import ScenarioError
from simkit.io import recover
from simkit.recorder import _jax_host
from tests.test_record import _assert_same_file, _group_tree

#: Every kind a compiled loop decides on the device: listed steps, an interval, a condition's
#: rising edges, a level condition, summaries; ``last`` is rec.scan's (``_WITH_LAST``).
_OUTPUTS = {
    "early": {"at": [2, 5, 8], "fields": ["u"]},
    "snap": {"every": 100, "fields": ["u"]},
    "diag": {"every": 1, "diagnostics": ["energy", "umax"]},
    "hot": {"when": {"diagnostic": "umax", "above": 0.5}, "fields": ["u"],
            "diagnostics": ["umax"]},
    "warm": {"while": {"diagnostic": "umax", "above": 0.52, "every": 3}, "fields": ["u"]},
    "summ": {"every": 7, "summaries": {"u": ["mean", {"histogram": {"bins": 4,
                                                                   "range": [0.0, 1.0]}}]}},
}
_WITH_LAST = {**_OUTPUTS, "end": {"last": True, "fields": ["u"], "diagnostics": ["energy"]}}
_STEPS = 301  # the last step, 300, is an ``every: 100`` capture


@jax.jit
def _advance(u, i):
    """One step of a user's own simulation: diffusion with a forcing that rises and falls."""
    lap = jnp.roll(u, 1) + jnp.roll(u, -1) - 2 * u
    u = u + 0.2 * lap + 0.02 * jnp.sin(0.1 * i.astype(jnp.float32))
    return u, jnp.sum(u * u), jnp.max(u)


_U0 = jnp.linspace(0.0, 1.0, 16, dtype=jnp.float32) ** 4 * 0.6


def _host_file(path, outputs, steps=_STEPS):
    with simkit.record(path, outputs) as rec:
        u = _U0
        for i in range(steps):
            u, energy, umax = _advance(u, jnp.int32(i))
            rec.step(i, time=jnp.float32(i) * 0.5, u=u, energy=energy, umax=umax)
    return _group_tree(path)


def _body(rec):
    def body(u, i):
        u, energy, umax = _advance(u, i)
        rec.step(i, time=i.astype(jnp.float32) * 0.5, u=u, energy=energy, umax=umax)
        return u, None
    return body


def test_the_reference_loop_crosses_its_thresholds(tmp_path):
    """The loop every comparison below runs captures at rising edges and inside levels."""
    _host_file(tmp_path / "h.nc", _WITH_LAST)
    tree = xr.open_datatree(tmp_path / "h.nc")
    hot = list(tree["hot"].step.values)
    assert len(hot) >= 4 and all(v > 0.5 for v in tree["hot"].umax.values)
    assert 0 < len(tree["warm"].step.values) < _STEPS // 3
    assert list(tree["end"].step.values) == [_STEPS - 1]


def test_rec_scan_inside_jit_writes_the_host_file(tmp_path):
    want = _host_file(tmp_path / "h.nc", _WITH_LAST)
    with simkit.record(tmp_path / "c.nc", _WITH_LAST) as rec:
        run = jax.jit(lambda u: rec.scan(_body(rec), u, jnp.arange(_STEPS, dtype=jnp.int32)))
        u, ys = run(_U0)
        jax.block_until_ready(u)
    assert ys is None
    _assert_same_file(_group_tree(tmp_path / "c.nc"), want)


def test_rec_scan_called_twice_continues_and_the_same_steps_again_are_refused(tmp_path):
    """Each run of a jitted function delivers its steps when it runs (tracing captures
    nothing): two runs over consecutive steps (150 then 151 of them: a retrace) make one file;
    a third over steps already recorded is refused as steps out of order."""
    want = _host_file(tmp_path / "h.nc", _WITH_LAST)
    with simkit.record(tmp_path / "c.nc", _WITH_LAST) as rec:
        run = jax.jit(lambda u, steps: rec.scan(_body(rec), u, steps)[0])
        u = run(_U0, jnp.arange(150, dtype=jnp.int32))
        u = run(u, jnp.arange(150, _STEPS, dtype=jnp.int32))
        jax.block_until_ready(u)
        with pytest.raises(Exception, match=r"expected a step after the last one recorded "
                                            r"\(300\), given 0"):
            jax.block_until_ready(run(u, jnp.arange(150, dtype=jnp.int32)))
    # The refused run failed the file; the two before it are whole in it.
    _assert_same_file(_group_tree(tmp_path / "h.nc")[2]["snap"],
                      _group_tree(tmp_path / "c.nc")[2]["snap"])
    del want


def _scan_loop(rec):
    return jax.lax.scan(_body(rec), _U0, jnp.arange(_STEPS, dtype=jnp.int32))[0]


def _fori_loop(rec):
    def body(i, u):
        return _body(rec)(u, i)[0]
    return jax.lax.fori_loop(0, _STEPS, body, _U0)


def _while_loop(rec):
    def body(carry):
        i, u = carry
        return i + 1, _body(rec)(u, i)[0]
    return jax.lax.while_loop(lambda c: c[0] < _STEPS, body, (jnp.int32(0), _U0))[1]


@pytest.mark.parametrize("loop", [_scan_loop, _fori_loop, _while_loop],
                         ids=["lax.scan", "fori_loop", "while_loop"])
def test_rec_step_inside_a_users_own_compiled_loop_writes_the_host_file(tmp_path, loop):
    want = _host_file(tmp_path / "h.nc", _OUTPUTS)
    with simkit.record(tmp_path / "c.nc", _OUTPUTS) as rec:
        jax.block_until_ready(jax.jit(lambda: loop(rec))())
    _assert_same_file(_group_tree(tmp_path / "c.nc"), want)


def test_the_host_is_asked_only_at_steps_that_may_capture(tmp_path, monkeypatch):
    delivered = []
    deliver = _jax_host.Host.deliver

    def counted(self, form, step, time, values):
        delivered.append(int(step))
        return deliver(self, form, step, time, values)

    monkeypatch.setattr(_jax_host.Host, "deliver", counted)
    outputs = {"snap": {"every": 100, "fields": ["u"]}, "early": {"at": [2, 5], "fields": ["u"]}}
    with simkit.record(tmp_path / "c.nc", outputs) as rec:
        jax.block_until_ready(jax.jit(lambda: _scan_loop(rec))())
    assert delivered == [0, 2, 5, 100, 200, 300]


def test_rec_scan_hands_per_step_scalars_over_in_blocks(tmp_path, monkeypatch):
    """Scalars due every step wait in device buffers: one callback per block of rows (the
    last one with the last step), not one per step."""
    calls = []
    rows = _jax_host.Host.rows

    def counted(self, form, count, steps, times, values):
        calls.append(int(count))
        return rows(self, form, count, steps, times, values)

    monkeypatch.setattr(_jax_host.Host, "rows", counted)
    outputs = {"diag": {"every": 1, "diagnostics": ["energy", "umax"]}}
    steps = 2500
    with simkit.record(tmp_path / "c.nc", outputs) as rec:
        jax.block_until_ready(jax.jit(lambda: rec.scan(
            _body(rec), _U0, jnp.arange(steps, dtype=jnp.int32))[0])())
    assert calls == [1024, 1024, steps - 1 - 2048]
    diag = xr.open_dataset(tmp_path / "c.nc", group="diag")
    assert list(diag.step.values) == list(range(steps))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int32", "bool"])
@pytest.mark.parametrize("side", ["above", "below"])
def test_a_condition_on_the_device_says_what_the_host_says_at_its_threshold(dtype, side):
    """Near the threshold (0.1 is no float32, 3.0 is every dtype's, 2.5 no integer's), the
    device's comparison in the value's dtype and the host's on its float64 agree."""
    from simkit.recorder._jax_due import holds_on_device
    from simkit.schedule import Condition

    for limit in (0.1, 3.0, 2.5, -1.0):
        condition = Condition("x", **{side: limit})
        near = np.asarray(limit, np.float32)
        grid = np.concatenate([np.nextafter(near, np.float32(np.inf)) + np.arange(-40, 40)
                               * np.spacing(near), np.linspace(-4, 4, 81, dtype=np.float32)])
        values = jnp.asarray(grid).astype(dtype)
        device = np.asarray(jax.vmap(lambda v, c=condition: holds_on_device(c, v))(values))
        host = [condition.holds(float(np.asarray(v, np.float64))) for v in np.asarray(
            values.astype(jnp.float32))]
        assert list(device) == host, (limit, dtype)


def _refused(tmp_path, outputs, body, match):
    with simkit.record(tmp_path / "e.nc", outputs) as rec, \
            pytest.raises(ScenarioError, match=match):
        jax.jit(lambda u: rec.scan(body(rec), u, jnp.arange(4, dtype=jnp.int32)))(_U0)


def test_a_condition_value_missing_or_not_one_number_is_refused_while_tracing(tmp_path):
    def without_umax(rec):
        def body(u, i):
            rec.step(i, u=u, energy=jnp.sum(u))
            return u, None
        return body

    _refused(tmp_path, _OUTPUTS, without_umax,
             r"outputs.hot: expected the value 'umax' that the condition of stream 'hot' reads, "
             r"given u, energy")

    def field_as_umax(rec):
        def body(u, i):
            rec.step(i, u=u, energy=jnp.sum(u), umax=u)
            return u, None
        return body

    _refused(tmp_path, _OUTPUTS, field_as_umax,
             r"expected one number for 'umax', which the condition of stream 'hot' reads, "
             r"given shape \(16,\)")


def test_two_steps_per_scan_body_are_refused(tmp_path):
    def twice(rec):
        def body(u, i):
            rec.step(i, u=u)
            rec.step(i + 1, u=u)
            return u, None
        return body

    _refused(tmp_path, {"s": {"every": 1, "fields": ["u"]}}, twice,
             r"expected one rec.step call per step of rec.scan's body, given 2")


def test_what_compiled_code_cannot_record_is_refused_with_what_to_do(tmp_path):
    with simkit.record(tmp_path / "e.nc", _WITH_LAST) as rec:
        with pytest.raises(ScenarioError, match=r"outputs.end: expected rec.scan for stream "
                                                r"'end' \(last: "):
            jax.jit(lambda: _scan_loop(rec))()
        with pytest.raises(ScenarioError, match=r"expected a host value for probe 'x', given a "
                                                r"traced one"):
            jax.jit(lambda u: rec.probe("x", u))(_U0)
        with pytest.raises(ScenarioError, match=r"expected values of one member inside "
                                                r"compiled code, given 'u' under jax.vmap"):
            jax.vmap(lambda u: rec.step(jnp.int32(0), u=u))(jnp.ones((2, 3)))
    clock = {"c": {"wall_time": 5.0, "fields": ["u"]}}
    with simkit.record(tmp_path / "w.nc", clock) as rec, \
            pytest.raises(ScenarioError, match=r"outputs.c.wall_time: expected a schedule by "
                                               r"steps or conditions inside compiled code, "
                                               r"given wall_time"):
        jax.jit(lambda: _scan_loop(rec))()
    with simkit.record(tmp_path / "f.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec, \
            pytest.raises(ScenarioError, match=r"step: expected a whole step number \(one "
                                               r"integer\) inside compiled code, given an array "
                                               r"of float32 of shape \(\)"):
        jax.jit(lambda u: rec.step(jnp.float32(1.0), u=u))(_U0)


def test_steps_out_of_order_inside_a_loop_fail_the_call_and_the_file(tmp_path):
    outputs = {"s": {"every": 1, "fields": ["u"]}}
    rec = simkit.record(tmp_path / "o.nc", outputs)

    def body(u, i):
        rec.step(i // 2, u=u)
        return u, None

    with pytest.raises(Exception, match=r"expected a step after the last one recorded \(0\), "
                                        r"given 0"), rec:
        jax.block_until_ready(jax.jit(lambda: jax.lax.scan(
            body, _U0, jnp.arange(6, dtype=jnp.int32))[0])())
    ds = xr.open_dataset(tmp_path / "o.nc", group="s")
    assert list(ds.step.values) == [0]
    assert xr.open_dataset(tmp_path / "o.nc").attrs["simkit_status"] == "failed"


def test_torch_compile_records_with_one_graph_break_and_no_recompilation(tmp_path):
    """The file holds what the compiled function computed (the same values recorded by a host
    loop make the same file); one graph break per call, one graph either side of it, and no
    recompilation however many steps run."""
    import torch
    from torch._dynamo.utils import counters

    outputs = {"train": {"every": 1, "diagnostics": ["loss"]},
               "hist": {"every": 5, "summaries": {"w": [{"histogram": {"bins": 8,
                                                                      "range": [-3, 3]}}]}}}
    torch._dynamo.reset()
    counters.clear()
    seen = []

    @torch.compile
    def train(rec, w, i):
        w = w - 0.1 * torch.tanh(w)
        loss = (w * w).mean()
        rec.step(i, loss=loss, w=w)
        return w, loss

    frames = []
    with simkit.record(tmp_path / "c.nc", outputs) as rec:
        w = torch.linspace(-3, 3, 64, dtype=torch.float64)
        for i in range(20):
            w, loss = train(rec, w, torch.tensor(i))
            seen.append((w.clone(), loss.clone()))
            frames.append(counters["frames"]["total"])
    with simkit.record(tmp_path / "h.nc", outputs) as rec:
        for i, (w, loss) in enumerate(seen):
            rec.step(i, loss=loss, w=w)
    _assert_same_file(_group_tree(tmp_path / "c.nc"), _group_tree(tmp_path / "h.nc"))
    # One break, the host call (dynamo counts it in each frame it unwinds: the function,
    # Recorder.step and the dispatch to the host call); one graph; frames compiled at the
    # first call only.
    (reason,) = counters["graph_break"]
    assert "disable()`d function" in reason and "host_step" in reason
    assert counters["graph_break"][reason] == 3
    assert counters["stats"]["unique_graphs"] == 1
    assert frames == [frames[0]] * 20 and counters["recompiles"] == {}
    assert len(xr.open_dataset(tmp_path / "c.nc", group="hist").step) == 4


_KILLED = textwrap.dedent("""
    import sys, jax, jax.numpy as jnp, simkit
    outputs = {"s": {"every": 1, "fields": ["u"]}, "d": {"every": 3, "diagnostics": ["loss"]}}
    with simkit.record(sys.argv[1], outputs) as rec:
        def body(u, i):
            u = u + 1.0
            rec.step(i, u=u, loss=i.astype(jnp.float32))
            return u, None
        run = jax.jit(lambda u, steps: rec.scan(body, u, steps)[0])
        u = jnp.zeros((32, 32), jnp.float32)
        for k in range(100000):
            u = jax.block_until_ready(run(u, jnp.arange(10 * k, 10 * k + 10, dtype=jnp.int32)))
            rec.flush()
            print(10 * k + 9, flush=True)
""")


def test_sigkill_during_a_compiled_loop_keeps_every_committed_capture(tmp_path):
    path = tmp_path / "k.nc"
    committed = killed_after(_KILLED, [str(path)], 5)
    kept = recover(path)
    last = committed[-1]
    assert kept["s"] >= last + 1
    s = xr.open_dataset(path, group="s").load()
    d = xr.open_dataset(path, group="d").load()
    np.testing.assert_array_equal(s.step.values[:last + 1], np.arange(last + 1))
    for i in range(last + 1):
        assert np.all(s.u.values[i] == i + 1.0)
    assert list(d.loss.values[: last // 3 + 1]) == list(range(0, last + 1, 3))
