"""Shared fixtures: a backend fixture that skips a missing backend locally but fails in CI."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=int(os.environ.get("SIMKIT_EXAMPLES", "200")),
                          deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

BACKENDS = ("numpy", "jax", "torch")
REQUIRE_BACKENDS = os.environ.get("SIMKIT_REQUIRE_BACKENDS") == "1"
# Strict dtype promotion in tests: JAX raises on implicit promotions inside solver code.
os.environ.setdefault("JAX_NUMPY_DTYPE_PROMOTION", "strict")
# The tests' own solvers are named `fixture_solvers:Name`, an import a user must allow; the
# refusal itself is tested with this variable removed (tests/test_fix_input.py).
os.environ.setdefault("SIMKIT_ALLOW_IMPORT", "1")


def require_backend(name: str) -> None:
    """Skip when the backend is missing, unless CI asks for every backend."""
    module = {"numpy": "numpy", "jax": "jax", "torch": "torch"}[name]
    if importlib.util.find_spec(module) is None:
        if REQUIRE_BACKENDS:
            pytest.fail(f"backend {name} is not installed but SIMKIT_REQUIRE_BACKENDS=1")
        pytest.skip(f"backend {name} is not installed")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return request.param


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside a fresh directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def heat_scenario(**overrides) -> dict:
    """A small heat scenario as data."""
    data = {
        "solver": "heat2d",
        "params": {"diffusivity": 1.0, "shape": [24, 20], "spacing": 1.0},
        "initial": {"kind": "noise", "amplitude": 1.0},
        "steps": 12,
        "seed": 3,
        "outputs": {"snap": {"every": 3, "fields": ["u"]},
                    "early": {"at": [2, 5, 8], "fields": ["u"]},
                    "diag": {"every": 1, "diagnostics": ["energy", "heat", "max_abs"]}},
        "output": "out.nc",
    }
    for key, value in overrides.items():
        if key in ("params", "initial") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def lorenz_scenario(**overrides) -> dict:
    data = {
        "solver": "lorenz63",
        "params": {"trajectories": 5},
        "initial": {"spread": 0.5},
        "steps": 200,
        "dt": 0.01,
        "seed": 1,
        "outputs": {"orbits": {"every": 50, "fields": "all"}},
        "output": "lorenz.nc",
    }
    data.update(overrides)
    return data


def assert_bitwise(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()
