"""Nothing lost: random SIGKILLs of real runs, recover, resume bit for bit; kill-resume chains;
torn and corrupt captures; disk full; resume refusals."""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import assert_bitwise
from simkit.errors import ScenarioError
from simkit.io import recover

KILLS = int(os.environ.get("SIMKIT_KILLS", "30"))
BATCHES = 3
SCENARIO = """\
solver: heat2d
params: {shape: [128, 128]}
initial: {kind: noise, amplitude: 1.0}
steps: 6000
seed: 4
outputs:
  snaps: {every: 25, fields: [u]}
  diag: {every: 5, diagnostics: [energy, max_abs]}
  checkpoint: {every: 200, fields: all}
output: run.nc
"""
STREAMS = ("snaps", "diag", "checkpoint")


def _simkit(*args, cwd, preexec_fn=None, wait=True):
    command = [sys.executable, "-m", "simkit", *args]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=preexec_fn)
    if wait:
        out, err = proc.communicate()
        return proc.returncode, out, err
    return proc


def _load(path):
    tree = xr.open_datatree(path)
    data = {name: tree[name].to_dataset().load() for name in STREAMS}
    data["final"] = tree.to_dataset().load()
    tree.close()
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and how long it takes."""
    directory = tmp_path_factory.mktemp("reference")
    (directory / "s.yaml").write_text(SCENARIO)
    start = time.perf_counter()
    code, _, err = _simkit("run", "s.yaml", "-q", cwd=directory)
    assert code == 0, err
    return _load(directory / "run.nc"), time.perf_counter() - start


def _assert_prefix_of(got, reference):
    """Each stream holds a gap-free, duplicate-free prefix of the reference's captures."""
    for name in STREAMS:
        steps = list(got[name].step.values)
        assert steps == list(reference[name].step.values[: len(steps)]), name
        for var in got[name].data_vars:
            np.testing.assert_array_equal(got[name][var].values,
                                          reference[name][var].values[: len(steps)])


def _assert_same_run(got, reference):
    for name in STREAMS:
        assert list(got[name].step.values) == list(reference[name].step.values), name
        for var in reference[name].data_vars:
            assert_bitwise(got[name][var].values, reference[name][var].values)
    assert_bitwise(got["final"].u.values, reference["final"].u.values)
    assert int(got["final"].step) == 6000


def _kill_after(directory, seconds, args):
    proc = _simkit(*args, cwd=directory, wait=False)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return proc.returncode


# A run or resume that prints, between segments, how many captures it has written (synced to the
# file): what a killed process reported is what the file must still hold.
_REPORTING = """\
import sys
import simkit

def report(step, time, written, total):
    print(written, flush=True)

if sys.argv[1] == "run":
    simkit.run("s.yaml", progress=report)
else:
    simkit.resume("run.nc", progress=report)
"""


def _kill_reporting_after(directory, seconds, what):
    """SIGKILL a reporting ``run`` or ``resume`` after ``seconds``; the captures it reported."""
    proc = subprocess.Popen([sys.executable, "-c", _REPORTING, what], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    lines = out.split("\n")[:-1]  # a line cut by the kill has no newline: not a report
    return int(lines[-1]) if lines else 0


def _captures(path):
    """Captures per stream in a (recovered) file."""
    with netCDF4.Dataset(path) as ds:
        return {name: list(ds.groups[name].variables["step"][:]) for name in STREAMS}


def _kept_by_resume(path):
    """Captures a resume keeps: those up to the last checkpoint no later than the step the file
    says every capture is on disk up to (it rewrites the rest)."""
    steps = _captures(path)
    with netCDF4.Dataset(path) as ds:
        committed = int(ds.getncattr("simkit_committed_step"))
    cut = max((s for s in steps["checkpoint"] if s <= committed), default=-1)
    return sum(1 for name in STREAMS for step in steps[name] if step <= cut)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_random_sigkills_then_resume_bit_for_bit(reference, tmp_path, batch):
    ref, duration = reference
    rng = random.Random(1000 + batch)
    kills = [KILLS // BATCHES + (1 if i < KILLS % BATCHES else 0) for i in range(BATCHES)][batch]
    lost = 0  # captures a killed process reported written that its file no longer holds
    for attempt in range(kills):
        directory = tmp_path / f"k{attempt}"
        directory.mkdir()
        (directory / "s.yaml").write_text(SCENARIO)
        if attempt % 2:
            _kill_after(directory, rng.uniform(0.0, duration * 1.1), ["run", "s.yaml", "-q"])
            reported = 0
        else:
            reported = _kill_reporting_after(directory, rng.uniform(0.0, duration * 1.1), "run")
        path = directory / "run.nc"
        if not path.exists():  # killed before the file was laid out: nothing to resume
            assert not list(directory.glob("run.nc*"))
            lost += reported
            code, _, err = _simkit("run", "s.yaml", "-q", cwd=directory)
            assert code == 0, err
            _assert_same_run(_load(path), ref)
            continue
        code, _, err = _simkit("recover", "run.nc", cwd=directory)
        assert code == 0, err
        _assert_prefix_of(_load(path), ref)
        lost += max(0, reported - sum(map(len, _captures(path).values())))
        if attempt % 3 == 2:  # a chain: the resume is killed too
            kept = _kept_by_resume(path)
            reported = _kill_reporting_after(directory, rng.uniform(0.0, duration), "resume")
            assert _simkit("recover", "run.nc", cwd=directory)[0] == 0
            _assert_prefix_of(_load(path), ref)
            if reported:
                lost += max(0, kept + reported - sum(map(len, _captures(path).values())))
        with netCDF4.Dataset(path) as ds:
            complete = ds.getncattr("simkit_status") == "complete"
        if not complete:
            code, out, err = _simkit("resume", "run.nc", "-q", cwd=directory)
            assert code == 0, err
            assert out.strip() == "run.nc"
        got = _load(path)
        _assert_same_run(got, ref)
        shutil.rmtree(directory)
    assert lost == 0


def _finished_copy(tmp_path, reference_dir=None):
    (tmp_path / "s.yaml").write_text(SCENARIO)
    code, _, err = _simkit("run", "s.yaml", "-q", cwd=tmp_path)
    assert code == 0, err
    return tmp_path / "run.nc"


def test_torn_and_corrupt_last_captures_are_dropped_not_trusted(reference, tmp_path):
    ref, _ = reference
    path = _finished_copy(tmp_path)
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr("simkit_status", "running")
        snaps = ds.groups["snaps"]
        n = len(snaps.dimensions["step"])
        snaps.variables["u"][n - 1, 3, 3] = 42.0  # a flipped value: checksum mismatch
        diag = ds.groups["diag"]
        m = len(diag.dimensions["step"])
        diag.variables["time"][m] = 1.0  # a torn record: written, but never its step
    checkpoints = ref["checkpoint"].sizes["step"]  # untouched: every one kept
    assert recover(path) == {"snaps": n - 1, "diag": m, "checkpoint": checkpoints}
    assert recover(path) == {"snaps": n - 1, "diag": m, "checkpoint": checkpoints}  # idempotent
    with xr.open_dataset(path, group="snaps") as snaps:
        assert snaps.sizes["step"] == n - 1 and 42.0 not in snaps.u.values
    result = simkit.resume(path)
    assert result.step == 6000
    _assert_same_run(_load(path), ref)


# A run killed while its last flush is half on disk: the checkpoint at the end landed, the
# diagnostics before it did not (seen with real SIGKILLs, as a run "complete" after its resume
# with the last diagnostics missing). Modelled by dropping that write and dying as the flush
# that should have held it ends.
_TORN_FLUSH = """\
import os
import simkit
from simkit.io.netcdf import NetCDFWriter

write_block, sync = NetCDFWriter.write_block, NetCDFWriter.sync
torn = []

def write_but_diag_at_the_end(self, stream, steps, times, arrays):
    if stream == "diag" and steps[-1] == 6000:
        torn.append(stream)
    else:
        write_block(self, stream, steps, times, arrays)

def sync_then_die_if_torn(self):
    sync(self)
    if torn:
        os._exit(9)

NetCDFWriter.write_block = write_but_diag_at_the_end
NetCDFWriter.sync = sync_then_die_if_torn
simkit.run("s.yaml")
"""


def test_resume_after_a_torn_flush_starts_before_the_lost_captures(reference, tmp_path):
    ref, _ = reference
    (tmp_path / "s.yaml").write_text(SCENARIO)
    proc = subprocess.run([sys.executable, "-c", _TORN_FLUSH], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    path = tmp_path / "run.nc"
    with netCDF4.Dataset(path) as ds:
        assert ds.getncattr("simkit_status") == "running"
        committed = int(ds.getncattr("simkit_committed_step"))
        assert ds.groups["checkpoint"].variables["step"][-1] == 6000  # the checkpoint landed
        last_diag = int(ds.groups["diag"].variables["step"][-1])
    assert last_diag < 6000 and committed <= last_diag
    assert _simkit("resume", "run.nc", "-q", cwd=tmp_path)[0] == 0
    _assert_same_run(_load(path), ref)


def test_resume_never_bridges_a_stream_gap_and_its_copy_says_how_far_it_is_whole(
        reference, tmp_path, monkeypatch):
    """Captures lost before the file's own word (or in a file without it): the checkpoint a
    resume starts from comes before the first capture a stream of step schedules lacks."""
    import simkit.api
    from simkit.io.recover import rewrite

    ref, _ = reference
    path = _finished_copy(tmp_path)
    counts = {name: ref[name].sizes["step"] for name in STREAMS}
    rewrite(path, {**counts, "diag": 1000})  # diag ends at 4995; the checkpoint at 6000 stays
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr("simkit_status", "running")
        assert int(ds.getncattr("simkit_committed_step")) == 6000  # the file's word, wrong now
    seen = {}

    def stop_after_the_copy(plan, progress=None, resume=None, **options):
        with netCDF4.Dataset(path) as ds:
            seen["committed"] = int(ds.getncattr("simkit_committed_step"))
            seen["snaps"] = int(ds.groups["snaps"].variables["step"][-1])
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(simkit.api, "execute", stop_after_the_copy)
        with pytest.raises(KeyboardInterrupt):
            simkit.resume(path)
    # snaps keeps every field: its capture at 4975 is the last full state before 5000
    assert seen == {"committed": 4975, "snaps": 4975}
    simkit.resume(path)
    _assert_same_run(_load(path), ref)


def test_disk_full_names_path_and_intact_captures_then_resume(reference, tmp_path):
    ref, _ = reference
    (tmp_path / "s.yaml").write_text(SCENARIO)
    limit = 24 << 20

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code, _, err = _simkit("run", "s.yaml", "-q", cwd=tmp_path, preexec_fn=small_disk)
    assert code == 4, err
    assert err.count("\n") == 1
    assert "disk full writing run.nc (file size limit of 25165824 bytes reached); captures " \
           "intact: snaps: " in err and "simkit resume run.nc" in err
    assert _simkit("recover", "run.nc", cwd=tmp_path)[0] == 0
    _assert_prefix_of(_load(tmp_path / "run.nc"), ref)
    code, _, err = _simkit("resume", "run.nc", "-q", cwd=tmp_path)
    assert code == 0, err
    _assert_same_run(_load(tmp_path / "run.nc"), ref)


def test_resume_refuses_other_scenario_complete_file_and_other_solver_version(tmp_path,
                                                                              monkeypatch):
    path = _finished_copy(tmp_path)
    with pytest.raises(ScenarioError, match="expected an unfinished run, given one that is "
                                            "complete"):
        simkit.resume(path)
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr("simkit_status", "running")
    other = tmp_path / "other.yaml"
    other.write_text(SCENARIO.replace("seed: 4", "seed: 5"))
    with pytest.raises(ScenarioError, match="expected the scenario recorded in the file"):
        simkit.resume(path, scenario=other)
    from solvers.heat2d import Heat2D

    monkeypatch.setattr(Heat2D, "version", "2")
    with pytest.raises(ScenarioError, match="expected solver heat2d version 1 as recorded, given "
                                            "version 2 installed"):
        simkit.resume(path)
    with pytest.raises(ScenarioError, match="expected an existing run file"):
        simkit.resume(Path(tmp_path / "nope.nc"))
