"""Sweeps: a diverging member stops alone on both paths; combine keeps only what shares a
grid."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

from conftest import require_backend
from simkit.cli import main


@pytest.mark.parametrize("path", ["vectorize", "dask"])
def test_a_diverging_member_stops_alone_and_the_others_are_combined(in_tmp, capsys, path):
    require_backend("jax")
    # RK4 on Lorenz-63 is unstable once sigma * dt is past about 2.8: sigma = 150 blows up.
    (in_tmp / "base.yaml").write_text(yaml.safe_dump({
        "solver": "lorenz63", "backend": "jax", "params": {"trajectories": 3},
        "initial": {"spread": 0.1}, "steps": 200, "dt": 0.02, "check_finite": 10,
        "outputs": {"orbit": {"every": 20, "fields": ["x", "y", "z"]},
                    "diag": {"every": 10, "diagnostics": ["energy"]}}}))
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "sweep",
        "parameters": {"params.sigma": [10.0, 150.0, 12.0]}}))
    args = ["sweep", "s.yaml"] + (["--vectorize"] if path == "vectorize" else ["--workers", "1"])
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "members: 2 complete (0 already were), 1 failed" in captured.out
    assert "member 1 failed: " in captured.err
    with xr.open_datatree(in_tmp / "sweep" / "combined.nc") as tree:
        assert list(tree.to_dataset().member.values) == [0, 2]
        assert list(tree.to_dataset().sigma.values) == [10.0, 12.0]
        energy = tree["diag"].to_dataset().energy.values
        assert energy.shape == (2, 21) and np.isfinite(energy).all()
    for member in (0, 2):
        with netCDF4.Dataset(in_tmp / "sweep" / f"member_{member:03d}.nc") as ds:
            assert ds.getncattr("simkit_status") == "complete" and int(ds["step"][...]) == 200
    # The diverged member's file is readable, unfinished, and keeps what it captured.
    with netCDF4.Dataset(in_tmp / "sweep" / "member_001.nc") as ds:
        assert ds.getncattr("simkit_status") != "complete"
        diag = ds["diag"]["energy"][:]
        assert len(diag) >= 1 and np.isfinite(diag).all()
    if path == "vectorize":  # the batch reports as a run of its own would
        assert "member 1 failed: NonFiniteError: non-finite value in field" in captured.err
        with netCDF4.Dataset(in_tmp / "sweep" / "member_001.nc") as ds:
            assert ds.getncattr("simkit_status") == "non-finite"
            last_good = int(ds["step"][...])
            assert 0 < last_good < 200 and last_good == int(ds["diag"]["step"][-1])
            assert all(np.isfinite(ds[name][...]).all() for name in "xyz")
        assert f"the last good state, step {last_good}, is kept" in captured.err
        # A rerun skips the complete members and retries the failed one.
        assert main(args) == 1
        assert "members: 2 complete (2 already were), 1 failed" in capsys.readouterr().out


def test_combine_keeps_only_what_shares_a_grid(in_tmp, capsys):
    require_backend("jax")
    (in_tmp / "base.yaml").write_text(yaml.safe_dump({
        "solver": "heat2d", "backend": "jax", "params": {"shape": [16, 12]},
        "initial": {"kind": "noise"}, "steps": 20, "dt": 0.05,
        "outputs": {"snap": {"every": 10, "fields": ["u"]},
                    "diag": {"every": 5, "diagnostics": ["energy"]}}}))
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "sweep",
        "parameters": {"params.spacing": [1.0, 0.5, 1.0]}}))
    assert main(["sweep", "s.yaml", "--vectorize"]) == 0
    err = capsys.readouterr().err
    assert ("not combined: u, snap/u: grid coordinates differ between members: y (16 values "
            "from 0 to 15 in member 0, 16 values from 0 to 7.5 in member 1); x (12 values from 0 "
            "to 11 in member 0, 12 values from 0 to 5.5 in member 1); read them from the member "
            "files") in err
    with xr.open_datatree(in_tmp / "sweep" / "combined.nc") as tree:
        assert "read them from the member files" in tree.attrs["simkit_not_combined"]
        for group in ("/", "/snap", "/diag"):
            ds = tree[group].to_dataset()
            assert "u" not in ds and "x" not in ds.variables and "y" not in ds.variables
            for var in ds.variables.values():
                if var.dtype.kind == "f":
                    assert np.isfinite(var.values).all(), var.name  # nothing padded
        diag = tree["diag"].to_dataset()
        assert diag.energy.shape == (3, 5)
        for member in range(3):  # what is combined is each member's own
            with xr.open_dataset(in_tmp / "sweep" / f"member_{member:03d}.nc",
                                 group="diag") as own:
                np.testing.assert_array_equal(diag.energy.sel(member=member), own.energy)
