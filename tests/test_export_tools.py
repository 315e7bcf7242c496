"""Issue 19: exports that CF checkers and cdo read (items 5, 6), TensorBoard exports that replace
an earlier one (item 13), the temporaries of killed commands (item 23), and one-line errors with
the documented exit codes for files that cannot be read (items 20, 24)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

import simkit
from conftest import heat_scenario
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
