"""Zarr runs under faults: SIGKILLs at random moments over runs and resumes (nothing committed
lost, nothing to repair, resumes bit for bit), a full disk (exit 4, nothing lost), and readers
polling a running run from another process."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import icechunk
import numpy as np
import pytest

import simkit
from conftest import assert_bitwise
from simkit.cli import main
from simkit.io import open_reader, recover, schema
from simkit.io.zarr import ZarrWriter

TESTS = Path(__file__).parent
KILLS = int(os.environ.get("SIMKIT_ZARR_KILLS", "50"))
#: The kills are split over this many tests, which pytest-xdist runs side by side.
BATCHES = 5
SCENARIO = """\
solver: heat2d
params: {shape: [48, 48]}
initial: {kind: noise, amplitude: 1.0}
steps: 2400
seed: 4
flush_seconds: 0.1
outputs:
  snaps: {every: 20, fields: [u]}
  diag: {every: 4, diagnostics: [energy, max_abs]}
  checkpoint: {every: 150, fields: all}
output: run.zarr
"""
STREAMS = ("snaps", "diag", "checkpoint")

# A run or resume that prints, between segments, how many captures it has written (committed):
# what a killed process reported is what the repository must still hold.
_REPORTING = """\
import sys
import simkit

def report(step, time, written, total):
    print(written, flush=True)

if sys.argv[1] == "run":
    simkit.run("s.yaml", progress=report)
else:
    simkit.resume("run.zarr", progress=report)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}


def _reporting(directory: Path, what: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _REPORTING, what], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def _kill_after(directory: Path, seconds: float, what: str, running: bool = False
                ) -> tuple[int, bool]:
    """SIGKILL a reporting ``run`` or ``resume`` after ``seconds`` (``running``: counted from
    its first report, so the kill lands while it writes): the captures it reported written,
    and whether it had finished before the kill."""
    proc = _reporting(directory, what)
    assert proc.stdout is not None
    first = proc.stdout.readline() if running else ""
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
    out, _ = proc.communicate()
    lines = (first + out).split("\n")[:-1]  # a line cut by the kill has no newline
    return (int(lines[-1]) if lines else 0), proc.returncode == 0


def _contents(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with open_reader(path) as reader:
        assert reader.whole_counts() == reader.lengths()  # a commit holds whole captures only
        found = {}
        for name in STREAMS:
            captures = reader.captures(name)
            found[name] = {"step": captures.steps, **captures.arrays}
        final = reader.final_state(["u"])
        found["final"] = {} if final is None else {"u": final.fields["u"],
                                                    "step": np.array(final.step)}
    return found


def _assert_prefix_of(got, reference) -> None:
    for name in STREAMS:
        n = len(got[name]["step"])
        for var, value in reference[name].items():
            assert_bitwise(got[name][var], value[:n])


def _kept_by_resume(path: Path) -> int:
    """Captures a resume keeps: those up to the last checkpoint no later than the committed
    step (it cuts the rest)."""
    with open_reader(path) as reader:
        steps = reader.steps({name: None for name in STREAMS})
        committed = reader.committed_step()
    assert committed is not None
    cut = max((s for s in steps["checkpoint"] if s <= committed), default=-1)
    return sum(1 for name in STREAMS for step in steps[name] if step <= cut)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run's contents, and how long it writes (after its first block)."""
    directory = tmp_path_factory.mktemp("zarr_reference")
    (directory / "s.yaml").write_text(SCENARIO)
    proc = _reporting(directory, "run")
    assert proc.stdout is not None
    proc.stdout.readline()
    start = time.perf_counter()  # from the first block on: how long the run writes
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    return _contents(directory / "run.zarr"), time.perf_counter() - start


def _finish_and_compare(directory: Path, reference) -> None:
    """Resume the run in ``directory`` to its end (unless complete): bit for bit the
    reference."""
    path = directory / "run.zarr"
    with open_reader(path) as reader:
        complete = reader.status() == "complete"
    if not complete:
        assert _kill_after(directory, 120.0, "resume")[1]
    got = _contents(path)
    for name in (*STREAMS, "final"):
        assert sorted(got[name]) == sorted(reference[name])
        for var, value in reference[name].items():
            assert_bitwise(got[name][var], value)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_random_sigkills_over_runs_and_resumes_lose_nothing(reference, tmp_path, batch):
    """Kill chains: a run killed, its resumes killed, until the kills of this batch are spent
    (a run that finishes first starts a new chain); then each chain resumed to its end."""
    ref, duration = reference
    rng = random.Random(2026 + batch)
    wanted = KILLS // BATCHES + (batch < KILLS % BATCHES)
    kills = lost = 0
    chains: list[Path] = []
    while kills < wanted:
        if not chains or (chains[-1] / "run.zarr").exists() and _complete(chains[-1]):
            chains.append(tmp_path / f"chain{len(chains)}")
            chains[-1].mkdir()
            (chains[-1] / "s.yaml").write_text(SCENARIO)
        directory = chains[-1]
        path = directory / "run.zarr"
        started = path.exists()
        kept = _kept_by_resume(path) if started else 0
        # Most kills land while it writes; one in five anywhere (imports, creation).
        anywhere = rng.random() < 0.2
        reported, finished = _kill_after(directory, rng.uniform(0.0, duration * 1.1),
                                         "resume" if started else "run", not anywhere)
        kills += not finished
        if not path.exists():  # killed before the repository was in place
            assert not [p for p in directory.iterdir() if p.name != "s.yaml"
                        and not p.name.startswith(".run.zarr.")]
            lost += reported
            continue
        got = _contents(path)
        _assert_prefix_of(got, ref)
        held = sum(len(got[name]["step"]) for name in STREAMS)
        lost += max(0, kept + reported - held)
        assert recover(path) == {name: len(got[name]["step"]) for name in STREAMS}
    for directory in chains:
        _finish_and_compare(directory, ref)
    assert lost == 0


def _complete(directory: Path) -> bool:
    with open_reader(directory / "run.zarr") as reader:
        return reader.status() == "complete"


def test_full_disk_exits_4_keeping_every_commit_then_resume(reference, in_tmp, monkeypatch,
                                                            capsys):
    ref, _ = reference
    (in_tmp / "s.yaml").write_text(SCENARIO)
    calls = {"n": 0}
    commit = icechunk.Session.commit

    def filling(self, message, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device (os error 28)")
        return commit(self, message, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(icechunk.Session, "commit", filling)
        code = main(["run", "s.yaml", "-q"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.count("\n") == 1 and "disk full writing run.zarr" in err
    assert "simkit resume run.zarr" in err
    intact = err.split("captures intact: ")[1].split(";")[0]
    with open_reader("run.zarr") as reader:
        held = reader.whole_counts()
        assert reader.lengths() == held
        assert reader.status() == "failed"
    assert intact == ", ".join(f"{name}: {n}" for name, n in held.items())
    assert sum(held.values()) > 0
    _assert_prefix_of(_contents(in_tmp / "run.zarr"), ref)
    result = simkit.resume("run.zarr")
    assert result.step == 2400
    got = _contents(in_tmp / "run.zarr")
    for name in STREAMS:
        for var, value in ref[name].items():
            assert_bitwise(got[name][var], value)


def test_space_check_refuses_before_writing_and_the_status_is_kept(in_tmp, monkeypatch):
    calls = {"n": 0}
    check = ZarrWriter._free

    def filling(self):
        calls["n"] += 1
        return 0 if calls["n"] == 6 else check(self)

    monkeypatch.setattr(ZarrWriter, "_free", filling)
    from simkit.driver import _blocks
    from simkit.errors import DiskFullError

    monkeypatch.setattr(_blocks, "BLOCK_POINTS", 8)  # many blocks, so many batches
    (in_tmp / "s.yaml").write_text(SCENARIO)
    with pytest.raises(DiskFullError) as caught:
        simkit.run("s.yaml")
    intact = str(caught.value).split("captures intact: ")[1].split(";")[0]
    with open_reader("run.zarr") as reader:
        held = reader.whole_counts()
        assert reader.status() == "failed"
        assert schema.ATTR_ERROR in reader.attrs()
    assert intact == ", ".join(f"{name}: {n}" for name, n in held.items())
    for name, every in (("snaps", 20), ("diag", 4), ("checkpoint", 150)):
        with open_reader("run.zarr") as reader:
            steps = reader.steps({name: None})[name]
        assert steps == list(range(0, every * len(steps), every)), name


def test_a_reader_polling_a_running_run_sees_steps_only_grow(in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO)
    proc = _reporting(in_tmp, "run")
    path = in_tmp / "run.zarr"
    seen: dict[str, list[int]] = {name: [] for name in STREAMS}
    taken: list[tuple[str, int, np.ndarray]] = []
    polls = 0
    while polls < 200:
        if not path.exists():
            time.sleep(0.02)
            continue
        with open_reader(path) as reader:
            counts = reader.whole_counts()
            assert counts == reader.lengths()
            steps = reader.steps(counts)
            for name in STREAMS:
                assert steps[name][:len(seen[name])] == seen[name]  # only grows
                seen[name] = steps[name]
        if counts["snaps"] and polls % 10 == 0:  # as a notebook reads it: simkit.open
            snaps = simkit.open(path, group="snaps")
            assert list(snaps.step.values[:len(steps["snaps"])]) == steps["snaps"]
            taken.append(("snaps", int(snaps.step[-1]), snaps.u.values[-1]))
        polls += 1
        time.sleep(0.01)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    with open_reader(path) as reader:
        final = reader.captures("snaps")
        assert reader.status() == "complete"
    index = {int(s): i for i, s in enumerate(final.steps)}
    assert len({step for _, step, _ in taken}) > 1  # the run went on while polled
    for _, step, value in taken:
        assert_bitwise(value, final.arrays["u"][index[step]])


def test_stop_asks_a_running_zarr_run_to_stop_and_resume_finishes_it(reference, in_tmp,
                                                                    capsys):
    ref, _ = reference
    (in_tmp / "s.yaml").write_text(SCENARIO)
    proc = _reporting(in_tmp, "run")
    assert proc.stdout is not None
    proc.stdout.readline()  # it writes
    assert main(["stop", "run.zarr", "--wait"]) == 0
    assert "stopped: continue it with `simkit resume run.zarr`" in capsys.readouterr().out
    proc.communicate(timeout=120)
    with open_reader("run.zarr") as reader:
        assert reader.status() == schema.STATUS_INTERRUPTED
        assert reader.whole_counts() == reader.lengths()
    _assert_prefix_of(_contents(in_tmp / "run.zarr"), ref)
    assert simkit.resume("run.zarr").step == 2400
    got = _contents(in_tmp / "run.zarr")
    for name in STREAMS:
        for var, value in ref[name].items():
            assert_bitwise(got[name][var], value)
