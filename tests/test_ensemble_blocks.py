"""Vectorized ensembles run through the block loop: each member's file is the file a run of its
own writes (fields, captures, checksums, final state), a diverging member stops alone as a run
of its own would, and the second, batched loop is gone."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import assert_bitwise, require_backend
from simkit.cli import main
from simkit.driver import execute_ensemble
from simkit.io import rewrite, schema
from simkit.scenario import plan_run

#: Root attributes that differ between any two runs (wall-clock times, the output's own name).
_RUN_ATTRS = {schema.ATTR_STARTED, schema.ATTR_FINISHED, schema.ATTR_RESUMED, schema.ATTR_SCENARIO,
              schema.ATTR_SCENARIO_FILE, "history"}
#: ... and the error, which names the file that keeps the run.
_NAMING = {schema.ATTR_ERROR}


def _heat(diffusivity: float, output: str) -> dict:
    return {
        "solver": "heat2d", "backend": "jax", "seed": 3, "output": output,
        "params": {"shape": [12, 10], "diffusivity": diffusivity},
        "initial": {"kind": "noise"}, "steps": 47, "dt": 0.1, "check_finite": 7,
        "outputs": {"snap": {"every": 10, "fields": ["u"]},
                    "diag": {"every": 1, "diagnostics": ["energy", "max_abs"]},
                    # Level-triggered: the members capture different steps.
                    "hot": {"while": {"diagnostic": "max_abs", "above": 0.9},
                            "fields": ["u"]},
                    "checkpoint": {"at": [20, 40], "fields": "all"}}}


def _lorenz(sigma: float, output: str) -> dict:
    # RK4 on Lorenz-63 is unstable once sigma * dt is past about 2.8: sigma = 150 blows up.
    return {"solver": "lorenz63", "backend": "jax", "output": output,
            "params": {"trajectories": 3, "sigma": sigma}, "initial": {"spread": 0.1},
            "steps": 120, "dt": 0.02, "check_finite": 10,
            "outputs": {"orbit": {"every": 20, "fields": ["x", "y", "z"]},
                        "diag": {"every": 3, "diagnostics": ["energy"]}}}


def _groups(ds: netCDF4.Dataset) -> dict[str, netCDF4.Dataset]:
    return {"/": ds, **{f"/{name}": group for name, group in ds.groups.items()}}


def _assert_same_file(path, reference, rtol: float | None = None) -> None:
    """Every variable of every group bit for bit (within ``rtol`` when given, checksums aside),
    and the attributes that describe the run."""
    with netCDF4.Dataset(path) as got, netCDF4.Dataset(reference) as want:
        assert set(_groups(got)) == set(_groups(want))
        for name, group in _groups(want).items():
            other = _groups(got)[name]
            assert set(other.variables) == set(group.variables), name
            for var in group.variables:
                a, b = np.asarray(other[var][...]), np.asarray(group[var][...])
                assert a.dtype == b.dtype and a.shape == b.shape, f"{name}/{var}"
                if rtol is None or a.dtype.kind != "f":
                    if rtol is None or var != schema.CHECKSUM:
                        assert a.tobytes() == b.tobytes(), f"{name}/{var}"
                else:
                    np.testing.assert_allclose(a, b, rtol=rtol, err_msg=f"{name}/{var}")
        attrs = {k: want.getncattr(k) for k in want.ncattrs() if k not in _RUN_ATTRS | _NAMING}
        assert {k: got.getncattr(k) for k in got.ncattrs()
                if k not in _RUN_ATTRS | _NAMING} == attrs
        errors = [ds.getncattr(schema.ATTR_ERROR) if schema.ATTR_ERROR in ds.ncattrs() else None
                  for ds in (got, want)]
        assert [e if e is None else e.rsplit(" of ", 1)[0] for e in errors] == \
            [errors[1] if errors[1] is None else errors[1].rsplit(" of ", 1)[0]] * 2


def test_member_files_are_bit_identical_to_runs_of_their_own(in_tmp):
    require_backend("jax")
    values = (0.4, 1.0, 2.3)
    plans = [plan_run(_heat(d, f"m{i}.nc")) for i, d in enumerate(values)]
    results = execute_ensemble(plans, ["params.diffusivity"])
    hot = set()
    for i, (d, result) in enumerate(zip(values, results, strict=True)):
        single = simkit.run(_heat(d, f"single{i}.nc"))
        assert result.step == single.step == 47 and result.time == single.time
        for name, value in single.state.items():
            assert_bitwise(result.state[name], value)
        _assert_same_file(result.path, single.path)
        with xr.open_dataset(result.path, group="hot") as ds:
            hot.add(tuple(ds.step.values))
    assert len(hot) > 1  # the level condition really differed between members


def test_a_diverging_member_stops_alone_with_the_file_of_a_run_of_its_own(in_tmp):
    # Within rounding only: a run of its own has sigma as a compile-time constant, which XLA
    # folds into products with other constants; in an ensemble sigma is data.
    require_backend("jax")
    sigmas = (10.0, 150.0, 12.0)
    plans = [plan_run(_lorenz(s, f"m{i}.nc")) for i, s in enumerate(sigmas)]
    results = execute_ensemble(plans, ["params.sigma"])
    assert isinstance(results[1], simkit.errors.NonFiniteError)
    with pytest.raises(simkit.errors.NonFiniteError) as single_error:
        simkit.run(_lorenz(150.0, "single1.nc"))
    # The same step, stage and field as the run of its own names (the file name aside).
    assert str(results[1]).split("; the last good")[0] == str(single_error.value).split(
        "; the last good")[0]
    _assert_same_file(in_tmp / "m1.nc", in_tmp / "single1.nc", rtol=1e-9)
    with netCDF4.Dataset(in_tmp / "m1.nc") as ds:
        assert ds.getncattr(schema.ATTR_STATUS) == "non-finite"
        assert 0 < int(ds["step"][...]) < 120
    for i in (0, 2):  # the others went on to the end, unaffected
        assert results[i].step == 120
        _assert_same_file(results[i].path, simkit.run(_lorenz(sigmas[i], f"s{i}.nc")).path,
                          rtol=1e-9)


def test_a_member_file_resumes_like_a_run_of_its_own(in_tmp):
    require_backend("jax")
    plans = [plan_run(_heat(d, f"m{i}.nc")) for i, d in enumerate((0.5, 1.5))]
    results = execute_ensemble(plans, ["params.diffusivity"])
    complete = {name: value.copy() for name, value in results[1].state.items()}
    # As a member killed after step 30 leaves its file: captures up to it, unfinished.
    with netCDF4.Dataset(results[1].path) as ds:
        keep = {name: int(np.sum(ds.groups[name].variables["step"][:] <= 30))
                for name in ds.getncattr(schema.ATTR_STREAMS).split()}
    rewrite(results[1].path, keep)
    with netCDF4.Dataset(results[1].path, "a") as ds:
        ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
    resumed = simkit.resume(results[1].path)
    assert resumed.step == 47
    for name, value in complete.items():
        assert_bitwise(resumed.state[name], value)
    _assert_same_file(resumed.path, simkit.run(_heat(1.5, "single.nc")).path)


def test_the_batched_loop_is_gone():
    import simkit.driver
    from simkit.backends.jax import JaxBackend

    for name in ("execute_vectorized", "_Batch", "_batched_builders", "_BATCHED"):
        assert not hasattr(simkit.driver, name), name
    for name in ("batched_advance", "batched_call"):
        assert not hasattr(JaxBackend, name), name


@pytest.mark.parametrize(("stream", "stage"), [
    ({"every": 10, "stage": "k1", "fields": ["x"]}, "k1"),
    ({"while": {"diagnostic": "mean_z", "stage": "k2", "above": 1.0}, "fields": ["x"]}, "k2")])
def test_vectorize_refuses_streams_and_conditions_on_a_stage_naming_it(in_tmp, capsys, stream,
                                                                       stage):
    base = _lorenz(10.0, "x.nc")
    base["outputs"]["mid"] = stream
    (in_tmp / "base.yaml").write_text(yaml.safe_dump(base))
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "sweep", "parameters": {"params.sigma": [9.0, 10.0]}}))
    assert main(["sweep", "s.yaml", "--vectorize"]) == 2
    assert (f"--vectorize: expected streams and conditions at the end of a step, given "
            f"outputs.mid on stage {stage!r}") in capsys.readouterr().err


def test_vectorize_refuses_a_swept_integer_parameter(in_tmp, capsys):
    (in_tmp / "base.yaml").write_text(yaml.safe_dump(_lorenz(10.0, "x.nc")))
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "sweep",
        "parameters": {"params.trajectories": [2, 3]}}))
    assert main(["sweep", "s.yaml", "--vectorize"]) == 2
    assert ("--vectorize: expected swept parameters that are real numbers, given "
            "params.trajectories = 2 (int)") in capsys.readouterr().err


def test_ensembles_take_the_run_block_loop():
    """One block loop: the ensemble's members are its member axis, no second loop, no stand-in
    for a run, and the package does not import its ensemble module's importer back."""
    import ast
    import inspect

    from simkit.driver import _blocks, _ensemble

    for name in ("_Lead", "_block", "_initial_block"):
        assert not hasattr(_ensemble, name), name
        assert not hasattr(_ensemble._Ensemble, name), name
    tree = ast.parse(inspect.getsource(_ensemble))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "simkit.driver" not in imported
    assert "simkit.driver._blocks" in imported and hasattr(_blocks.BlockLoop, "capture_start")


def test_a_level_condition_that_holds_at_the_end_for_a_later_member_only(in_tmp):
    """The first member's condition no longer holds at the last step, the last member's does:
    each member file still equals a run of its own (no capture lost or taken twice)."""
    require_backend("jax")
    values = (2.3, 1.0, 0.4)

    def scenario(diffusivity: float, output: str) -> dict:
        data = _heat(diffusivity, output)
        data["outputs"]["hot"] = {"while": {"diagnostic": "max_abs", "above": 0.25},
                                  "fields": ["u"]}
        return data

    results = execute_ensemble([plan_run(scenario(d, f"m{i}.nc")) for i, d in enumerate(values)],
                               ["params.diffusivity"])
    ends = []
    for i, (d, result) in enumerate(zip(values, results, strict=True)):
        single = simkit.run(scenario(d, f"single{i}.nc"))
        _assert_same_file(result.path, single.path)
        with xr.open_dataset(result.path, group="hot") as ds:
            ends.append(int(ds.step.values[-1]))
    assert ends[0] < 47 and ends[-1] == 47


@pytest.mark.parametrize("how", ["simkit stop", "event"])
def test_a_stop_request_of_any_member_file_stops_the_ensemble_resumably(in_tmp, how):
    """``simkit stop`` of one member's file (or a stop event) stops the whole ensemble at a block
    boundary as it stops a run of its own: every member's file interrupted, each resuming to the
    file of a run of its own."""
    require_backend("jax")
    import threading

    from simkit.io import stop_request_path

    def scenario(diffusivity: float, output: str) -> dict:
        return {"solver": "heat2d", "backend": "jax", "seed": 3, "output": output,
                "params": {"shape": [8, 8], "diffusivity": diffusivity},
                "initial": {"kind": "noise"}, "steps": 100_000, "dt": 0.1,
                "flush_seconds": 0.02,
                "outputs": {"diag": {"every": 97, "diagnostics": ["energy"]},
                            "checkpoint": {"every": 211, "fields": "all"}}}

    values = (0.5, 1.5)
    plans = [plan_run(scenario(d, f"m{i}.nc")) for i, d in enumerate(values)]
    stop, done = threading.Event(), threading.Event()

    def request() -> None:  # again and again: one made before the run starts is not for it
        while not done.wait(0.05):
            stop_request_path(in_tmp / "m1.nc").touch()

    asking = threading.Thread(target=request) if how == "simkit stop" else None
    if asking is None:
        stop.set()
    else:
        asking.start()
    try:
        with pytest.raises(KeyboardInterrupt, match="simkit stop" if asking else "a stop"):
            execute_ensemble(plans, ["params.diffusivity"], stop=stop)
    finally:
        done.set()
        if asking is not None:
            asking.join()
    stop_request_path(in_tmp / "m1.nc").unlink(missing_ok=True)
    for i, d in enumerate(values):
        with netCDF4.Dataset(in_tmp / f"m{i}.nc") as ds:
            assert ds.getncattr(schema.ATTR_STATUS) == schema.STATUS_INTERRUPTED
        resumed = simkit.resume(in_tmp / f"m{i}.nc")
        assert resumed.step == 100_000
        _assert_same_file(resumed.path, simkit.run(scenario(d, f"single{i}.nc")).path)
