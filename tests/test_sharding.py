"""One run split over several devices (``devices:`` / ``mesh:`` on JAX): refusals, the same
captures on 1, 2 and 4 forced CPU devices, resume of a split run, and a run of two processes
joined by ``jax.distributed``.

JAX reads ``XLA_FLAGS`` when it starts, so the forced-device runs happen in processes of their
own (``tests/sharded_runs.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sharded_runs import SCENARIOS

import simkit
from conftest import assert_bitwise, heat_scenario, require_backend
from simkit.errors import ScenarioError
from simkit.scenario import plan_run

HERE = Path(__file__).parent
FORCED = "--xla_force_host_platform_device_count=4"


def _forced_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "XLA_FLAGS": FORCED, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def _helper(what: str, directory: Path) -> str:
    proc = subprocess.run([sys.executable, str(HERE / "sharded_runs.py"), what, str(directory)],
                          env=_forced_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _nodes(path: Path) -> dict[str, xr.Dataset]:
    with xr.open_datatree(path) as tree:
        return {node.path: node.to_dataset().load() for node in tree.subtree}


def _assert_close(got: dict[str, xr.Dataset], want: dict[str, xr.Dataset], rtol: float) -> None:
    """Every variable of every group agrees to ``rtol`` of the variable's largest magnitude."""
    assert set(got) == set(want)
    for path, dataset in want.items():
        assert set(got[path].data_vars) == set(dataset.data_vars), path
        np.testing.assert_array_equal(got[path].get("step", 0), dataset.get("step", 0))
        for name, variable in dataset.data_vars.items():
            a, b = got[path][name].values, variable.values
            assert a.shape == b.shape, (path, name)
            scale = float(np.max(np.abs(b))) if b.size else 0.0
            np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale, err_msg=f"{path}/{name}")


# ---------------------------------------------------------------- refusals (no device needed)


@pytest.mark.parametrize(("overrides", "key", "message"), [
    ({"backend": "numpy", "devices": 2}, "devices", "expected backend jax for a run split over "
     "devices, given 'numpy'"),
    ({"backend": "torch", "mesh": {"y": 2}}, "mesh", "given 'torch'"),
    ({"backend": "jax", "mesh": {"y": 5}}, "mesh.y", "expected a device count dividing the 24 "
     "points of 'y', given 5"),
    ({"backend": "jax", "mesh": {"z": 2}}, "mesh.z", "solver heat2d can be split along y, x, "
     "given 'z'"),
    ({"backend": "jax", "devices": 3, "mesh": {"y": 2, "x": 2}}, "devices",
     "expected devices equal to the mesh's 4 devices, given 3"),
])
def test_bad_splits_are_refused_naming_key_expected_and_given(in_tmp, overrides, key, message):
    with pytest.raises(ScenarioError, match=message) as caught:
        plan_run(heat_scenario(**overrides))
    assert caught.value.key == key


def test_solver_names_the_dimensions_it_can_be_split_along(in_tmp):
    nbody = {**SCENARIOS["nbody"][0], "backend": "jax", "output": "n.nc"}
    with pytest.raises(ScenarioError, match="solver nbody can be split along body, given 'axis'"):
        plan_run({**nbody, "mesh": {"axis": 3}})
    assert plan_run({**nbody, "devices": 4}).mesh == (("body", 4),)
    assert plan_run(heat_scenario(backend="jax", devices=4)).mesh == (("y", 4),)
    assert plan_run(heat_scenario(backend="jax", mesh={"y": 2, "x": 1})).mesh == (("y", 2),)


def test_more_devices_than_exist_is_refused_before_any_file(in_tmp):
    require_backend("jax")
    with pytest.raises(ScenarioError, match=r"expected at most \d+ devices, the cpu devices JAX "
                       r"sees .*xla_force_host_platform_device_count.*given a mesh of 24"):
        simkit.run(heat_scenario(backend="jax", mesh={"y": 24}))
    assert not list(in_tmp.iterdir())


# ---------------------------------------------------------------- forced CPU devices


def test_runs_on_1_2_and_4_devices_give_the_same_file(tmp_path):
    """heat2d, wave2d, navier_stokes2d and nbody: every capture, diagnostic and final state on
    2 and 4 devices equals the 1-device run's to 1e-12 of its magnitude."""
    require_backend("jax")
    _helper("meshes", tmp_path)
    for name in SCENARIOS:
        one = _nodes(tmp_path / f"{name}_1.nc")
        for devices in (2, 4):
            path = tmp_path / f"{name}_{devices}.nc"
            _assert_close(_nodes(path), one, 1e-12)
            with xr.open_datatree(path) as tree:
                assert f"cpu:{','.join(map(str, range(devices)))} (mesh " in \
                    tree.attrs["simkit_device"]


def test_state_is_split_and_the_block_exchanges_halos(tmp_path):
    """The fields live in parts, one per device, and the compiled step of heat2d holds the
    neighbour exchanges (collective-permute) its stencil needs; nbody's gathers the bodies."""
    require_backend("jax")
    layout = json.loads(_helper("layout", tmp_path))
    assert layout["heat2d"]["shards"] == [[12, 10]] * 4
    assert "collective-permute" in layout["heat2d"]["collectives"]
    assert layout["nbody"]["shards"] == [[4, 3]] * 4
    assert "all-gather" in layout["nbody"]["collectives"]


def test_interrupted_split_run_resumes_to_the_uninterrupted_file(tmp_path):
    require_backend("jax")
    out = _helper("resume", tmp_path)
    assert "interrupted:" in out
    whole, resumed = _nodes(tmp_path / "whole.nc"), _nodes(tmp_path / "resumed.nc")
    with xr.open_datatree(tmp_path / "resumed.nc") as tree:
        assert "simkit_resumed_at" in tree.attrs
    assert set(whole) == set(resumed)
    for path, dataset in whole.items():
        for name, variable in dataset.variables.items():
            assert_bitwise(resumed[path][name].values, variable.values)
    assert int(resumed["/"]["step"]) == 400


# ---------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_write_one_file_equal_to_one_process(tmp_path):
    """Two ``simkit run`` processes on this machine, two CPU devices each, joined through one
    coordinator: process 0 writes the file, process 1 nothing; it equals the one-process run."""
    require_backend("jax")
    scenario = {**SCENARIOS["heat2d"][0], "backend": "jax", "mesh": {"y": 2, "x": 2},
                "output": "two.nc"}
    (tmp_path / "s.yaml").write_text(json.dumps(scenario))
    (tmp_path / "other").mkdir()
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "simkit", "run", str(tmp_path / "s.yaml"), "-q",
         "--coordinator", f"127.0.0.1:{port}", "--processes", "2", "--process-id", str(i)],
        cwd=cwd, env=_forced_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, cwd in enumerate((tmp_path, tmp_path / "other"))]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert not list((tmp_path / "other").iterdir())  # process 1 wrote nothing
    one = {**scenario, "output": str(tmp_path / "one.nc")}
    one.pop("mesh")
    simkit.run(one)
    two = _nodes(tmp_path / "two.nc")
    _assert_close(two, _nodes(tmp_path / "one.nc"), 1e-12)
    with xr.open_datatree(tmp_path / "two.nc") as tree:
        ids, mesh = tree.attrs["simkit_device"].removeprefix("cpu:").split(" ", 1)
    assert len(ids.split(",")) == 4  # two devices of each process
    assert mesh == "(mesh y=2 x=2)"


def test_two_processes_interrupted_and_resumed_equal_an_uninterrupted_run(tmp_path):
    """Both processes stop at the same step; ``resume`` on both (process 0 repairs and appends,
    process 1 reads the checkpoint once repaired) ends with the uninterrupted file, bit for bit."""
    require_backend("jax")
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, str(HERE / "sharded_runs.py"), "processes", str(tmp_path)],
        env=_forced_env(XLA_FLAGS="--xla_force_host_platform_device_count=2",
                        SIMKIT_COORDINATOR=f"127.0.0.1:{port}", SIMKIT_PROCESSES="2",
                        SIMKIT_PROCESS_ID=str(i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "interrupted" in out
    whole, resumed = _nodes(tmp_path / "whole.nc"), _nodes(tmp_path / "resumed.nc")
    with xr.open_datatree(tmp_path / "resumed.nc") as tree:
        assert "simkit_resumed_at" in tree.attrs
        assert tree.attrs["simkit_status"] == "complete"
    for path, dataset in whole.items():
        for name, variable in dataset.variables.items():
            assert_bitwise(resumed[path][name].values, variable.values)
    assert int(resumed["/"]["step"]) == 400


def test_what_a_split_run_cannot_do_is_refused(in_tmp):
    """A vectorized sweep keeps each member on one device; several processes share no clock."""
    from simkit.driver import check_processes, check_vectorizable

    plan = plan_run(heat_scenario(backend="jax", devices=2))
    with pytest.raises(ScenarioError, match="given a run split over devices"):
        check_vectorizable([plan], ["params.diffusivity"])
    timed = plan_run(heat_scenario(backend="jax", devices=2,
                                   outputs={"look": {"wall_time": 5.0, "fields": ["u"]}}))
    with pytest.raises(ScenarioError, match="in a run of 2 processes .* given wall_time"):
        check_processes(timed, 2)
    check_processes(plan, 2)
