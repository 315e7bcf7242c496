"""Backends agree with NumPy; device/dtype handling; host copies; missing-backend message."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import simkit
from conftest import heat_scenario, lorenz_scenario, require_backend
from simkit.backends import get_backend
from simkit.errors import ScenarioError

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [heat_scenario, lorenz_scenario], ids=["heat2d", "lorenz63"])
def test_final_states_agree_with_numpy(backend, in_tmp, dtype, make):
    steps = 200
    reference = simkit.run(make(dtype="float64", steps=steps, output="ref.nc"))
    result = simkit.run(make(backend=backend, dtype=dtype, steps=steps, output="b.nc"))
    for name, ref in reference.state.items():
        got = result.state[name]
        assert got.dtype == np.dtype(dtype)
        relative = np.abs(got - ref).max() / np.abs(ref).max()
        assert relative <= TOLERANCE[dtype], (name, relative)


def test_to_host_returns_a_copy(backend):
    b = get_backend(backend)
    device = {"u": b.asarray(np.arange(4.0))}
    first = b.to_host(device)
    first["u"][:] = -1.0
    second = b.to_host(device)
    np.testing.assert_array_equal(second["u"], np.arange(4.0))
    assert first["u"].flags.writeable


def test_asarray_places_and_casts(backend):
    b = get_backend(backend, "auto", "float32")
    array = b.asarray(np.ones(3))
    assert str(array.dtype).endswith("float32")
    assert b.device.startswith(("cpu", "cuda", "gpu"))


def test_numpy_has_no_gpu():
    with pytest.raises(ScenarioError, match="expected cpu or auto: the numpy backend sees no GPU"):
        get_backend("numpy", "gpu")


def _library_sees_a_gpu(name: str) -> bool:
    """Whether the library itself reports a GPU, asked directly rather than through simkit."""
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:  # no GPU platform in this jaxlib
        return False


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_gpu_request_is_honoured_with_a_gpu_and_refused_without(name):
    require_backend(name)
    if _library_sees_a_gpu(name):
        assert get_backend(name, "gpu").device.startswith(("cuda", "gpu"))
        assert get_backend(name, "auto").device.startswith(("cuda", "gpu"))
    else:
        with pytest.raises(ScenarioError, match="sees no GPU") as error:
            get_backend(name, "gpu")
        assert error.value.key == "device"
        assert get_backend(name, "auto").device.startswith("cpu")


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_missing_backend_names_the_extra(name):
    code = (f"import sys; sys.modules[{name!r}] = None\n"
            "from simkit.backends import get_backend\n"
            f"get_backend({name!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"pip install 'simkit[{name}]'" in proc.stderr


def test_unknown_backend_suggests():
    with pytest.raises(ScenarioError, match='did you mean "torch"'):
        get_backend("torhc")


# ------------------------------------------------------------------ reverse mode (GradOps)


def test_numpy_does_not_differentiate():
    with pytest.raises(NotImplementedError, match="expected a backend that differentiates"):
        get_backend("numpy").grad_ops()


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_grad_ops_give_the_same_derivatives_on_each_library(name):
    """value_and_grad and vjp over pytrees: closed forms, zeros for an input nothing depends
    on, None for none."""
    require_backend(name)
    backend = get_backend(name)
    ops = backend.grad_ops()
    x, w = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.25, 2.0])
    a = {"x": backend.asarray(x), "unused": backend.asarray(np.ones(2))}
    c = backend.asarray(np.asarray(1.5))

    def f(a, c, nothing):
        return (a["x"] ** 2 * backend.asarray(w)).sum() * c

    value, (da, dc, dnothing) = ops.value_and_grad(f, (a, c, None))
    host = backend.to_host
    assert float(value) == pytest.approx(1.5 * np.sum(w * x**2), rel=1e-15)
    np.testing.assert_allclose(host(da)["x"], 2 * 1.5 * w * x, rtol=1e-15)
    np.testing.assert_array_equal(host(da)["unused"], 0.0)
    assert float(dc) == pytest.approx(np.sum(w * x**2), rel=1e-15)
    assert dnothing is None

    out, pull = ops.vjp(lambda a, c: {"y": a["x"] * c, "z": (a["x"] ** 3).sum()}, a, c)
    np.testing.assert_allclose(host(out)["y"], 1.5 * x, rtol=1e-15)
    seed = {"y": backend.asarray(w), "z": backend.asarray(np.asarray(2.0))}
    da, dc = pull(seed)
    np.testing.assert_allclose(host(da)["x"], 1.5 * w + 2.0 * 3 * x**2, rtol=1e-15)
    np.testing.assert_array_equal(host(da)["unused"], 0.0)
    assert float(dc) == pytest.approx(np.sum(w * x), rel=1e-15)
