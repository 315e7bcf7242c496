"""Backends: NumPy (the reference), JAX and PyTorch, each imported only when asked for."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from simkit.backends._base import DEVICES, DTYPES, AbstractBackend
from simkit.errors import ScenarioError, did_you_mean

BACKENDS = {"numpy": "NumpyBackend", "jax": "JaxBackend", "torch": "TorchBackend"}
_EXTRA_MODULES = {"jax": ("jax", "jaxlib"), "torch": ("torch",)}


_CACHE: dict[tuple, AbstractBackend] = {}


def get_backend(name: str, device: str = "cpu", dtype: str = "float64", **options: Any
                ) -> AbstractBackend:
    """The backend ``name`` on ``device`` with ``dtype``, one instance per process, so what it
    compiled is reused by later runs.

    Raises:
        ScenarioError: for an unknown or uninstalled backend (naming the extra to install), or a
            device the backend cannot reach.
    """
    if name not in BACKENDS:
        raise ScenarioError(f"unknown backend{did_you_mean(name, BACKENDS)}; expected one of "
                            f"{', '.join(BACKENDS)}, given {name!r}", key="backend")
    try:
        module = importlib.import_module(f"simkit.backends.{name}")
    except ImportError as error:
        if error.name and error.name.split(".")[0] in _EXTRA_MODULES.get(name, ()):
            raise ScenarioError(
                f"expected an installed {name}: install it with pip install 'simkit[{name}]', "
                f"given a Python without the {error.name} package", key="backend") from None
        raise
    key = (name, device, dtype, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = getattr(module, BACKENDS[name])(device, dtype, **options)
    return _CACHE[key]


def installed_backends() -> list[str]:
    """The backends whose library imports here."""
    found = ["numpy"]
    for name, modules in _EXTRA_MODULES.items():
        if importlib.util.find_spec(modules[0]) is not None:
            found.append(name)
    return found


__all__ = ["BACKENDS", "DEVICES", "DTYPES", "AbstractBackend", "get_backend", "installed_backends"]
