"""The benchmark harness (benchmarks/run.py, benchmarks/cases.py) says only what it measured and
leaves nothing behind."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"simkit_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.mark.parametrize("measured", [-1.336, 0.0, float("nan"), float("inf")])
def test_a_target_measured_within_the_noise_is_not_met(measured):
    # torch_compile --quick on a busy machine: ms/step of runs of 2k minus runs of k steps came
    # out negative, and "-1.34 <= 1.2: met" was printed.
    cases = _load("cases")
    outcome: dict = {}
    cases._target(outcome, "compiled / eager", measured, 1.2)
    assert outcome == {"target compiled / eager":
                       f"{measured:.3g}: not measured (within the machine's noise)"}


def test_a_target_measured_is_met_or_not():
    cases = _load("cases")
    outcome: dict = {}
    cases._target(outcome, "a", 0.9, 1.2)
    cases._target(outcome, "b", 1.3, 1.2)
    cases._target(outcome, "c", 5e6, 1e6, below=False)
    assert outcome == {"target a": "0.9 <= 1.2: met", "target b": "1.3 <= 1.2: NOT met",
                       "target c": "5e+06 >= 1e+06: met"}


def test_a_benchmark_leaves_nothing_in_the_temporary_folder(tmp_path, monkeypatch):
    run = _load("run")
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))

    def bench(quick: bool) -> dict:
        work = Path(tempfile.mkdtemp())  # as every benchmark keeps its runs
        (work / "run.nc").write_bytes(b"x" * 1000)
        return {"quick": quick}

    def skipped(quick: bool) -> dict:
        tempfile.mkdtemp()
        raise run.cases.Skip("py-pde not installed")

    assert run.run_one(bench, True) == {"quick": True}
    assert run.run_one(skipped, False) == {"skipped": "py-pde not installed"}
    assert list(folder.iterdir()) == []
    assert tempfile.tempdir == str(folder)
