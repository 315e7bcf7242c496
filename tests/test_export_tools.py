"""Issue 19: exports that CF checkers and cdo read (items 5, 6), TensorBoard exports that replace
an earlier one (item 13), the temporaries of killed commands (item 23), and one-line errors with
the documented exit codes for files that cannot be read (items 20, 24)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

import simkit
from conftest import heat_scenario, require_backend
from simkit.io import export_stream, schema
from simkit.solver import available_solvers

SCENARIOS = Path(__file__).parent.parent / "scenarios"

#: The checker's command: beside this interpreter (a virtual environment) or on PATH.
_CHECKER = next((str(p) for p in (Path(sys.executable).parent / "compliance-checker",)
                 if p.exists()), None) or shutil.which("compliance-checker")
_CDO = shutil.which("cdo")


def _simkit(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simkit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, **kwargs)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """The command run in this process (the tests' directory is the current one)."""
    from simkit.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _tiny_run(solver: str, output: str) -> Path:
    """A few steps of ``solver`` on a small grid, from the first scenario that uses it."""
    for path in sorted(SCENARIOS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data["solver"] == solver:
            break
    else:
        pytest.fail(f"no scenario uses {solver}")
    for key in ("until", "dt"):
        data.pop(key, None)
    params = data.setdefault("params", {})
    if "shape" in params:
        params["shape"] = [12, 12]
    if "bodies" in params:
        params["bodies"] = min(params["bodies"], 8)
    if "trajectories" in params:
        params["trajectories"] = 3
    data.update(steps=4, output=output, outputs={"s": {"every": 2}})
    return simkit.run(data).path


@pytest.mark.skipif(_CHECKER is None, reason="compliance-checker not installed")
def test_every_solvers_export_passes_the_cf_1_11_checker_without_errors(in_tmp):
    flats = []
    for solver in available_solvers():
        run = _tiny_run(solver, f"{solver}.nc")
        flats.append(str(export_stream(run, "s", f"{solver}_flat.nc")))
    proc = subprocess.run([_CHECKER, "--test", "cf:1.11", *flats], capture_output=True,
                          text=True)
    # One report per file; warnings (recommendations) are allowed, errors are not.
    assert proc.stdout.count("IOOS Compliance Checker Report") == len(flats), proc.stdout
    assert "Errors" not in proc.stdout, proc.stdout
    with netCDF4.Dataset("lorenz63_flat.nc") as ds:  # dimensionless time: said so
        time = ds["time"]
        assert (time.units, time.standard_name, time.axis) == \
            ("seconds since 1970-01-01 00:00:00", "time", "T")
        assert time.simkit_time_units == "1" and "counted here as seconds" in time.long_name


@pytest.mark.skipif(_CDO is None, reason="cdo not installed")
def test_cdo_reads_the_dates_and_values_of_an_export(in_tmp):
    # dt 0.25 and a capture every 4 steps: whole seconds, which cdo's timestamps resolve.
    run = simkit.run(heat_scenario(dt=0.25, outputs={"snap": {"every": 4, "fields": ["u"]}}))
    flat = export_stream(run.path, "snap", "flat.nc")
    stamps = subprocess.run([_CDO, "-s", "showtimestamp", str(flat)], capture_output=True,
                            text=True)
    assert stamps.returncode == 0 and stamps.stderr == "", stamps.stderr
    assert stamps.stdout.split() == ["1970-01-01T00:00:00", "1970-01-01T00:00:01",
                                     "1970-01-01T00:00:02", "1970-01-01T00:00:03"]
    info = subprocess.run([_CDO, "infon", str(flat)], capture_output=True, text=True)
    assert info.returncode == 0 and "Warning" not in info.stderr, info.stderr
    assert "Unsupported" not in info.stderr + info.stdout
    u = np.asarray(netCDF4.Dataset(run.path)["snap"]["u"][:])
    rows = [line.split() for line in info.stdout.splitlines() if line.rstrip().endswith(": u")]
    assert [tuple(row[2:4]) for row in rows] == [("1970-01-01", f"00:00:0{k}") for k in range(4)]
    # Columns: index : date time level gridsize miss : minimum mean maximum : name
    np.testing.assert_allclose([float(row[8]) for row in rows], u.min(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose([float(row[10]) for row in rows], u.max(axis=(1, 2)), rtol=1e-4)
    steps = [line.split() for line in info.stdout.splitlines()
             if line.rstrip().endswith(": step")]
    assert [float(row[-3]) for row in steps] == [0.0, 4.0, 8.0, 12.0]


def _torn(path: Path, stream: str = "snap") -> None:
    """A capture's data written and its step not yet, as a writer dying between the two leaves."""
    with netCDF4.Dataset(path, "a") as ds:
        group = ds[stream]
        n = len(group.dimensions[schema.STEP_DIM])
        group["u"][n] = np.ones(group["u"].shape[1:])
        assert np.ma.is_masked(group[schema.STEP][n])


def test_inspect_shows_the_whole_captures_of_a_file_with_a_torn_one(in_tmp):
    path = simkit.run(heat_scenario()).path
    _torn(path)
    proc = _simkit("inspect", path, cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    assert "stream snap: u; steps 0..12 every 3 (5), time 0..2.4; 1 torn or corrupt after " \
           "them (`simkit recover` drops it)" in proc.stdout
    assert "stream diag: energy heat max_abs; steps 0..12 every 1 (13), time 0..2.4\n" \
        in proc.stdout


def _bad_copies(path: Path, where: Path) -> list[Path]:
    """Truncated, bit-flipped and non-NetCDF files, as a hostile user hands them over."""
    data = path.read_bytes()
    rng = np.random.default_rng(5)
    made = {f"cut{k}.nc": data[:len(data) * k // 10] for k in (1, 5, 9)}
    made["cut99.nc"] = data[:-100]
    for k in range(4):
        flipped = bytearray(data)
        for i in rng.integers(0, len(data), 40):
            flipped[i] ^= 1 << int(rng.integers(8))
        made[f"flip{k}.nc"] = bytes(flipped)
    made.update({"text.nc": b"solver: heat2d\n", "empty.nc": b"",
                 "png.nc": b"\x89PNG\r\n\x1a\n" + bytes(100)})
    for name, content in made.items():
        (where / name).write_bytes(content)
    return [where / name for name in made]


def test_plot_of_truncated_flipped_or_foreign_files_is_bad_input(in_tmp, capsys):
    path = simkit.run(heat_scenario()).path
    bad = _bad_copies(path, in_tmp)
    assert len(bad) == 11
    for file in bad:
        code, _, err = _main(capsys, "plot", file.name, "--field", "u", "-o", "u.png")
        assert code == 2, (file.name, err)
        assert err.startswith(f"simkit: error: {file.name}: expected a NetCDF file written by "
                              "simkit, given ")
        assert err.count("\n") == 1, err
    assert not (in_tmp / "u.png").exists()
    # A whole file's unreadable data (a corrupt chunk) is said the same way from Python.
    from simkit.errors import ScenarioError
    from simkit.io import open_run_tree

    with pytest.raises(ScenarioError, match=r"out.nc: expected a NetCDF file written by "
                                            r"simkit, given one that cannot be read \(boom\)"), \
            open_run_tree(path):
        raise RuntimeError("boom")


@pytest.mark.parametrize("attribute", [b"simkit_dtype", b"history"])
def test_a_file_with_a_corrupt_attribute_is_bad_input_for_every_reader(attribute, in_tmp,
                                                                        capsys):
    """A bit flipped in an attribute's header: netCDF raises AttributeError ("Can't open HDF5
    attribute") when the attributes are listed, which every reader showed raw with exit 1."""
    data = bytearray(simkit.run(heat_scenario()).path.read_bytes())
    data[data.find(attribute) - 4] ^= 0x40
    (in_tmp / "bad.nc").write_bytes(bytes(data))
    for command in (["inspect", "bad.nc"], ["plot", "bad.nc", "--field", "u", "-o", "u.png"],
                    ["export", "bad.nc", "--stream", "snap", "-o", "flat.nc"],
                    ["tensorboard", "bad.nc", "tb"], ["recover", "bad.nc"],
                    ["resume", "bad.nc"], ["watch", "bad.nc"]):
        code, _, err = _main(capsys, *command)
        assert (code, err) == (2, "simkit: error: bad.nc: expected a NetCDF file written by "
                                  "simkit, given one that cannot be read (NetCDF: Can't open "
                                  "HDF5 attribute)\n"), command


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_export_removes_temporaries_of_dead_exports_and_says_a_missing_group(in_tmp, capsys):
    path = simkit.run(heat_scenario()).path
    host, dead = socket.gethostname(), _dead_pid()
    stale = in_tmp / f".flat.nc.{host}.{dead}.0.tmp"  # what a killed export leaves
    live = in_tmp / f".flat.nc.{host}.{os.getpid()}.99.tmp"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"x")
    code, _, err = _main(capsys, "export", path, "--stream", "snap", "-o", "flat.nc")
    assert code == 0, err
    assert not stale.exists() and live.exists()
    with netCDF4.Dataset(path, "a") as ds:  # streams that name a group the file lacks
        ds.setncattr(schema.ATTR_STREAMS, "snap early diag lost")
    assert _main(capsys, "export", path, "--stream", "snap", "-o", "again.nc")[::2] == (
        2, "simkit: error: out.nc: expected a NetCDF file written by simkit, given one without "
           "the group 'lost' its streams name\n")
    assert sorted(p.name for p in in_tmp.iterdir()) == [live.name, "flat.nc", "out.nc"]


def test_export_onto_a_full_disk_says_disk_full(in_tmp):
    data = heat_scenario(params={"shape": [64, 64]}, steps=40,
                         outputs={"snap": {"every": 1, "fields": ["u"]}})
    path = simkit.run(data).path
    limit = 256 << 10  # the stream holds 41 x 32 KiB

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _simkit("export", path, "--stream", "snap", "-o", "flat.nc", cwd=in_tmp,
                   preexec_fn=small_disk)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and "HDF error" not in proc.stderr
    assert proc.stderr.startswith("simkit: error: disk full writing .flat.nc.")
    assert f"(file size limit of {limit} bytes reached); flat.nc is not written; free space, " \
           "then run the command again" in proc.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.nc"]


def test_recover_and_resume_remove_the_copies_of_killed_ones(in_tmp, capsys):
    data = heat_scenario(outputs={"snap": {"every": 3, "fields": "all"}})
    path = simkit.run(data).path
    copies = [in_tmp / f".out.nc.{_dead_pid()}.recover.tmp" for _ in range(2)]
    live = in_tmp / f".out.nc.{os.getppid()}.recover.tmp"  # a live process's
    copies[0].write_bytes(b"x")
    live.write_bytes(b"x")
    code, _, err = _main(capsys, "recover", path)  # nothing torn: no rewrite, still cleaned
    assert code == 0, err
    assert not copies[0].exists() and live.exists()
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)  # as a killed run leaves it
    copies[1].write_bytes(b"x")
    code, _, err = _main(capsys, "resume", path, "-q")
    assert code == 0, err
    assert not copies[1].exists() and live.exists()
    assert sorted(p.name for p in in_tmp.iterdir()) == [live.name, "out.nc"]



def _event_counts(logdir: Path) -> dict[str, int]:
    """How many events each tag has in the event files under ``logdir``."""
    from test_summaries import _events

    counts: dict[str, int] = {}
    for event in _events(logdir):
        for value in event.summary.value:
            counts[value.tag] = counts.get(value.tag, 0) + 1
    return counts


def test_tensorboard_twice_replaces_the_earlier_export_of_the_same_file(in_tmp, capsys):
    require_backend("tensorboardX")
    from test_summaries import _recorded_summaries

    _recorded_summaries("r.nc")
    _recorded_summaries("other.nc")
    assert _main(capsys, "tensorboard", "r.nc", "logs")[:2] == (0, "logs\n")
    once = _event_counts(in_tmp / "logs")
    assert once["s/loss"] == 13 and once["s/w_histogram"] == 13 and once["f/w"] == 4
    time.sleep(1.1)  # event files are named by the second they were made in
    assert _main(capsys, "tensorboard", "r.nc", "logs")[0] == 0
    assert _event_counts(in_tmp / "logs") == once  # not 26 per tag
    assert len(list((in_tmp / "logs").iterdir())) == 1
    # Another file's export beside it is its own, and stays.
    assert _main(capsys, "tensorboard", "other.nc", "logs")[0] == 0
    assert _main(capsys, "tensorboard", "r.nc", "logs")[0] == 0
    assert _event_counts(in_tmp / "logs") == {tag: 2 * n for tag, n in once.items()}
    assert len(list((in_tmp / "logs").iterdir())) == 2
    assert sorted(p.name for p in in_tmp.iterdir()) == ["logs", "other.nc", "r.nc"]


def test_tensorboard_refuses_a_logdir_that_is_a_file_or_fifo_and_cleans_up(in_tmp, capsys):
    require_backend("tensorboardX")
    from test_summaries import _recorded_summaries

    _recorded_summaries("r.nc")
    Path("notes.txt").write_text("mine")
    os.mkfifo("pipe")
    for name, kind in (("notes.txt", "a regular file"), ("pipe", "a FIFO")):
        assert _main(capsys, "tensorboard", "r.nc", name)[::2] == (
            2, f"simkit: error: {name}: logdir: expected a directory for the event files, "
               f"given {kind}\n")
    assert Path("notes.txt").read_text() == "mine"
    # A killed export's directory of events beside the logdir goes; a live one's stays.
    host = socket.gethostname()
    stale = in_tmp / f".logs.{host}.{_dead_pid()}.0.tmp"
    live = in_tmp / f".logs.{host}.{os.getppid()}.0.tmp"
    for directory in (stale, live):
        directory.mkdir()
        (directory / "events.out.tfevents.1.x").write_bytes(b"x")
    assert _main(capsys, "tensorboard", "r.nc", "logs")[0] == 0
    assert not stale.exists() and live.exists()


def test_tensorboard_of_empty_arrays_and_non_finite_values(in_tmp, capsys):
    require_backend("tensorboardX")
    fields = ["empty", "none", "image", "partly", "v"]
    with simkit.record("r.nc", {"s": {"every": 1, "fields": fields,
                                      "diagnostics": ["loss"]}}) as rec:
        for i in range(3):
            v = np.array([1.0, np.nan, np.inf, 2.0]) if i else np.full(4, np.nan)
            rec.step(i, empty=np.zeros((0, 3)), none=np.zeros((0,)), image=np.full((4, 3), np.nan),
                     partly=np.where(np.arange(12).reshape(4, 3) % 2, np.inf, float(i)),
                     v=v, loss=float("nan") if i == 1 else float(i))
    code, _, err = _main(capsys, "tensorboard", "r.nc", "logs")
    assert code == 0, err
    from test_summaries import _events

    seen: dict[str, dict[int, object]] = {}
    for event in _events(in_tmp / "logs"):
        for value in event.summary.value:
            seen.setdefault(value.tag, {})[event.step] = value
    assert "s/empty" not in seen and "s/none" not in seen  # nothing to draw
    assert sorted(seen["s/image"]) == [0, 1, 2] and sorted(seen["s/partly"]) == [0, 1, 2]
    assert sorted(seen["s/v"]) == [1, 2]  # no finite value at step 0: no histogram there
    assert (seen["s/v"][1].histo.num, seen["s/v"][1].histo.sum) == (2, 3.0)
    assert [seen["s/loss"][k].simple_value for k in (0, 2)] == [0.0, 2.0]
    assert np.isnan(seen["s/loss"][1].simple_value)


def test_observations_with_a_torn_capture_are_their_whole_captures(in_tmp):
    from simkit.autodiff import misfit
    from simkit.errors import ScenarioError

    simkit.run(heat_scenario(dt=0.2, steps=8, output="truth.nc",
                             outputs={"snap": {"every": 2, "fields": ["u"]}}))
    _torn(in_tmp / "truth.nc")
    objective = misfit("truth.nc", "snap")
    assert objective.steps.tolist() == [0, 2, 4, 6, 8]
    with netCDF4.Dataset("truth.nc") as ds:
        np.testing.assert_array_equal(objective.observations["u"], ds["snap"]["u"][:5])
    with pytest.raises(ScenarioError, match=r"misfit.steps: expected steps the observations "
                                            r"hold, given 10"):
        misfit("truth.nc", "snap", steps=[2, 10])


def test_a_copy_that_does_not_fit_leaves_the_run_file_unchanged_and_says_so(in_tmp, monkeypatch):
    import errno
    import importlib
    import types

    from simkit.errors import DiskFullError
    from simkit.io import rewrite

    recover_module = importlib.import_module("simkit.io.recover")

    path = simkit.run(heat_scenario(outputs={"snap": {"every": 3, "fields": "all"}})).path
    before = path.read_bytes()
    real = shutil.disk_usage
    monkeypatch.setattr(recover_module, "shutil", types.SimpleNamespace(
        disk_usage=lambda where: real(where)._replace(free=0)))
    with pytest.raises(DiskFullError, match=r"^disk full writing \S+\.recover\.tmp \(0\.0 MiB "
                                            r"free, the copy needs about [0-9.]+ MiB\); out\.nc "
                                            r"is unchanged; free space, then run the command "
                                            r"again$"):
        rewrite(path, {"snap": 1})
    monkeypatch.setattr(recover_module, "shutil", shutil)

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recover_module, "copy_run", no_space)
    with pytest.raises(DiskFullError, match=r"; out\.nc is unchanged; free space, then run the "
                                            r"command again$"):
        rewrite(path, {"snap": 1})
    assert path.read_bytes() == before
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.nc"]
