"""The JAX backend: one jitted ``fori_loop`` per step function, compiled once and reused for every
segment length (the trip count and the time step are passed as data)."""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from simkit._types import StepFn
from simkit.backends._base import AbstractBackend, check_options, host_copy, no_gpu

# float64 needs x64; float32 states stay float32 because scalars are weakly typed.
jax.config.update("jax_enable_x64", True)


def _gpu_devices() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


class JaxBackend(AbstractBackend):
    name = "jax"

    def __init__(self, device: str = "cpu", dtype: str = "float64",
                 compile: bool | None = None) -> None:  # noqa: A002
        """``compile=False`` runs the step eagerly, one dispatch per operation (debugging)."""
        check_options(self.name, device, dtype)
        gpus = _gpu_devices() if device in ("gpu", "auto") else []
        if device == "gpu" and not gpus:
            raise no_gpu(self.name)
        self._device = gpus[0] if gpus else jax.devices("cpu")[0]
        self.dtype = getattr(jnp, dtype)
        self.compile = compile is not False
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def device(self) -> str:
        return f"{self._device.platform}:{self._device.id}"

    def asarray(self, host: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(host, dtype=self.dtype), self._device)

    def compiled_loop(self, step_fn: StepFn):
        """The jitted ``(fields, n, dt) -> fields`` loop for ``step_fn``, built once."""
        loop = self._loops.get(step_fn)
        if loop is None:
            def run(fields, n, dt):
                return jax.lax.fori_loop(0, n, lambda _, f: step_fn(f, dt), fields)

            loop = jax.jit(run)
            self._loops[step_fn] = loop
        return loop

    def advance(self, step_fn: StepFn, fields: Mapping[str, jax.Array], n: int, dt: float
                ) -> dict[str, jax.Array]:
        if not self.compile:
            out = dict(fields)
            with jax.disable_jit():
                for _ in range(n):
                    out = step_fn(out, dt)
            return out
        # Python scalars are weakly typed: a float32 state stays float32 and one trace serves all.
        return self.compiled_loop(step_fn)(dict(fields), int(n), float(dt))

    def to_host(self, arrays: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
        for value in arrays.values():
            value.copy_to_host_async()
        return {name: host_copy(value) for name, value in arrays.items()}
