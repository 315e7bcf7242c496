"""Captures inside the compiled loop: blocks of capture points run as one backend call."""

from __future__ import annotations

import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario, lorenz_scenario, require_backend
from simkit.driver import _blocks
from simkit.errors import NonFiniteError, ScenarioError


def _group(path, name):
    with xr.open_dataset(path, group=name) as ds:
        return ds.load()


def _streams(path, names):
    return {name: _group(path, name) for name in names}


def test_block_size_does_not_change_a_single_value(backend, in_tmp, monkeypatch):
    """Blocks cut anywhere (buffers of 3 points, or of 1024) give the same file contents."""
    scenario = heat_scenario(backend=backend, steps=40, until=None, outputs={
        "snap": {"every": 7, "fields": ["u"]}, "early": {"at": [2, 5, 8], "fields": ["u"]},
        "diag": {"every": 1, "diagnostics": ["energy", "heat", "max_abs"]},
        "lap": {"every": 5, "stage": "laplacian", "fields": ["laplacian"]}})
    big = simkit.run({**scenario, "output": "big.nc"})
    monkeypatch.setattr(_blocks, "BLOCK_POINTS", 3)
    small = simkit.run({**scenario, "output": "small.nc"})
    np.testing.assert_array_equal(big.state["u"], small.state["u"])
    names = ["snap", "early", "diag", "lap"]
    a, b = _streams(big.path, names), _streams(small.path, names)
    for name in names:
        xr.testing.assert_identical(a[name], b[name])
    assert list(a["diag"].step.values) == list(range(41))
    assert list(a["lap"].step.values) == [5, 10, 15, 20, 25, 30, 35, 40]


def test_diagnostics_every_step_equal_the_diagnostics_of_the_captured_fields(backend, in_tmp):
    """Each stored diagnostic is computed from the state of its own step (not of the block's end)."""
    result = simkit.run(heat_scenario(backend=backend, steps=30, outputs={
        "all": {"every": 1, "fields": ["u"], "diagnostics": ["heat", "max_abs"]}}))
    ds = _group(result.path, "all")
    u = ds.u.values
    np.testing.assert_allclose(ds.heat.values, u.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.max_abs.values, np.abs(u).max(axis=(1, 2)), rtol=1e-15)
    np.testing.assert_array_equal(u[-1], result.state["u"])


def test_sim_time_captures_land_exactly_inside_blocks(backend, in_tmp):
    result = simkit.run(heat_scenario(backend=backend, steps=None, until=3.0, dt=0.2,
                                      outputs={"t": {"sim_time": 0.7, "diagnostics": ["heat"]}}))
    ds = _group(result.path, "t")
    np.testing.assert_allclose(ds.time.values, [0.0, 0.7, 1.4, 2.1, 2.8, 3.0][:len(ds.time)],
                               rtol=0, atol=1e-12)
    assert result.time == pytest.approx(3.0, abs=1e-12)


def _level_expected(backend, threshold, every):
    ref = simkit.run(heat_scenario(backend=backend, steps=60, output="ref.nc", outputs={
        "d": {"every": 1, "diagnostics": ["max_abs"]}}))
    values = _group(ref.path, "d").max_abs.values
    return [s for s in range(0, 61, every) if values[s] > threshold]


def test_while_captures_exactly_the_candidate_steps_where_the_condition_holds(backend, in_tmp):
    """Level-triggered: every `every` steps while max |u| is above a threshold, decided on the
    device inside the block (the initial state on the host path, the same comparison)."""
    threshold = 0.9
    expected = _level_expected(backend, threshold, 4)
    assert 0 < len(expected) < 16  # the condition holds for a while, then stops holding
    result = simkit.run(heat_scenario(backend=backend, steps=60, outputs={
        "hot": {"while": {"diagnostic": "max_abs", "above": threshold, "every": 4},
                "fields": ["u"], "diagnostics": ["max_abs"]}}))
    ds = _group(result.path, "hot")
    assert list(ds.step.values) == expected
    assert (ds.max_abs.values > threshold).all()


def test_while_is_alone_in_its_stream(in_tmp):
    with pytest.raises(ScenarioError, match="'while' alone in its stream"):
        simkit.run(heat_scenario(outputs={"hot": {"every": 10, "while": {
            "diagnostic": "max_abs", "above": 0.5}, "fields": ["u"]}}))
    with pytest.raises(ScenarioError, match="outputs.hot.while.diagnostic: unknown diagnostic"):
        simkit.run(heat_scenario(outputs={"hot": {"while": {
            "diagnostic": "max_abss", "above": 0.5}, "fields": ["u"]}}))


def test_when_inside_blocks_stops_at_the_edge_and_keeps_the_block_captures(backend, in_tmp):
    """A condition that fires mid-gap ends the block there; the captures before it are kept and
    the run goes on from that step (heat decays: max |u| falls below 0.7 once)."""
    expected = _level_expected(backend, 0.7, 1)
    cross = max(expected) + 1  # the first step at or below 0.7 (candidates every step)
    result = simkit.run(heat_scenario(backend=backend, steps=60, outputs={
        "d": {"every": 1, "diagnostics": ["max_abs"]},
        "cross": {"when": {"diagnostic": "max_abs", "below": 0.7}, "fields": ["u"]}}))
    assert list(_group(result.path, "cross").step.values) == [cross]
    assert list(_group(result.path, "d").step.values) == list(range(61))


def test_flush_seconds_is_validated(in_tmp):
    with pytest.raises(ScenarioError, match="flush_seconds"):
        simkit.run(heat_scenario(flush_seconds=0))


def test_jax_traces_once_with_every_kind_of_capture_inside_blocks(in_tmp):
    require_backend("jax")
    from fixture_solvers import TRACES

    TRACES["count"] = 0
    simkit.run({
        "solver": "fixture_solvers:CountingDecay", "backend": "jax", "until": 30.0, "dt": 0.3,
        "outputs": {"a": {"every": 1, "diagnostics": ["total"]},
                    "b": {"sim_time": 0.7, "fields": ["u"]},
                    "c": {"while": {"diagnostic": "total", "above": 0.1, "every": 3},
                          "fields": ["u"]},
                    "d": {"when": {"diagnostic": "total", "below": 0.5}, "fields": ["u"]}},
        "output": "count.nc",
    })
    assert TRACES["count"] == 1


# ---------------------------------------------------------------- review of the block loop


def test_a_non_finite_captured_value_is_never_committed(backend, in_tmp):
    """Lorenz-63 with dt 0.3 blows up within a few steps: energy overflows to infinity (from a
    state still finite) before the state itself does. The run stops at the first non-finite
    captured value, keeps only the finite captures before it, and NumPy prints no warnings."""
    import warnings

    import netCDF4

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteError,
                           match=r"non-finite value in 'energy' captured at step 4"):
            simkit.run(lorenz_scenario(backend=backend, dt=0.3, steps=2000, seed=42,
                                       params={"trajectories": 64},
                                       initial={"x": 1.0, "y": 1.0, "z": 1.0, "spread": 0.001},
                                       outputs={"d": {"every": 1, "diagnostics": ["energy"]}}))
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)]
    d = _group("lorenz.nc", "d")
    assert list(d.step.values) == [0, 1, 2, 3]
    assert np.isfinite(d.energy.values).all()
    with netCDF4.Dataset("lorenz.nc") as ds:
        assert ds.getncattr("simkit_status") == "non-finite"
        assert int(ds.variables["step"][...]) == 4


def test_a_non_finite_value_captured_after_a_stage_is_named_with_the_stage(backend, in_tmp):
    with pytest.raises(NonFiniteError, match=r"non-finite value in 'energy' after stage 'k4' "
                       r"captured at step \d+"):
        simkit.run(lorenz_scenario(backend=backend, dt=0.3, steps=2000, seed=42,
                                   params={"trajectories": 64},
                                   initial={"x": 1.0, "y": 1.0, "z": 1.0, "spread": 0.001},
                                   outputs={"d": {"every": 1, "stage": "k4",
                                                  "diagnostics": ["energy"]}}))


def test_block_boundaries_inside_a_sim_time_gap_change_no_bit(backend, in_tmp, monkeypatch):
    """A block boundary (a finiteness check every step, a progress update, a tiny durability
    lag) that cuts the gap toward a sim_time capture gives the same times, the same shortened
    last step and so the same file as the gap run whole (the oscillator stores sin(time))."""
    monkeypatch.setenv("SIMKIT_ALLOW_IMPORT", "1")
    base = {"solver": "fixture_solvers:Oscillator", "backend": backend, "until": 7.0,
            "dt": 0.013, "check_finite": 0,
            "outputs": {"t": {"sim_time": 0.7, "fields": ["u"]},
                        "n": {"every": 37, "fields": ["u"]}}}
    whole = simkit.run({**base, "output": "whole.nc"})
    cut = simkit.run({**base, "check_finite": 1, "flush_seconds": 1e-6, "output": "cut.nc"})
    chunked = simkit.run({**base, "output": "chunked.nc"},
                         progress=lambda *args: None)
    for other in (cut, chunked):
        assert other.step == whole.step
        assert other.time == whole.time
        np.testing.assert_array_equal(other.state["u"], whole.state["u"])
        for name in ("t", "n"):
            xr.testing.assert_identical(_group(other.path, name), _group(whole.path, name))
    t = _group(whole.path, "t")
    np.testing.assert_allclose(t.u.values[1:, 0], np.sin(t.time.values[1:]), rtol=0,
                               atol=1e-6 if backend == "torch" else 1e-12)


def test_stage_stream_last_capture_when_stop_when_ends_the_run(backend, in_tmp):
    """A stage stream with ``last: true`` captures the last step also when a condition ends the
    run inside a block, with what the same step gives in a run that stops there by count."""
    stage = {"stage": "laplacian", "every": 1000, "last": True, "fields": ["laplacian"]}
    stopped = simkit.run(heat_scenario(backend=backend, steps=500, output="stop.nc",
                                       stop_when={"diagnostic": "max_abs", "below": 0.7},
                                       outputs={"lap": stage}))
    assert 0 < stopped.step < 500
    counted = simkit.run(heat_scenario(backend=backend, steps=stopped.step, output="count.nc",
                                       outputs={"lap": stage}))
    a, b = _group(stopped.path, "lap"), _group(counted.path, "lap")
    assert list(a.step.values) == list(b.step.values) == [stopped.step]
    np.testing.assert_allclose(a.laplacian.values, b.laplacian.values, rtol=1e-12, atol=1e-15)


def test_a_stage_diagnostic_of_another_shape_is_refused_and_the_file_says_failed(backend,
                                                                                 in_tmp,
                                                                                 monkeypatch):
    import netCDF4

    monkeypatch.setenv("SIMKIT_ALLOW_IMPORT", "1")
    with pytest.raises(ValueError, match=r"diagnostic 'flat': expected shape \(\) from its "
                                         r"dims \(\), given \(4,\)"):
        simkit.run({"solver": "fixture_solvers:Histogram", "params": {"bad": "flat"},
                    "steps": 3, "backend": backend, "output": "h.nc",
                    "outputs": {"d": {"every": 1, "stage": "decay",
                                      "diagnostics": ["total", "flat"]}}})
    with netCDF4.Dataset("h.nc") as ds:
        assert ds.getncattr("simkit_status") == "failed"
        assert ds.getncattr("simkit_error").startswith("ValueError: solver histogram: "
                                                       "diagnostic 'flat'")


def test_progress_total_counts_the_shortened_steps_of_sim_time_captures(in_tmp):
    """until 3.0 with dt 0.2 and captures every 0.7: 15 plain steps plus one shortened step per
    capture time off the step grid; the total the progress callback gets ends equal to the
    steps taken."""
    calls = []
    result = simkit.run(heat_scenario(steps=None, until=3.0, dt=0.2, outputs={
        "t": {"sim_time": 0.7, "diagnostics": ["heat"]}}),
        progress=lambda step, time, written, total: calls.append((step, total)))
    assert result.step > 15
    assert calls[-1] == (result.step, result.step)
    assert all(step <= total for step, total in calls)


def test_when_and_wall_time_on_a_stage_stream(backend, in_tmp):
    """`when` on a stage stream: the condition is read on each step's end state, as for any
    stream; the capture holds the state right after the stage in that very step."""
    expected = _level_expected(backend, 0.7, 1)
    cross = max(expected) + 1
    stage = {"stage": "laplacian", "fields": ["laplacian"]}
    result = simkit.run(heat_scenario(backend=backend, steps=60, outputs={
        "lap": {**stage, "when": {"diagnostic": "max_abs", "below": 0.7}},
        "clock": {**stage, "wall_time": 1e-9}}))
    counted = simkit.run(heat_scenario(backend=backend, steps=cross, output="count.nc",
                                       outputs={"lap": {**stage, "every": 10_000,
                                                        "last": True}}))
    lap = _group(result.path, "lap")
    assert list(lap.step.values) == [cross]
    np.testing.assert_allclose(lap.laplacian.values, _group(counted.path, "lap").laplacian.values,
                               rtol=1e-12, atol=1e-15)
    clock = _group(result.path, "clock")
    assert len(clock.step) >= 1 and 0 not in clock.step.values  # no stage before a step


def _edges(values, threshold, cooldown, end):
    """Steps (1..end) where ``values[s - 1] > threshold`` rises, cooldown after each firing;
    the state a run starts from holds no stage, so it never holds."""
    fired, held, until = [], False, 0
    for step in range(1, end + 1):
        now = values[step - 1] > threshold
        if now and not held and step >= until:
            fired.append(step)
            until = step + cooldown + 1
        held = now
    return fired


def test_when_on_a_stage_fires_at_its_edges_and_a_resume_keeps_its_memory(backend, in_tmp):
    """``when`` with ``stage``: edges of a diagnostic of the state right after a stage (Lorenz's
    second RK stage), cooldown, ``stop_when`` on a stage, and resumes from checkpoints at every
    kind of step (the condition's memory is saved with them) equal the uninterrupted run."""
    from simkit.io.recover import rewrite

    base = {"solver": "lorenz63", "backend": backend, "steps": 3000, "seed": 2}
    probe = simkit.run({**base, "output": "probe.nc", "outputs": {
        "k2": {"every": 1, "stage": "k2", "diagnostics": ["mean_z"]}}})
    values = _group(probe.path, "k2").mean_z.values  # steps 1..3000
    # A cooldown longer than some gaps between rises: a resume must keep it to skip them
    threshold, cooldown = 30.0, 150
    expected = _edges(values, threshold, cooldown, 3000)
    assert len(expected) < len(_edges(values, threshold, 0, 3000)) and len(expected) > 5
    when = {"diagnostic": "mean_z", "stage": "k2", "above": threshold, "cooldown": cooldown}
    scenario = {**base, "output": "ref.nc", "outputs": {
        "rise": {"when": when, "diagnostics": ["energy"]},
        "ckpt": {"every": 1, "fields": "all"}}}
    reference = simkit.run(scenario)
    rise = _group(reference.path, "rise")
    assert list(rise.step.values) == expected
    # Resumed from a checkpoint at a firing whose cooldown skips a later rise, inside that
    # cooldown, where the condition still holds after it, and where it does not hold
    rises = _edges(values, threshold, 0, 3000)
    first = next(f for f in expected if any(f < r <= f + cooldown for r in rises))
    holding = [s for s in range(first + cooldown + 1, 3000) if values[s - 1] > threshold
               and s not in expected]
    for cut in (first, first + 3, holding[0], expected[3] - 1):
        shutil.copy(reference.path, "cut.nc")
        with netCDF4.Dataset("cut.nc") as ds:
            keep = {g: int((ds.groups[g].variables["step"][:] <= cut).sum())
                    for g in ("rise", "ckpt")}
        rewrite("cut.nc", keep, {"simkit_status": "running",
                                 "simkit_committed_step": np.int64(cut)})
        simkit.resume("cut.nc")
        assert list(_group("cut.nc", "rise").step.values) == expected, cut
    stop = simkit.run({**base, "output": "stop.nc", "stop_when": when,
                       "outputs": {"e": {"every": 1, "diagnostics": ["mean_z"]}}})
    assert stop.step == expected[0]


#: The driver's modules from the top down: each imports only modules of the layers below it
#: (those of one layer are independent of each other).
DRIVER_LAYERS = (("_execute", "_ensemble"), ("_loop", "_endings"), ("_blocks",),
                 ("_captures", "_commit", "_plan", "_files"), ("_replay",), ("_run",),
                 ("_buffers", "_steps"))


def test_driver_modules_import_only_the_layers_below_them():
    import ast
    from pathlib import Path

    import simkit.driver

    package = Path(simkit.driver.__file__).parent
    modules = {p.stem for p in package.glob("_*.py") if p.stem != "__init__"}
    assert modules == {name for layer in DRIVER_LAYERS for name in layer}
    for i, layer in enumerate(DRIVER_LAYERS):
        below = {name for lower in DRIVER_LAYERS[i + 1:] for name in lower}
        for name in layer:
            tree = ast.parse((package / f"{name}.py").read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        "simkit.driver"):
                    imported = node.module.removeprefix("simkit.driver").lstrip(".")
                    assert imported in below, f"{name} imports simkit.driver.{imported}"
