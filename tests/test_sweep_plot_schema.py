"""Sweeps on a real Dask LocalCluster, plots, the JSON Schema, validate, warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import require_backend
from simkit.cli import main
from simkit.scenario import SimkitWarning, plan_run

ROOT = Path(__file__).parent.parent


def _base(tmp):
    (tmp / "base.yaml").write_text(yaml.safe_dump({
        "solver": "heat2d", "params": {"shape": [16, 16]}, "steps": 20,
        "outputs": {"snap": {"every": 10, "fields": ["u"]},
                    "diag": {"every": 5, "diagnostics": ["energy"]}}}))


def test_sweep_on_a_local_cluster_combines_members_and_skips_done_ones(in_tmp, capsys):
    _base(in_tmp)
    sweep = {"scenario": "base.yaml", "output": "sweep",
             "parameters": {"params.diffusivity": [0.5, 1.0], "initial.width": [2.0, 4.0]}}
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    assert main(["sweep", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert "members: 4 complete (0 already were), 0 failed" in out
    tree = xr.open_datatree(in_tmp / "sweep" / "combined.nc")
    snap = tree["snap"].to_dataset()
    assert snap.u.dims == ("member", "step", "y", "x") and snap.sizes["member"] == 4
    np.testing.assert_array_equal(snap.diffusivity.values, [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(snap.width.values, [2.0, 4.0, 2.0, 4.0])
    for member in range(4):  # each member ran with its own values
        single = simkit.run("base.yaml", params={"diffusivity": float(snap.diffusivity[member])},
                            initial={"width": float(snap.width[member])},
                            output=f"single{member}.nc")
        np.testing.assert_array_equal(tree.to_dataset().u.sel(member=member).values,
                                      single.state["u"])
    assert main(["sweep", "s.yaml"]) == 0  # a rerun skips what is complete
    assert "members: 4 complete (4 already were), 0 failed" in capsys.readouterr().out


def test_a_failed_member_is_reported_and_the_others_kept(in_tmp, capsys, monkeypatch):
    (in_tmp / "base.yaml").write_text(yaml.safe_dump({
        "solver": "fixture_solvers:Doubling", "steps": 1100, "check_finite": 50,
        "outputs": {"s": {"every": 100}}}))
    sweep = {"scenario": "base.yaml", "output": "sweep", "parameters": {"steps": [10, 1100, 20]},
             "combine": "zip"}
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    # The workers import fixture_solvers; set for this test only.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    assert main(["sweep", "s.yaml"]) == 1
    captured = capsys.readouterr()
    assert "members: 2 complete (0 already were), 1 failed" in captured.out
    assert "member 1 failed: NonFiniteError: non-finite value" in captured.err
    with xr.open_datatree(in_tmp / "sweep" / "combined.nc") as tree:
        assert list(tree.to_dataset().steps.values) == [10, 20]


def test_sweep_finds_the_modules_beside_its_base_scenario(in_tmp, capsys):
    """A diagnostic by reference in a module beside the base scenario, not on the path: found
    when members are planned and when they run on the cluster's workers."""
    (in_tmp / "cfg").mkdir()
    (in_tmp / "cfg" / "sweep_beside.py").write_text(
        "from array_api_compat import array_namespace\n\n\n"
        "def spread(state):\n"
        "    xp = array_namespace(state['u'])\n"
        "    return xp.max(state['u']) - xp.min(state['u'])\n")
    (in_tmp / "cfg" / "base.yaml").write_text(yaml.safe_dump({
        "solver": "heat2d", "params": {"shape": [16, 16]}, "steps": 10,
        "diagnostics": {"spread": "sweep_beside:spread"},
        "outputs": {"diag": {"every": 5, "diagnostics": ["spread"]}}}))
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "cfg/base.yaml", "output": "sweep",
        "parameters": {"params.diffusivity": [0.5, 1.0]}}))
    assert main(["sweep", "s.yaml", "--allow-import"]) == 0, capsys.readouterr().err
    with xr.open_dataset("sweep/member_001.nc", group="diag") as diag:
        assert list(diag.step.values) == [0, 5, 10] and diag.spread.attrs["units"] == "1"


def test_bad_sweep_file_is_one_line_exit_2(in_tmp, capsys):
    _base(in_tmp)
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "o", "parameters": {"params.diffusivity": [1.0, -1.0]}}))
    assert main(["sweep", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "s.yaml: params.diffusivity: member 1 (params.diffusivity=-1.0): expected greater " \
           "than 0" in err
    assert not (in_tmp / "o").exists()


def test_plot_panels_animation_and_diagnostic_line(in_tmp, capsys):
    result = simkit.run({"solver": "heat2d", "params": {"shape": [24, 24]}, "steps": 40,
                         "initial": {"kind": "noise"},
                         "outputs": {"snap": {"every": 10, "fields": ["u"]},
                                     "diag": {"every": 2, "diagnostics": ["energy"]}},
                         "output": "p.nc"})
    assert main(["plot", str(result.path), "--field", "u"]) == 0
    assert main(["plot", "p.nc", "--field", "u", "-o", "anim.gif"]) == 0
    assert main(["plot", "p.nc", "--field", "energy", "-o", "energy.png"]) == 0
    for name, magic in (("p_u.png", b"\x89PNG"), ("anim.gif", b"GIF8"), ("energy.png", b"\x89PNG")):
        data = (in_tmp / name).read_bytes()
        assert data.startswith(magic) and len(data) > 2000, name
    capsys.readouterr()
    assert main(["plot", "p.nc", "--field", "v"]) == 2
    assert "--field: expected a captured field or diagnostic (energy, u), given 'v'" in \
        capsys.readouterr().err


def test_schema_and_validate(in_tmp, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    import tomllib

    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        "simkit.solvers"]
    assert set(shipped) <= set(schema["properties"]["solver"]["examples"])  # more if installed
    heat = next(b for b in schema["allOf"] if b["if"]["properties"]["solver"]["const"] == "heat2d")
    assert "diffusivity" in heat["then"]["properties"]["params"]["properties"]
    import jsonschema

    jsonschema.validate(yaml.safe_load((ROOT / "scenarios/heat2d.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"solver": "heat2d", "params": {"diffusivity": "x"}, "steps": 1},
                            schema)
    assert main(["validate", str(ROOT / "scenarios/heat2d.yaml")]) == 0
    assert "valid (heat2d, numpy, 2000 steps, dt 0.2, streams: snapshots, early, diagnostics)" \
        in capsys.readouterr().out
    assert not (in_tmp / "runs").exists()  # validate writes nothing


def test_questionable_settings_warn(in_tmp):
    with pytest.warns(SimkitWarning, match="below 1e-6 of the run's length"):
        plan_run({"solver": "lorenz63", "dtype": "float32", "dt": 1e-7, "steps": 10_000_000})
    with pytest.warns(SimkitWarning, match=r"outputs.s will write about 2.0 GiB"):
        plan_run({"solver": "heat2d", "params": {"shape": [512, 512]}, "steps": 1000,
                  "outputs": {"s": {"every": 1}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan_run({"solver": "heat2d", "steps": 10})


def test_verbose_logging_reports_the_run(in_tmp):
    (in_tmp / "s.yaml").write_text("solver: heat2d\nparams: {shape: [8, 8]}\nsteps: 3\n")
    proc = subprocess.run([sys.executable, "-m", "simkit", "-v", "run", "s.yaml", "-q"],
                          capture_output=True, text=True, cwd=in_tmp)
    assert proc.returncode == 0
    assert "simkit: INFO: running heat2d on numpy (cpu, float64, not compiled) -> runs/s.nc" in proc.stderr
    assert "finished at step 3" in proc.stderr


def test_vectorized_sweep_matches_separate_runs(in_tmp, capsys):
    require_backend("jax")
    (in_tmp / "base.yaml").write_text(yaml.safe_dump({
        "solver": "heat2d", "backend": "jax", "params": {"shape": [16, 16]},
        "initial": {"kind": "noise"}, "steps": 30, "dt": 0.1,
        "outputs": {"snap": {"every": 10, "fields": ["u"]},
                    "diag": {"every": 5, "diagnostics": ["energy", "max_abs"]}}}))
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "sweep",
        "parameters": {"params.diffusivity": [0.5, 1.0, 2.0]}}))
    assert main(["sweep", "s.yaml", "--vectorize"]) == 0
    assert "members: 3 complete (0 already were), 0 failed" in capsys.readouterr().out
    tree = xr.open_datatree(in_tmp / "sweep" / "combined.nc")
    for member, diffusivity in enumerate([0.5, 1.0, 2.0]):
        single = simkit.run("base.yaml", params={"diffusivity": diffusivity},
                            output=f"single{member}.nc")
        np.testing.assert_allclose(tree.to_dataset().u.sel(member=member).values,
                                   single.state["u"], rtol=1e-13, atol=1e-14)
        with xr.open_dataset(single.path, group="diag") as diag:
            np.testing.assert_allclose(tree["diag"].to_dataset().energy.sel(member=member),
                                       diag.energy.values, rtol=1e-13)


def test_vectorize_refuses_what_cannot_be_batched(in_tmp, capsys):
    _base(in_tmp)  # numpy backend, default dt depends on the swept diffusivity
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({
        "scenario": "base.yaml", "output": "o", "parameters": {"params.diffusivity": [1.0, 2.0]}}))
    assert main(["sweep", "s.yaml", "--vectorize"]) == 2
    err = capsys.readouterr().err
    assert "--vectorize: expected backend jax, given numpy; one dt for every member" in err
