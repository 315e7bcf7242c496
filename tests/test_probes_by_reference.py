"""Diagnostics and probes added by a scenario as ``module:function``, without subclassing."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import heat_scenario
from simkit.errors import ScenarioError

_MODULE = textwrap.dedent('''
    from array_api_compat import array_namespace


    def spread(state):
        xp = array_namespace(state["u"])
        return xp.max(state["u"]) - xp.min(state["u"])


    def lap_squared(state):
        return state["laplacian"] * state["laplacian"]


    def lap_peak(state):
        xp = array_namespace(state["laplacian"])
        return xp.max(xp.abs(state["laplacian"]))
''')


def _scenario(tmp_path, backend, name="probe_mod", **extra):
    """A scenario file beside a module of its own (found without PYTHONPATH)."""
    (tmp_path / f"{name}.py").write_text(_MODULE)
    data = heat_scenario(backend=backend, steps=6, output=str(tmp_path / "p.nc"), outputs={
        "snap": {"every": 2, "fields": ["u"], "diagnostics": ["spread"]},
        "mid": {"every": 3, "stage": "laplacian", "fields": ["laplacian", "lap2"],
                "summaries": {"lap2": ["max"]}}},
        diagnostics={"spread": {"function": f"{name}:spread", "units": "K",
                                "long_name": "max minus min of u"}},
        probes={"lap2": {"stage": "laplacian", "function": f"{name}:lap_squared",
                         "units": "K2 m-4"}}, **extra)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_added_diagnostic_and_probe_are_computed_in_the_step(backend, tmp_path, in_tmp):
    result = simkit.run(_scenario(tmp_path, backend, name=f"probe_mod_{backend}"),
                        allow_import=True)
    snap = xr.open_dataset(result.path, group="snap")
    np.testing.assert_allclose(snap.spread.values, snap.u.max(("y", "x")).values
                               - snap.u.min(("y", "x")).values, rtol=1e-14)
    assert snap.spread.attrs["units"] == "K"
    assert snap.spread.attrs["long_name"] == "max minus min of u"
    mid = xr.open_dataset(result.path, group="mid")
    assert list(mid.step.values) == [3, 6]
    np.testing.assert_array_equal(mid.lap2.values, mid.laplacian.values ** 2)
    assert mid.lap2.dims == ("step", "y", "x") and mid.lap2.attrs["units"] == "K2 m-4"
    np.testing.assert_array_equal(mid.lap2_max.values, mid.lap2.max(("y", "x")).values)


def test_references_need_the_import_opt_in(tmp_path, in_tmp, monkeypatch):
    monkeypatch.delenv("SIMKIT_ALLOW_IMPORT", raising=False)
    with pytest.raises(ScenarioError, match=r"s.yaml:\d+: diagnostics.spread.function: expected "
                                            r"no import unless allowed, given 'probe_mod:spread'"):
        simkit.run(_scenario(tmp_path, "numpy"))


@pytest.mark.parametrize(("extra", "message"), [
    ({"diagnostics": {"energy": "probe_mod:spread"}},
     r"diagnostics.energy: expected a new name"),
    ({"probes": {"p": {"stage": "laplace", "function": "probe_mod:lap_squared"}}},
     r'probes.p.stage: unknown stage \(did you mean "laplacian"\?\)'),
    ({"diagnostics": {"d": {"function": "probe_mod:nothing"}}},
     r"diagnostics.d.function: expected an importable 'module:function', given "
     r"'probe_mod:nothing' \(AttributeError"),
    ({"diagnostics": {"d": {"function": "probe_mod:spread", "unit": "K"}}},
     r'diagnostics.d.unit: unknown key \(did you mean "units"\?\)'),
])
def test_bad_references_are_refused_naming_the_key(tmp_path, in_tmp, extra, message):
    path = _scenario(tmp_path, "numpy")
    data = yaml.safe_load(path.read_text())
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=message):
        simkit.run(path, allow_import=True)


@pytest.mark.parametrize("stop", [False, True])
def test_level_condition_on_a_probe_captures_exactly_where_it_holds(backend, tmp_path, in_tmp,
                                                                    stop):
    """``while`` with ``stage``: the diagnostic is taken of the state right after the stage (a
    probe), inside the blocks; and on the host path when ``stop_when`` ends the run."""
    name = f"peak_mod_{backend}_{int(stop)}"
    (tmp_path / f"{name}.py").write_text(_MODULE)
    common = {"backend": backend, "steps": 40,
              "diagnostics": {"lap_peak": {"function": f"{name}:lap_peak", "units": "K m-2"}}}

    def run(name, **data):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(heat_scenario(**common, **data,
                                                     output=str(tmp_path / f"{name}.nc"))))
        return simkit.run(path, allow_import=True)

    every = run("every", outputs={
        "lap": {"every": 1, "stage": "laplacian", "fields": ["laplacian"]},
        "e": {"every": 1, "diagnostics": ["energy"]}})
    lap = xr.open_dataset(every.path, group="lap")
    peak = np.abs(lap.laplacian).max(("y", "x")).values  # steps 1..40
    threshold = float(np.sort(peak)[len(peak) // 2 + (2 if stop else 0)])
    thin = 1 if stop else 2
    extra = {}
    end = 40
    if stop:  # ends the run mid-way: the last step's stream is taken on the host path
        energy = xr.open_dataset(every.path, group="e").energy.values
        below = float(0.5 * (energy[30] + energy[31]))
        extra["stop_when"] = {"diagnostic": "energy", "below": below}
        end = int(np.argmax(energy < below))
    # Without a stop: while the peak is high. With one: once it is low, so the condition holds
    # at the step where the run stops (taken on the host path, from the retaken stage).
    side = "below" if stop else "above"
    result = run("w", **extra, outputs={
        "hot": {"while": {"diagnostic": "lap_peak", "stage": "laplacian", side: threshold,
                          "every": thin}, "fields": ["u"]}})
    hot = xr.open_dataset(result.path, group="hot")
    holds = peak < threshold if stop else peak > threshold
    expected = [s for s in range(thin, end + 1, thin) if holds[s - 1]]
    assert 0 < len(expected) < end // thin  # holds at some steps, not at all
    assert not stop or expected[-1] == end
    assert list(hot.step.values) == expected
    assert result.step == end


def test_conditions_on_stages_are_refused_where_they_cannot_be_taken(in_tmp):
    stream = {"while": {"diagnostic": "energy", "stage": "lapl", "above": 1.0}, "fields": ["u"]}
    with pytest.raises(ScenarioError, match=r"outputs\.hot\.while\.stage: unknown stage "
                       r'\(did you mean "laplacian"\?\); expected one of laplacian, update, given '
                       r"'lapl'"):
        simkit.run(heat_scenario(outputs={"hot": stream}))
    with pytest.raises(ScenarioError, match=r"outputs\.hot\.when\.stage: unknown stage .*"
                       r"given 'update2'"):
        simkit.run(heat_scenario(outputs={"hot": {"when": {
            "diagnostic": "energy", "stage": "update2", "above": 1.0}, "fields": ["u"]}}))
    with pytest.raises(ScenarioError, match=r"stop_when\.stage: unknown stage.*given 'x'"):
        simkit.run(heat_scenario(stop_when={"diagnostic": "energy", "stage": "x", "above": 1.0}))
    with pytest.raises(ScenarioError, match=r"stop_when\.stage: expected a stage name, given 3"):
        simkit.run(heat_scenario(stop_when={"diagnostic": "energy", "stage": 3, "above": 1.0}))
    with pytest.raises(ScenarioError, match=r"outputs\.hot\.while\.stage: expected a condition "
                       r"on a value the loop passes, given one on stage 'laplacian'"):
        simkit.record("r.nc", {"hot": {"while": {"diagnostic": "loss", "stage": "laplacian",
                                                 "above": 1.0}, "diagnostics": ["loss"]}})


def test_a_condition_reading_what_its_state_lacks_or_of_another_shape_stops_before_a_step(
        tmp_path, in_tmp):
    (tmp_path / "cond_mod.py").write_text(textwrap.dedent('''
        from array_api_compat import array_namespace


        def update_only(state):  # the Laplacian probe exists only right after its stage
            return array_namespace(state["u"]).max(state["laplacian"])


        def pair(state):
            xp = array_namespace(state["u"])
            return xp.stack([xp.max(state["u"]), xp.min(state["u"])])
    '''))

    def run(**outputs):
        data = heat_scenario(steps=6, output=str(tmp_path / "c.nc"), outputs=outputs,
                             diagnostics={"lap": "cond_mod:update_only", "pair": "cond_mod:pair"})
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        return simkit.run(path, allow_import=True, overwrite=True)

    with pytest.raises(ScenarioError, match=r"expected the values diagnostic 'lap' reads in the "
                       r"state at the end of a step, given one without 'laplacian' \(it holds "
                       r"u\)"):
        run(hot={"when": {"diagnostic": "lap", "above": 1.0}, "fields": ["u"]})
    with pytest.raises(ValueError, match=r"diagnostic 'pair': expected shape \(\) from its dims "
                       r"\(\), given \(2,\)"):
        run(hot={"while": {"diagnostic": "pair", "stage": "laplacian", "above": 0.0},
                 "fields": ["u"]})
    assert run(hot={"when": {"diagnostic": "lap", "stage": "laplacian", "above": 1e9},
                    "fields": ["u"]}).step == 6

