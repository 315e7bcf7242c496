"""``simkit sweep`` as users meet it: quiet by default (no Dask log lines), a progress bar over
members in a terminal (none with -q), and stopped by SIGTERM/SIGHUP with every member's file
marked interrupted."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import pytest
import yaml

from conftest import require_backend
from simkit.cli import main

require_backend("dask.distributed")

BASE = {"solver": "heat2d", "params": {"shape": [8, 8], "diffusivity": 1.0},
        "initial": {"kind": "noise", "amplitude": 1.0}, "steps": 20, "seed": 1,
        "outputs": {"diag": {"every": 5, "diagnostics": ["energy"]}}, "output": "x.nc"}
SWEEP = {"scenario": "base.yaml", "output": "sweep",
         "parameters": {"params.diffusivity": [0.5, 1.0]}}


def _write(directory: Path, base: dict = BASE) -> None:
    (directory / "base.yaml").write_text(yaml.safe_dump(base))
    (directory / "s.yaml").write_text(yaml.safe_dump(SWEEP))


def _status(path: Path) -> str | None:
    try:
        with netCDF4.Dataset(path) as ds:
            return str(ds.getncattr("simkit_status"))
    except (OSError, AttributeError):
        return None


@pytest.mark.parametrize(("argv", "tty", "bar"), [
    (["sweep", "s.yaml"], True, True), (["sweep", "s.yaml", "-q"], True, False),
    (["-q", "sweep", "s.yaml"], True, False), (["sweep", "s.yaml"], False, False)])
def test_sweep_has_a_bar_over_members_in_a_terminal_unless_q(in_tmp, monkeypatch, capsys,
                                                             argv, tty, bar):
    import simkit.sweep
    from simkit import cli

    given = {}

    def run_sweep(path, **kwargs):  # what the command asks of the sweep
        given.update(kwargs)
        if kwargs["progress"] is not None:
            for ended in range(3):
                kwargs["progress"](ended, 2)
        return simkit.sweep.SweepResult(None, [], [], {})

    drawn: list[bool] = []
    monkeypatch.setattr(cli._MembersBar, "close", lambda self: drawn.append(self._bar is not None))
    monkeypatch.setattr(simkit.sweep, "run_sweep", run_sweep)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert main(argv) == 0
    assert isinstance(given["progress"], cli._MembersBar) == bar and drawn == [True] * bar
    assert given["dask_log_level"] == logging.ERROR  # quiet by default


@pytest.mark.parametrize(("signame", "group"), [("SIGTERM", False), ("SIGINT", True)])
def test_a_stop_signal_stops_every_member_cleanly_and_dask_says_nothing(in_tmp, signame, group):
    """SIGTERM to the sweep's process (a batch scheduler), and SIGINT to its whole process group,
    workers included (Ctrl-C in a terminal); SIGHUP takes SIGTERM's path."""
    _write(in_tmp, {**BASE, "steps": 10_000_000, "flush_seconds": 0.05})
    members = [in_tmp / "sweep" / f"member_{i:03d}.nc" for i in range(2)]
    proc = subprocess.Popen([sys.executable, "-m", "simkit", "sweep", "s.yaml"], cwd=in_tmp,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while (any(_status(m) != "running" for m in members) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.2)
        time.sleep(0.5)
        if group:
            os.killpg(proc.pid, getattr(signal, signame))
        else:
            proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + getattr(signal, signame), err
    assert out == "members: 0 complete (0 already were), 0 failed, 2 interrupted\n"
    # Nothing else: no Dask log lines (a local cluster's start and close said 33).
    assert err == (f"simkit: interrupted by {signame}; the members not complete run again with "
                   f"`simkit sweep s.yaml`\n")
    assert [_status(m) for m in members] == ["interrupted", "interrupted"]
    assert not (in_tmp / "sweep" / ".simkit_sweep.stop").exists()


def test_a_stop_signal_stops_a_vectorized_sweep_cleanly(in_tmp, capsys):
    require_backend("jax")
    import threading

    _write(in_tmp, {**BASE, "backend": "jax", "steps": 10_000_000, "flush_seconds": 0.05,
                    "dt": 0.01})
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one landing after main: ignored
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = main(["sweep", "s.yaml", "--vectorize"])
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGTERM, previous)
    assert (code, capsys.readouterr().err) == (143, "simkit: interrupted by SIGTERM\n")
    assert [_status(in_tmp / "sweep" / f"member_{i:03d}.nc") for i in range(2)] == [
        "interrupted", "interrupted"]


def test_a_sweep_says_nothing_while_another_cluster_holds_dasks_usual_port(in_tmp):
    """Two sweeps on one machine (two users, or two test workers): the second's scheduler took
    Dask's usual HTTP port, 8787, found it in use and warned on stderr."""
    import socket

    _write(in_tmp)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("", 8787))
        holder.listen()
    except OSError:
        pass  # held by another process already, as the test wants
    try:
        proc = subprocess.run([sys.executable, "-m", "simkit", "sweep", "s.yaml", "-q"],
                              cwd=in_tmp, text=True, capture_output=True, timeout=300)
    finally:
        holder.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_a_stop_signal_in_the_last_block_leaves_a_vectorized_sweep_complete(in_tmp,
                                                                           monkeypatch):
    """As for a single run, a signal noted once the ensemble is at its end changes nothing (it
    marked the finished members interrupted)."""
    require_backend("jax")
    import simkit.sweep
    from simkit import _stop

    _write(in_tmp, {**BASE, "backend": "jax", "steps": 3, "dt": 0.01,
                    "outputs": {"diag": {"at": [3], "diagnostics": ["energy"]}}})
    monkeypatch.setattr(_stop, "received", lambda: "SIGTERM")  # noted during the one block
    result = simkit.sweep.run_sweep("s.yaml", vectorize=True)
    assert result.stopped_by is None
    assert [_status(in_tmp / "sweep" / f"member_{i:03d}.nc") for i in range(2)] == [
        "complete", "complete"]
