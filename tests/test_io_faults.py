"""Output faults: HDF5 calls from several threads, a full disk leaving holes, an unfinished run's
root group, failed --overwrite runs and stale temporaries, CF attributes and the flat export."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario, require_backend
from simkit.errors import DiskFullError
from simkit.io import BackgroundWriter, NetCDFWriter, export_stream, recover, schema
from simkit.io import netcdf as netcdf_module
from simkit.io.inspect import describe

TESTS = Path(__file__).parent


def _layout(shape=(6, 5)) -> schema.RunLayout:
    coords = (schema.CoordinateSpec("y", np.arange(float(shape[0])), "m", "y"),
              schema.CoordinateSpec("x", np.arange(float(shape[1])), "m", "x"))
    u = schema.VariableSpec("u", ("y", "x"), "K", "temperature")
    energy = schema.VariableSpec("energy", (), "K2", "energy")
    return schema.RunLayout(coords, (u,), (schema.StreamSpec("snap", (u,), ()),
                                           schema.StreamSpec("diag", (), (energy,))), "s")


def _attrs() -> dict:
    return {schema.ATTR_SOLVER: "heat2d", schema.ATTR_SOLVER_VERSION: "1",
            schema.ATTR_BACKEND: "numpy", schema.ATTR_STARTED: "2020-01-01T00:00:00+00:00",
            schema.ATTR_SCENARIO: "solver: heat2d\n"}


def _field(step: int) -> dict:
    return {"u": np.full((6, 5), float(step))}


@pytest.fixture
def disk(monkeypatch):
    """A disk whose free space the test sets (bytes); plenty by default."""
    state = types.SimpleNamespace(free=1 << 40)
    real = shutil.disk_usage

    def usage(path):
        return real(path)._replace(free=state.free)

    monkeypatch.setattr(netcdf_module, "shutil", types.SimpleNamespace(disk_usage=usage))
    return state


def _python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    # A crash inside HDF5 is a segfault: run in a child so the test fails instead of pytest dying.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# One lock for every HDF5 call of the process.

def test_two_runs_and_an_xarray_reader_in_three_threads(tmp_path):
    proc = _python("""
        import threading
        import numpy as np, xarray as xr
        import simkit
        from conftest import heat_scenario
        from simkit.io import xarray_lock

        def scenario(name):
            return heat_scenario(output=name, steps=150, params={"shape": [48, 48]},
                                 outputs={"diag": {"every": 1, "diagnostics": ["energy"]},
                                          "snap": {"every": 2, "fields": ["u"]}})

        simkit.run(scenario("alone.nc"))
        errors, results = [], {}
        def runs(i):
            try:
                for k in range(2):
                    results[i, k] = simkit.run(scenario(f"t{i}_{k}.nc"))
            except BaseException as error:
                errors.append(repr(error))
        def reads():
            # xarray locks its data reads but not its metadata reads: in a process that writes
            # runs, xarray goes inside simkit's lock (as simkit's own combine and plot do).
            try:
                for _ in range(40):
                    with xarray_lock(), xr.open_datatree("alone.nc") as tree:
                        tree["snap"].to_dataset().u.load()
            except BaseException as error:
                errors.append(repr(error))
        threads = [threading.Thread(target=runs, args=(i,)) for i in range(2)]
        threads.append(threading.Thread(target=reads))
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors, errors
        reference = xr.open_datatree("alone.nc")
        for result in results.values():
            tree = xr.open_datatree(result.path)
            np.testing.assert_array_equal(tree.u.values, reference.u.values)
            np.testing.assert_array_equal(tree["snap"].u.values, reference["snap"].u.values)
        print("ok", len(results))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ok", "4"]


def test_sweep_on_one_dask_worker_with_two_threads(tmp_path):
    require_backend("dask.distributed")
    (tmp_path / "base.yaml").write_text(textwrap.dedent("""\
        solver: heat2d
        params: {shape: [48, 48]}
        initial: {kind: noise, amplitude: 1.0}
        steps: 150
        outputs:
          diag: {every: 1, diagnostics: [energy]}
          snap: {every: 2, fields: [u]}
        """))
    (tmp_path / "sweep.yaml").write_text(textwrap.dedent("""\
        scenario: base.yaml
        parameters: {seed: [1, 2, 3, 4]}
        output: out
        """))
    proc = _python("""
        from dask.distributed import LocalCluster
        from simkit.sweep import run_sweep
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                          dashboard_address=None) as cluster:
            result = run_sweep("sweep.yaml", scheduler=cluster.scheduler_address)
        print(len(result.done), len(result.failed), result.combined is not None)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["4", "0", "True"]
    combined = xr.open_datatree(tmp_path / "out" / "combined.nc")
    assert combined["snap"].u.sizes["member"] == 4


# After the first write error nothing more is written.

def test_writer_writes_nothing_after_a_failed_write(tmp_path, disk):
    writer = NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs())
    writer.write_capture("diag", 0, 0.0, {"energy": np.float64(1.0)})
    disk.free = 0
    with pytest.raises(DiskFullError):
        writer.write_capture("diag", 1, 0.1, {"energy": np.float64(2.0)})
    disk.free = 1 << 40  # space comes back (HDF5 freed some): still nothing more is written
    with pytest.raises(DiskFullError):
        writer.write_capture("diag", 2, 0.2, {"energy": np.float64(3.0)})
    with pytest.raises(DiskFullError):
        writer.write_final(2, 0.2, _field(2))
    writer.abort({schema.ATTR_FINISHED: "later"})
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert list(ds["diag"]["step"][:]) == [0]
        assert schema.STEP not in ds.variables
        # Refused before anything was written: the file closes with the attributes it is given.
        assert ds.getncattr(schema.ATTR_FINISHED) == "later"


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_background_writer_writes_nothing_after_the_first_error(tmp_path, disk):
    background = BackgroundWriter(NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs()))
    background.capture("diag", 0, 0.0, {"energy": np.float64(0.0)})
    _wait_for(lambda: background.written == 1)
    disk.free = 0
    background.capture("diag", 1, 0.1, {"energy": np.float64(1.0)})
    _wait_for(lambda: background._error is not None)  # failed on the writer thread
    disk.free = 1 << 40  # space comes back (HDF5 freed some)
    with pytest.raises(DiskFullError):
        background.capture("diag", 2, 0.2, {"energy": np.float64(2.0)})
    # Once the caller has seen the error, what it still hands over is not written either.
    for step in range(3, 10):
        background.capture("diag", step, step / 10, {"energy": np.float64(step)})
    background.final(10, 1.0, _field(10))
    with pytest.raises(DiskFullError):
        background.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert list(ds["diag"]["step"][:]) == [0]
        assert schema.STEP not in ds.variables
        assert ds.getncattr(schema.ATTR_STATUS) == schema.STATUS_RUNNING


def test_full_disk_message_counts_what_the_file_keeps_and_no_holes(in_tmp, disk, monkeypatch):
    calls = {"n": 0}
    check = NetCDFWriter.check_space

    def filling(self, streams):
        calls["n"] += 1
        if calls["n"] == 6:
            disk.free = 0
        try:
            check(self, streams)
        finally:
            disk.free = 1 << 40  # space comes back at once: nothing may be written after

    monkeypatch.setattr(NetCDFWriter, "check_space", filling)
    from simkit.driver import _blocks

    monkeypatch.setattr(_blocks, "BLOCK_POINTS", 8)  # many blocks, so many batches
    with pytest.raises(DiskFullError) as caught:
        simkit.run(heat_scenario(steps=200, outputs={
            "diag": {"every": 1, "diagnostics": ["energy"]},
            "snap": {"every": 7, "fields": ["u"]}}))
    intact = dict(re.findall(r"(\w+): (\d+)", str(caught.value).split("captures intact: ")[1]))
    kept = recover("out.nc")
    assert {name: int(n) for name, n in intact.items()} == kept
    with netCDF4.Dataset("out.nc") as ds:
        for name, every in (("diag", 1), ("snap", 7)):
            steps = list(ds[name]["step"][:])
            assert steps == list(range(0, every * len(steps), every)), name


# An unfinished run's root group holds no state that reads as data.

def test_unfinished_run_root_group_reads_as_missing(tmp_path):
    writer = NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs())
    writer.write_capture("snap", 0, 0.0, _field(0))
    writer.abort()
    root = xr.open_dataset(tmp_path / "run.nc")
    assert "u" not in root and "step" not in root and "time" not in root
    assert "final state: not written" in describe(tmp_path / "run.nc")
    assert recover(tmp_path / "run.nc") == {"snap": 1, "diag": 0}
    # Written at the end, it reads as the state.
    writer = NetCDFWriter(tmp_path / "done.nc", _layout(), _attrs())
    writer.write_final(4, 0.4, _field(4))
    writer.close()
    root = xr.open_dataset(tmp_path / "done.nc")
    assert int(root.step) == 4 and root.step.dtype == np.int64 and float(root.time) == 0.4
    np.testing.assert_array_equal(root.u.values, _field(4)["u"])


def test_killed_run_root_group_has_no_fill_values(in_tmp):
    (in_tmp / "s.yaml").write_text("solver: heat2d\nparams: {shape: [64, 64]}\nsteps: 100000\n"
                                   "outputs:\n  diag: {every: 10, diagnostics: [energy]}\n"
                                   "output: run.nc\n")
    proc = subprocess.Popen([sys.executable, "-m", "simkit", "run", "s.yaml", "-q"])
    try:
        for _ in range(300):
            if Path("run.nc").exists() and Path("run.nc").stat().st_size > 40000:
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    root = xr.open_dataset("run.nc")
    assert set(root.data_vars) == set() and "step" not in root.coords
    assert xr.open_dataset("run.nc", group="diag").sizes["step"] > 0


# A failed --overwrite run is kept under a name the message gives; stale temporaries.

def test_failed_overwrite_run_is_kept_where_the_message_says(tmp_path, disk):
    first = NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs())
    first.write_final(1, 0.1, _field(1))
    first.close()
    before = (tmp_path / "run.nc").read_bytes()
    writer = NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs(), overwrite=True)
    writer.write_capture("snap", 0, 0.0, _field(0))
    disk.free = 0
    with pytest.raises(DiskFullError) as caught:
        writer.write_capture("snap", 1, 0.1, _field(1))
    kept = writer.abort()
    assert kept == tmp_path / "run.partial.nc" and kept.exists()
    assert f"the run so far is kept as {kept}" in str(caught.value)
    assert f"`simkit resume {kept}`" in str(caught.value)
    assert (tmp_path / "run.nc").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
    with netCDF4.Dataset(kept) as ds:
        assert list(ds["snap"]["step"][:]) == [0]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    stale = [tmp_path / f".run.nc.{dead}.tmp", tmp_path / f".run.nc.{host}.{dead}.0.tmp",
             tmp_path / f".run.nc.{dead}.recover.tmp"]
    alive = [tmp_path / f".run.nc.{host}.{os.getpid()}.999999.tmp",
             tmp_path / f".run.nc.otherhost.{dead}.0.tmp", tmp_path / f".other.nc.{dead}.tmp",
             tmp_path / ".run.nc.notes.tmp"]
    for path in stale + alive:
        path.write_bytes(b"x")
    NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs()).close()
    assert [p for p in stale if p.exists()] == []
    assert [p for p in alive if not p.exists()] == []


# CF attributes; the flat export.

def test_cf_attributes_history_source_time_axis_and_checksum_coordinates(in_tmp):
    result = simkit.run(heat_scenario())
    with netCDF4.Dataset(result.path) as ds:
        assert ds.getncattr("history").startswith(ds.getncattr(schema.ATTR_STARTED))
        assert "simkit" in ds.getncattr("history") and "heat2d" in ds.getncattr("source")
        for group in [ds, *ds.groups.values()]:
            for name, var in group.variables.items():
                assert "units" in var.ncattrs(), name
                coordinates = var.getncattr("coordinates") if "coordinates" in var.ncattrs() \
                    else ""
                assert schema.CHECKSUM not in coordinates.split(), (group.path, name)
        time = ds["snap"]["time"]
        assert (time.standard_name, time.axis) == ("time", "T")
    snap = xr.open_dataset(result.path, group="snap")
    assert schema.CHECKSUM in snap.coords and set(snap.data_vars) == {"u"}


def test_resume_adds_a_history_line(tmp_path):
    writer = NetCDFWriter(tmp_path / "run.nc", _layout(), _attrs())
    writer.abort()
    NetCDFWriter(tmp_path / "run.nc", _layout(), {schema.ATTR_RESUMED: "2020-01-02"},
                 append=True).close()
    history = netCDF4.Dataset(tmp_path / "run.nc").getncattr("history").splitlines()
    assert len(history) == 2 and history[1].startswith("2020-01-02: simkit")


def test_export_writes_one_flat_cf_group(in_tmp):
    result = simkit.run(heat_scenario())
    code = subprocess.run([sys.executable, "-m", "simkit", "export", str(result.path), "--stream",
                           "snap", "-o", "flat.nc"], capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    with netCDF4.Dataset("flat.nc") as ds:
        assert not ds.groups and schema.CHECKSUM not in ds.variables
        assert ds["u"].dimensions == ("time", "y", "x") and ds["step"].dimensions == ("time",)
        assert "coordinates" not in ds["u"].ncattrs()  # cdo cannot assign `step`
        assert ds["time"].units == "seconds since 1970-01-01 00:00:00" and ds["time"].axis == "T"
        assert "export of stream snap" in ds.getncattr("history").splitlines()[-1]
    flat = xr.open_dataset("flat.nc", decode_times=False)
    snap = xr.open_dataset(result.path, group="snap")
    np.testing.assert_array_equal(flat.u.values, snap.u.values)
    np.testing.assert_array_equal(flat.step.values, snap.step.values)
    np.testing.assert_array_equal(flat.time.values, snap.time.values)
    bad = subprocess.run([sys.executable, "-m", "simkit", "export", str(result.path),
                          "--stream", "nope", "-o", "x.nc"], capture_output=True, text=True)
    assert bad.returncode == 2 and "snap, early, diag" in bad.stderr
    assert bad.stderr.count("\n") == 1 and not Path("x.nc").exists()
    again = subprocess.run([sys.executable, "-m", "simkit", "export", str(result.path),
                            "--stream", "snap", "-o", "flat.nc"], capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr


#: The checker's command: beside this interpreter (a virtual environment) or on PATH.
_CHECKER = next((str(p) for p in (Path(sys.executable).parent / "compliance-checker",)
                 if p.exists()), None) or shutil.which("compliance-checker")


@pytest.mark.skipif(_CHECKER is None, reason="compliance-checker not installed")
def test_compliance_checker_finds_nothing_on_the_root_and_flat_streams(in_tmp):
    result = simkit.run(heat_scenario())
    files = [result.path]
    for stream in ("snap", "diag"):
        files.append(export_stream(result.path, stream, f"{stream}.nc"))
    for path in files:
        proc = subprocess.run([_CHECKER, "-t", "cf:1.10", "--criteria", "lenient",
                               str(path)], capture_output=True, text=True)
        assert "Errors" not in proc.stdout and "All tests passed!" in proc.stdout, proc.stdout


# Files written before the checksum had a dimension of its own are still checked and cut.

def test_files_with_the_checksum_along_step_are_still_checked(in_tmp):
    result = simkit.run(heat_scenario(output="old.nc", outputs={
        "snap": {"every": 3, "fields": ["u"]}}))
    with netCDF4.Dataset(result.path, "a") as ds:  # the layout of files written before
        group = ds["snap"]
        group.renameVariable(schema.CHECKSUM, "new_crc")
        crc = group.createVariable(schema.CHECKSUM, "u4", (schema.STEP_DIM,))
        crc.setncatts(schema.CHECKSUM_ATTRS)
        crc[:] = group["new_crc"][:]
        crc[4] = np.uint32(crc[4] ^ 1)  # the last capture's checksum fails: it goes
    assert recover(result.path) == {"snap": 4}
    with netCDF4.Dataset(result.path) as ds:
        assert ds["snap"][schema.CHECKSUM].dimensions == (schema.STEP_DIM,)
        assert len(ds["snap"].dimensions[schema.STEP_DIM]) == 4
    assert "stream snap: u; steps 0..9 every 3 (4)" in describe(result.path)


