"""Intermediate results while a run goes on: captures iterated in-process, a running run's file
read from another process, a live terminal view, and stopping a run from outside."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
from test_cli_terminal_and_resume import _in_terminal

import simkit
from conftest import assert_bitwise, heat_scenario
from simkit.cli import main

SIMKIT = [sys.executable, "-m", "simkit"]

#: A run that lasts several seconds here, committing captures every few tenths of a second.
RUNNING = {
    "solver": "heat2d",
    "params": {"shape": [32, 32]},
    "initial": {"kind": "noise", "amplitude": 1.0},
    "steps": 400_000,
    "seed": 3,
    "flush_seconds": 0.05,
    "outputs": {"snap": {"every": 10, "fields": ["u"], "diagnostics": ["energy"]},
                "checkpoint": {"every": 5000, "fields": "all"}},
    "output": "live.nc",
}


def _start(tmp: Path, data: dict) -> subprocess.Popen:
    (tmp / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.Popen([*SIMKIT, "run", "s.yaml", "-q"], cwd=tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = tmp / data["output"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and simkit.open(path, "snap").sizes["step"] > 0:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not start: {proc.communicate()}")


def _status(path: Path) -> str:
    with netCDF4.Dataset(path) as ds:
        return str(ds.getncattr("simkit_status"))


def test_a_reader_polling_a_running_file_sees_only_whole_growing_captures(in_tmp):
    """200 reads of a file while its run writes it: never an error, the captured steps only
    grow, and every capture read equals the finished file's bit for bit."""
    proc = _start(in_tmp, {**RUNNING, "steps": 60_000})
    seen: dict[int, np.ndarray] = {}
    counts = []
    plain_reads = 0
    for _ in range(200):
        snap = simkit.open("live.nc", "snap")
        counts.append(snap.sizes["step"])
        steps = snap.step.values
        assert list(steps) == list(range(0, 10 * len(steps), 10))
        last = int(steps[-1])
        seen[last] = snap.u.values[-1].copy()
        assert np.isfinite(snap.energy.values).all()
        # Plain xarray is not refused (HDF5's file lock is off in simkit's writers), but it may
        # meet the file mid-update: what simkit.open retries.
        try:
            with xr.open_dataset("live.nc", group="snap") as ds:
                plain_reads += ds.sizes["step"] >= counts[-1]
        except (OSError, RuntimeError):
            pass
        if proc.poll() is not None:
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert counts == sorted(counts) and counts[-1] > counts[0], counts[:5]
    assert len(seen) > 3 and plain_reads > 0
    final = simkit.open("live.nc", "snap")
    for step, u in seen.items():
        assert_bitwise(u, final.u.sel(step=step).values)


def test_iterate_yields_exactly_what_the_file_holds_in_order(in_tmp):
    data = heat_scenario(steps=120, outputs={
        "snap": {"every": 25, "fields": ["u"]}, "diag": {"every": 1, "diagnostics": ["heat"]},
        "lap": {"every": 40, "stage": "laplacian", "fields": ["laplacian"]}})
    got: dict[str, list] = {}
    iterator = simkit.iterate(data)
    for capture in iterator:
        got.setdefault(capture.stream, []).append(capture)
    tree = simkit.open("out.nc")
    for name in ("snap", "diag", "lap"):
        ds = tree[name].to_dataset()
        assert [c.step for c in got[name]] == list(ds.step.values), name
        assert [c.time for c in got[name]] == list(ds.time.values), name
        for capture in got[name]:
            for var, value in capture.values.items():
                assert_bitwise(value, ds[var].sel(step=capture.step).values)
    one = got["snap"][1].to_xarray()
    assert one.u.dims == ("y", "x") and int(one.step) == 25


def test_iterate_only_some_streams_and_the_callback_form(in_tmp):
    data = heat_scenario(steps=60, outputs={"snap": {"every": 20, "fields": ["u"]},
                                            "diag": {"every": 5, "diagnostics": ["heat"]}})
    assert {c.stream for c in simkit.iterate(data, streams=["diag"])} == {"diag"}
    with pytest.raises(simkit.ScenarioError, match=r"streams: expected streams among snap, "
                                                   r"diag, given 'dig'"):
        list(simkit.iterate(data, streams=["dig"], output="other.nc"))
    received = []
    simkit.run(data, output="again.nc", on_capture=received.append)
    assert [(c.stream, c.step) for c in received if c.stream == "snap"] == [
        ("snap", 0), ("snap", 20), ("snap", 40), ("snap", 60)]


def test_leaving_iterate_early_stops_the_run_and_resume_completes_it(in_tmp):
    data = {**RUNNING, "steps": 40_000, "output": "early.nc"}
    reference = simkit.run({**data, "output": "whole.nc"})
    for capture in simkit.iterate(data):
        if capture.stream == "checkpoint" and capture.step >= 5000:
            break
    assert _status(in_tmp / "early.nc") == "interrupted"
    early = simkit.open("early.nc", "snap")
    assert 500 < early.step.values[-1] < 40_000
    result = simkit.resume("early.nc")
    assert_bitwise(result.state["u"], reference.state["u"])
    for name in ("snap", "checkpoint"):
        xr.testing.assert_identical(simkit.open("early.nc", name),
                                    simkit.open("whole.nc", name))


def test_simkit_stop_ends_a_running_run_resumably(in_tmp, capsys):
    proc = _start(in_tmp, RUNNING)
    assert main(["stop", "live.nc", "--wait"]) == 0
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == ("simkit: interrupted by simkit stop; the run so far is in live.nc: "
                           "continue it with `simkit resume live.nc`")
    assert _status(in_tmp / "live.nc") == "interrupted"
    assert not (in_tmp / "live.nc.stop").exists()
    # Nothing is running now: a second stop is refused, naming the status.
    capsys.readouterr()
    assert main(["stop", "live.nc"]) == 2
    assert "expected the file of a running run, given one whose status is 'interrupted'" in \
        capsys.readouterr().err


def test_a_second_writer_is_refused_while_a_run_writes_the_file(in_tmp, capsys):
    proc = _start(in_tmp, RUNNING)
    try:
        for command in (["resume", "live.nc"], ["recover", "live.nc"]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert "expected a file no other process is writing" in err, err
            assert "simkit stop live.nc" in err
    finally:
        main(["stop", "live.nc"])
        proc.communicate(timeout=60)
    assert _status(in_tmp / "live.nc") == "interrupted"


def test_watch_in_a_terminal_follows_the_run_to_its_end(in_tmp):
    # Outlasts the view's start (blocks of 0.3 s: a loaded machine syncs less often).
    proc = _start(in_tmp, {**RUNNING, "steps": 150_000, "flush_seconds": 0.3})
    code, out = _in_terminal(["watch", "live.nc", "--interval", "0.3"], in_tmp, timeout=600)
    proc.communicate(timeout=60)
    assert code == 0, out
    assert "heat2d on numpy" in out and "steps/s" in out, out
    assert "snap" in out and "energy=" in out and "checkpoint" in out, out
    assert "complete; step 150000/150000" in out, out


def test_watch_reads_again_when_the_run_closes_between_its_two_looks(in_tmp, monkeypatch):
    """The status read says running, then the run closes its file (lock released): that is a
    finished run, not a killed one."""
    import simkit.live

    result = simkit.run(heat_scenario(output="done.nc"))
    summaries = iter([{"attrs": {"simkit_status": "running"}, "streams": {}}] * 2)
    real = simkit.live.live_summary
    monkeypatch.setattr(simkit.live, "live_summary",
                        lambda path: next(summaries, None) or real(path))
    monkeypatch.setattr(simkit.live, "writer_alive", lambda path: False)
    assert simkit.live.watch(result.path, interval=0.01) == "complete"


def test_watch_says_when_the_run_was_killed(in_tmp):
    proc = _start(in_tmp, RUNNING)
    proc.kill()
    proc.communicate(timeout=60)
    code, out = _in_terminal(["watch", "live.nc"], in_tmp, timeout=60)
    assert code == 1
    assert "gone" in out and "simkit resume live.nc" in out, out


# ---------------------------------------------------------------- found trying it as a user


@pytest.mark.parametrize("steps", [40, 4000])
def test_a_capture_callback_that_raises_fails_the_run_with_its_error(in_tmp, steps):
    """Whether the writer's queue fills (a long run) or not (a short one), the callback's error
    ends the run, is raised from simkit.run, and the file says failed and why."""
    calls = []

    def callback(capture):
        calls.append(capture.step)
        if len(calls) == 2:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        simkit.run(heat_scenario(steps=steps, outputs={"d": {"every": 10, "diagnostics":
                                                             ["heat"]}}),
                   on_capture=callback)
    with netCDF4.Dataset("out.nc") as ds:
        assert ds.getncattr("simkit_status") == "failed"
        assert ds.getncattr("simkit_error") == "RuntimeError: boom"


def test_overwrite_of_a_file_a_run_writes_is_refused(in_tmp, capsys):
    proc = _start(in_tmp, RUNNING)
    try:
        (in_tmp / "short.yaml").write_text(yaml.safe_dump({**RUNNING, "steps": 20}))
        assert main(["run", "short.yaml", "--overwrite", "-q"]) == 2
        assert "expected a file no other process is writing" in capsys.readouterr().err
    finally:
        main(["stop", "live.nc"])
        proc.communicate(timeout=60)
    assert simkit.open("live.nc", "snap").sizes["step"] > 1


def test_a_run_replacing_a_file_is_read_watched_and_stopped_by_that_files_name(in_tmp):
    simkit.run({**RUNNING, "steps": 20})  # the complete file the next run replaces
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(RUNNING))
    proc = subprocess.Popen([*SIMKIT, "run", "s.yaml", "-q", "--overwrite"], cwd=in_tmp,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    def last_step() -> int:
        steps = simkit.open("live.nc", "snap").step.values
        return int(steps[-1]) if len(steps) else -1

    while last_step() <= 20 and time.monotonic() < deadline:
        time.sleep(0.1)  # the old file's captures end at step 20: the new run's pass it
    assert str(simkit.open("live.nc").attrs["simkit_status"]) == "running"
    assert main(["stop", "live.nc", "--wait"]) == 0
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "live.partial.nc" in err  # an unfinished replacement is kept beside, and named
    assert _status(in_tmp / "live.nc") == "complete"  # the old file, untouched


def test_stop_of_a_killed_run_says_it_is_gone(in_tmp, capsys):
    proc = _start(in_tmp, RUNNING)
    proc.kill()
    proc.communicate(timeout=60)
    capsys.readouterr()
    assert main(["stop", "live.nc"]) == 2
    assert "whose run's process is gone (killed?): `simkit resume live.nc` continues it" in \
        capsys.readouterr().err
    assert not (in_tmp / "live.nc.stop").exists()


def test_resume_finds_modules_beside_the_original_scenario_file(in_tmp, monkeypatch):
    """A run whose scenario adds a diagnostic from a module beside the scenario file resumes
    from another working directory (the module is looked for where the scenario was)."""
    home = in_tmp / "project"
    home.mkdir()
    (home / "extra_mod.py").write_text("def doubled(state):\n    return 2 * state['u'].sum()\n")
    data = heat_scenario(steps=300, diagnostics={"doubled": "extra_mod:doubled"}, outputs={
        "d": {"every": 10, "diagnostics": ["doubled"]}, "c": {"every": 100, "fields": "all"}},
        output=str(home / "r.nc"))
    (home / "s.yaml").write_text(yaml.safe_dump(data))

    def stop(step, *_):
        if step >= 150:
            raise KeyboardInterrupt

    with pytest.raises(simkit.errors.RunInterrupted):
        simkit.run(home / "s.yaml", allow_import=True, progress=stop)
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = simkit.resume(home / "r.nc", allow_import=True)
    assert result.step == 300
    d = simkit.open(home / "r.nc", "d")
    assert list(d.step.values) == list(range(0, 301, 10))


def test_bad_live_arguments_are_one_line_errors(in_tmp, capsys):
    simkit.run(heat_scenario())
    with pytest.raises(SystemExit) as exit_info:
        main(["watch", "out.nc", "--interval", "-1"])
    assert exit_info.value.code == 2
    assert "expected seconds >= 0.05, given '-1'" in capsys.readouterr().err
    with pytest.raises(simkit.ScenarioError, match="streams: expected a list of stream names, "
                                                   "given 'snap'"):
        simkit.iterate(heat_scenario(output="x.nc"), streams="snap")
    with pytest.raises(simkit.ScenarioError, match="given 'dig'"):  # at the call, not at next()
        simkit.iterate(heat_scenario(output="x.nc"), streams=["dig"])


def test_a_non_finite_run_file_says_why(in_tmp):
    with pytest.raises(simkit.errors.NonFiniteError):
        simkit.run({"solver": "fixture_solvers:Doubling", "steps": 1100, "check_finite": 50,
                    "outputs": {"s": {"every": 100}}, "output": "out.nc"})
    with netCDF4.Dataset("out.nc") as ds:
        assert ds.getncattr("simkit_status") == "non-finite"
        assert ds.getncattr("simkit_error").startswith("NonFiniteError: non-finite value in ")
