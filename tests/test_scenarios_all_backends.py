"""Every shipped scenario runs from the command line on every backend (shortened to a few steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
import yaml

from conftest import require_backend
from simkit.cli import main

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch", "torch-compiled"])
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_runs_from_the_cli(in_tmp, path, backend, capsys, monkeypatch):
    """``torch-compiled`` is PyTorch with ``compile: true`` on the CPU (the GPU's default):
    every solver must trace under ``torch.compile``, constants and inner loops included. The
    graphs are traced and run by ``aot_eager`` here (inductor's C++ build of 14 scenarios would
    take minutes; tests/test_backend_paths.py holds inductor's runs of every solver to eager)."""
    name = backend.removesuffix("-compiled")
    require_backend(name)
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")
    data = yaml.safe_load(path.read_text())
    data.pop("until", None)
    data.pop("stop_when", None)
    data["steps"] = 3
    if backend.endswith("-compiled"):
        data["compile"] = True
    (in_tmp / path.name).write_text(yaml.safe_dump(data))
    code = main(["run", path.name, "--backend", name, "-o", "out.nc", "-q"])
    assert code == 0, capsys.readouterr().err
    with xr.open_datatree(in_tmp / "out.nc") as tree:
        assert tree.attrs["simkit_backend"] == name
        assert int(tree.to_dataset().step) == 3
        assert set(tree.children) == set(data["outputs"])
