"""The NumPy backend: the reference, a plain loop on the CPU."""

from __future__ import annotations

from collections.abc import Mapping

import array_api_compat.numpy as xp
import numpy as np

from simkit._types import StepFn
from simkit.backends._base import AbstractBackend, check_options, host_copy, no_gpu


class NumpyBackend(AbstractBackend):
    name = "numpy"

    def __init__(self, device: str = "cpu", dtype: str = "float64",
                 compile: bool | None = None) -> None:  # noqa: A002 - nothing to compile
        check_options(self.name, device, dtype)
        if device == "gpu":
            raise no_gpu(self.name)
        self.dtype = getattr(xp, dtype)

    @property
    def device(self) -> str:
        return "cpu"

    def asarray(self, host: np.ndarray) -> np.ndarray:
        return np.array(host, dtype=self.dtype, copy=True)

    def advance(self, step_fn: StepFn, fields: Mapping[str, np.ndarray], n: int, dt: float
                ) -> dict[str, np.ndarray]:
        out = dict(fields)
        for _ in range(n):
            out = step_fn(out, dt)
        return out

    def to_host(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: host_copy(value) for name, value in arrays.items()}
