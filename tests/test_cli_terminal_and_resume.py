"""The command line as users meet it: in a terminal with the progress bar on, stopped by
SIGTERM/SIGHUP, rerun by requeued batch jobs (`run --resume`), piped into `head`, and given odd
arguments (`--debug`, `--panels 0`, `--set steps=010`, `simkit.run(None)`)."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import assert_bitwise
from simkit import cli
from simkit.cli import main
from simkit.errors import RunInterrupted, ScenarioError

SIMKIT = [sys.executable, "-m", "simkit"]
#: Long enough that the progress bar appears (after one second) on this kind of machine.
LONG = {
    "solver": "heat2d",
    "params": {"shape": [256, 256]},
    "initial": {"kind": "noise", "amplitude": 1.0},
    "steps": 3000,
    "seed": 2,
    "outputs": {"diag": {"every": 50, "diagnostics": ["energy"]},
                "checkpoint": {"every": 500, "fields": "all"}},
    "output": "long.nc",
}
SMALL = {**LONG, "params": {"shape": [16, 16]}, "steps": 40,
         "outputs": {"diag": {"every": 5, "diagnostics": ["energy"]},
                     "checkpoint": {"every": 10, "fields": "all"}},
         "output": "small.nc"}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _status(path: Path) -> str:
    with netCDF4.Dataset(path) as ds:
        return str(ds.getncattr("simkit_status"))


def _in_terminal(args: list[str], cwd: Path, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``simkit ARGS`` with stdin, stdout and stderr on a pseudo-terminal, as in a shell."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 140, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([*SIMKIT, *args], cwd=cwd, stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _interrupted(data: dict, at_step: int) -> RunInterrupted:
    """Run ``data`` in this process and stop it as Ctrl-C would once it has passed ``at_step``."""
    def stop(step: int, *_: object) -> None:
        if step >= at_step:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        simkit.run(data, progress=stop)
    return info.value


# ---------------------------------------------------------------- the bar in a terminal


def test_run_in_a_terminal_shows_the_bar_and_finishes(in_tmp):
    # Long enough to outlast the bar's one-second delay with the fast NumPy kernels.
    _write(in_tmp / "s.yaml", {**LONG, "steps": 20_000})
    code, out = _in_terminal(["run", "s.yaml"], in_tmp)
    assert code == 0, out
    assert "error" not in out and "steps/s" in out, out  # the bar was drawn
    assert "long.nc" in out and _status(in_tmp / "long.nc") == "complete"


def test_resume_in_a_terminal_shows_the_bar_and_finishes(in_tmp):
    # Long enough that the resumed part outlasts the bar's one-second delay.
    longer = {**LONG, "steps": 24_000}
    stopped = _interrupted(longer, at_step=600)
    assert stopped.path == Path("long.nc") and _status(in_tmp / "long.nc") == "interrupted"
    code, out = _in_terminal(["resume", "long.nc"], in_tmp)
    assert code == 0, out
    assert "error" not in out and "steps/s" in out, out
    assert _status(in_tmp / "long.nc") == "complete"
    with xr.open_dataset(in_tmp / "long.nc") as ds:
        assert int(ds.step) == longer["steps"]


def test_sweep_in_a_terminal_finishes(in_tmp):
    _write(in_tmp / "base.yaml", SMALL)
    _write(in_tmp / "sweep.yaml", {"scenario": "base.yaml", "output": "sweep",
                                   "parameters": {"params.diffusivity": [0.5, 1.0]}})
    code, out = _in_terminal(["sweep", "sweep.yaml", "--workers", "1"], in_tmp)
    assert code == 0, out
    assert "members: 2 complete (0 already were), 0 failed" in out, out
    assert "error" not in out.lower() and "Traceback" not in out, out
    assert (in_tmp / "sweep" / "combined.nc").is_file()


def test_progress_bar_renders_before_its_first_update(monkeypatch):
    # rich draws from its own thread: every column's field must exist from the start.
    import rich.progress

    drawn = []
    start = rich.progress.Progress.start

    def start_and_draw(self):
        start(self)
        drawn.append(self.get_renderable())
        self.console.print(drawn[-1])  # raises KeyError on a missing field

    monkeypatch.setattr(rich.progress.Progress, "start", start_and_draw)
    bar = cli._ProgressBar()
    bar._start -= 5.0  # as if the run had taken five seconds so far
    bar(100, 2.5, 3, 1000)
    bar(200, 5.0, 4, None)  # a run whose length is not known in steps
    bar.close()
    assert drawn


# ---------------------------------------------------------------- SIGTERM and SIGHUP


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_run_cleanly_for_resume(in_tmp, signame):
    _write(in_tmp / "s.yaml", {**LONG, "steps": 200_000})
    proc = subprocess.Popen([*SIMKIT, "run", "s.yaml", "-q"], cwd=in_tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (in_tmp / "long.nc").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few captures in
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, signame), err
    assert err.strip() == (f"simkit: interrupted by {signame}; the run so far is in long.nc: "
                           "continue it with `simkit resume long.nc`")
    assert _status(in_tmp / "long.nc") == "interrupted"
    with xr.open_datatree(in_tmp / "long.nc") as tree:  # readable, captures whole
        diag = tree["diag"].to_dataset()
        assert diag.sizes["step"] >= 1
        np.testing.assert_array_equal(diag.step.values, np.arange(diag.sizes["step"]) * 50)


def test_interrupted_api_run_names_its_file_and_resumes_to_the_same_state(in_tmp):
    stopped = _interrupted(SMALL, at_step=15)
    assert stopped.reason == "SIGINT" and stopped.path == Path("small.nc")
    assert _status(in_tmp / "small.nc") == "interrupted"
    resumed = simkit.resume("small.nc")
    whole = simkit.run({**SMALL, "output": "whole.nc"})
    assert_bitwise(resumed.state["u"], whole.state["u"])


def test_interrupt_before_a_file_exists_says_nothing_was_written(capsys):
    code = cli._interrupted(RunInterrupted("SIGTERM", None))
    assert code == 143
    assert capsys.readouterr().err == ("simkit: interrupted by SIGTERM before anything was "
                                       "written\n")


# ---------------------------------------------------------------- run --resume


def test_run_resume_starts_resumes_and_then_does_nothing(in_tmp, capsys):
    _write(in_tmp / "s.yaml", SMALL)
    whole = simkit.run({**SMALL, "output": "whole.nc"})
    _interrupted(SMALL, at_step=15)
    capsys.readouterr()
    assert main(["run", "s.yaml", "--resume", "-q"]) == 0  # unfinished: resumed
    assert capsys.readouterr().out == "small.nc\n"
    assert _status(in_tmp / "small.nc") == "complete"
    with xr.open_dataset(in_tmp / "small.nc") as ds:
        assert_bitwise(ds.u.values, whole.state["u"])
    before = (in_tmp / "small.nc").read_bytes()
    for _ in range(2):  # complete: nothing done, any number of times
        assert main(["run", "s.yaml", "--resume"]) == 0
        out, err = capsys.readouterr()
        assert out == "small.nc\n" and err == "simkit: small.nc is already complete; nothing to do\n"
    assert (in_tmp / "small.nc").read_bytes() == before
    (in_tmp / "small.nc").unlink()
    assert main(["run", "s.yaml", "--resume"]) == 0  # no output: started
    assert _status(in_tmp / "small.nc") == "complete"


def test_run_resume_refuses_a_file_of_another_scenario_and_overwrite(in_tmp, capsys):
    _write(in_tmp / "s.yaml", SMALL)
    assert main(["run", "s.yaml", "-q"]) == 0
    before = (in_tmp / "small.nc").read_bytes()
    capsys.readouterr()
    assert main(["run", "s.yaml", "--resume", "--set", "seed=7"]) == 2
    assert "small.nc: expected the output file to hold a run of this scenario" in \
        capsys.readouterr().err
    assert main(["run", "s.yaml", "--resume", "--overwrite"]) == 2
    assert "--resume: expected one of --resume" in capsys.readouterr().err
    assert (in_tmp / "small.nc").read_bytes() == before


def test_api_run_resume_returns_the_complete_runs_final_state(in_tmp):
    first = simkit.run(SMALL)
    again = simkit.run(SMALL, resume=True)
    assert again.path == first.path and again.step == first.step and again.time == first.time
    assert_bitwise(again.state["u"], first.state["u"])


def test_resume_of_a_complete_run_is_friendly(in_tmp, capsys):
    _write(in_tmp / "s.yaml", SMALL)
    assert main(["run", "s.yaml", "-q"]) == 0
    capsys.readouterr()
    assert main(["resume", "small.nc"]) == 0
    out, err = capsys.readouterr()
    assert out == "small.nc\n" and err == "simkit: small.nc is already complete; nothing to resume\n"
    _write(in_tmp / "other.yaml", {**SMALL, "seed": 9})
    assert main(["resume", "small.nc", "--scenario", "other.yaml"]) == 2  # still checked
    assert "expected the scenario recorded in the file" in capsys.readouterr().err


# ---------------------------------------------------------------- CLI and API edges


def test_debug_flag_is_accepted_and_prints_the_traceback(in_tmp, capsys, monkeypatch):
    assert main(["--debug", "run", "nope.yaml"]) == 2
    assert main(["run", "nope.yaml", "--debug"]) == 2
    capsys.readouterr()

    def boom(args):
        raise RuntimeError("deep trouble")

    monkeypatch.setitem(cli._COMMANDS, "schema", boom)
    assert main(["schema"]) == 1
    err = capsys.readouterr().err
    assert err == "simkit: error: RuntimeError: deep trouble\n"
    assert main(["schema", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("simkit: error: RuntimeError: deep trouble\nTraceback")


def test_plot_refuses_a_panel_count_below_one(in_tmp, capsys):
    simkit.run({**SMALL, "outputs": {"snap": {"every": 10, "fields": ["u"]}}})
    capsys.readouterr()
    for panels in ("0", "-3"):
        assert main(["plot", "small.nc", "--field", "u", "--panels", panels]) == 2
        assert capsys.readouterr().err == (f"simkit: error: --panels: expected a whole number of "
                                           f"panels from 1 to 100, given {panels}\n")
    assert not list(in_tmp.glob("*.png"))


def test_inspect_into_a_closed_pipe_is_not_a_file_error(in_tmp):
    simkit.run(SMALL)
    proc = subprocess.Popen([*SIMKIT, "inspect", "small.nc"], cwd=in_tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head` that has read all it wants before simkit writes
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 141


@pytest.mark.parametrize("kwargs, key", [
    ({"scenario": None}, "scenario"),
    ({"scenario": 5}, "scenario"),
    ({"scenario": SMALL, "sets": None}, "sets"),
    ({"scenario": SMALL, "sets": "steps=3"}, "sets"),
    ({"scenario": SMALL, "sets": [3]}, "sets"),
])
def test_api_run_refuses_wrong_argument_types_in_one_line(in_tmp, kwargs, key):
    with pytest.raises(ScenarioError) as info:
        simkit.run(**kwargs)
    assert info.value.key == key and "\n" not in str(info.value)
    assert str(info.value).startswith(f"{key}: expected ")
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize("value, read", [("010", "8 (octal)"), ("-07", "-7 (octal)"),
                                         ("1:20", "80 (base 60)")])
def test_set_refuses_integers_yaml_reads_as_another_number(in_tmp, capsys, value, read):
    _write(in_tmp / "s.yaml", SMALL)
    assert main(["run", "s.yaml", "--set", f"steps={value}"]) == 2
    assert capsys.readouterr().err == (
        f"simkit: error: --set steps={value}: steps: expected a decimal integer without leading "
        f"zeros, given '{value}', which YAML 1.1 reads as {read}; write the number you mean in "
        "plain decimal\n")
    assert main(["run", "s.yaml", "--set", "params.shape=[12, 012]"]) == 2  # nested too
    assert "given '012'" in capsys.readouterr().err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["s.yaml"]
    assert main(["run", "s.yaml", "--set", "steps=10", "--set", "seed=0", "-q"]) == 0
