"""The JAX backend: one jitted loop per step function, compiled once and reused for every
segment length (trip count, time step, start step and time are passed as data)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simkit._types import StepFn, WatchFn
from simkit.backends._base import (
    STEP_DTYPE,
    TIME_DTYPE,
    AbstractBackend,
    check_options,
    eager_loop,
    host_copy,
    no_gpu,
    weakly,
)
from simkit.backends._block import BlockPlan, BlockProgram, BlockResult
from simkit.backends._jax_block import (
    compile_block,
    compile_ensemble_block,
    run_block,
    run_ensemble_block,
)

# float64 needs x64 (and the contract's int64 step and float64 time, whatever the state's dtype).
jax.config.update("jax_enable_x64", True)


def _gpu_devices() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def _time_at(time0, i, dt64):
    # Simulated time is float64 whatever the state's dtype, computed as the host computes it.
    return time0 + jnp.asarray(i, dtype=jnp.float64) * dt64


def _plain_loop(step_fn: StepFn, dtype: Any):
    def run(fields, n, dt64, step0, time0):
        dt = dt64.astype(dtype)

        def body(i, f):
            return step_fn(f, dt, step0 + i, _time_at(time0, i, dt64))

        return jax.lax.fori_loop(jnp.zeros((), jnp.int64), n, body, fields)

    return jax.jit(run)


def _watched_loop(step_fn: StepFn, watch: WatchFn, dtype: Any):
    def run(fields, n, dt64, step0, time0, enabled):
        dt = dt64.astype(dtype)

        def cond(carry):
            i, _, fired, _ = carry
            return (i < n) & ~jnp.any(fired)

        def body(carry):
            i, f, _, prev = carry
            f = step_fn(f, dt, step0 + i, _time_at(time0, i, dt64))
            now = watch(f)
            return i + 1, f, now & ~prev & enabled, now

        prev = watch(fields)
        start = (jnp.zeros((), dtype=jnp.int64), fields, jnp.zeros_like(prev), prev)
        i, f, fired, _ = jax.lax.while_loop(cond, body, start)
        return f, i, fired

    return jax.jit(run)


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
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def device(self) -> str:
        return f"{self._device.platform}:{self._device.id}"

    def asarray(self, host: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(host, dtype=self.dtype), self._device)

    def scalars(self, dt: float, step: int, time: float) -> tuple[jax.Array, ...]:
        return tuple(jax.device_put(np.asarray(value, dtype=dtype), self._device)
                     for value, dtype in ((dt, self.dtype), (step, STEP_DTYPE),
                                          (time, TIME_DTYPE)))

    def _table(self, fn: Any) -> dict[str, Any]:
        # What was compiled for ``fn``: dropped with ``fn`` (every entry calls it through
        # ``weakly``, so nothing here keeps its own key alive).
        return self._compiled.setdefault(fn, {})

    def compiled_loop(self, step_fn: StepFn, watch: WatchFn | None = None):
        """The jitted loop for ``step_fn`` (and ``watch``), built once per backend and kept as
        long as both functions live."""
        table = self._table(step_fn)
        if watch is None:
            if "loop" not in table:
                table["loop"] = _plain_loop(weakly(step_fn), self.dtype)
            return table["loop"]
        watched = table.setdefault("watched", weakref.WeakKeyDictionary())
        if watch not in watched:
            watched[watch] = _watched_loop(weakly(step_fn), weakly(watch), self.dtype)
        return watched[watch]

    def advance(self, step_fn: StepFn, fields: Mapping[str, jax.Array], n: int, dt: float,
                step0: int, time0: float, watch: WatchFn | None = None,
                enabled: np.ndarray | None = None) -> tuple[dict[str, jax.Array], int, Any]:
        # NumPy scalars of fixed dtypes: one trace serves every segment, and the loop hands the
        # stages dt, step and time with the types of the backend contract.
        args = (dict(fields), np.int64(n), np.float64(dt), np.int64(step0), np.float64(time0))
        if not self.compile:
            with jax.disable_jit():
                if watch is None:
                    return eager_loop(step_fn, fields, n, dt, step0, time0, self.scalars), n, None
                f, i, fired = _watched_loop(step_fn, watch, self.dtype)(
                    *args, jnp.asarray(enabled, dtype=bool))
                return f, int(i), np.asarray(fired)
        if watch is None:
            return self.compiled_loop(step_fn)(*args), n, None
        f, i, fired = self.compiled_loop(step_fn, watch)(*args, np.asarray(enabled, dtype=bool))
        return f, int(i), np.array(fired)

    def ensemble_runner(self, program_for: Callable[[jax.Array], BlockProgram]) -> Any:
        return compile_ensemble_block(program_for, self.dtype)

    def run_ensemble_block(self, runner: Any, fields: Mapping[str, jax.Array],
                           values: jax.Array, plan: BlockPlan) -> BlockResult:
        return run_ensemble_block(runner, dict(fields), values, plan)

    def block_runner(self, program: BlockProgram) -> Any:
        if not self.compile:
            return program
        return compile_block(program, self.dtype)

    def run_block(self, runner: Any, fields: Mapping[str, jax.Array], plan: BlockPlan) -> Any:
        if isinstance(runner, BlockProgram):  # compile=False: the eager loop, for debugging
            with jax.disable_jit():
                return super().run_block(runner, fields, plan)
        return run_block(runner, fields, plan)

    def call(self, fn: Any, *args: Any) -> Any:
        if not self.compile:
            return fn(*args)
        table = self._table(fn)
        if "call" not in table:
            table["call"] = jax.jit(weakly(fn))
        return table["call"](*args)

    def synchronize(self, arrays: Any) -> None:
        jax.block_until_ready(arrays)

    def to_host(self, arrays: Mapping[str, jax.Array],
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        for value in arrays.values():
            if isinstance(value, jax.Array):  # (the eager loop's buffers are NumPy already)
                value.copy_to_host_async()
        out = out or {}
        return {name: host_copy(value, out.get(name)) for name, value in arrays.items()}
