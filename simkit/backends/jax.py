"""The JAX backend: one jitted block program per run, compiled once and reused for every block
(trip counts, time steps, start steps and times are passed as data)."""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from simkit.backends._base import (
    COORDINATOR_ENV,
    PROCESS_ID_ENV,
    PROCESSES_ENV,
    STEP_DTYPE,
    TIME_DTYPE,
    AbstractBackend,
    check_options,
    host_copy,
    no_gpu,
    weakly,
)
from simkit.backends._block import BlockPlan, BlockProgram, BlockResult
from simkit.backends._jax_block import (
    block_function,
    compile_block,
    compile_ensemble_block,
    run_block,
    run_ensemble_block,
)
from simkit.backends._jax_cache import configure_compilation_cache
from simkit.errors import ScenarioError

# float64 needs x64 (and the contract's int64 step and float64 time, whatever the state's dtype).
jax.config.update("jax_enable_x64", True)


def initialize_distributed() -> None:
    """Join the run's processes through ``jax.distributed`` when the environment names a
    coordinator (once per process, before JAX looks at its devices)."""
    coordinator = os.environ.get(COORDINATOR_ENV)
    if not coordinator or jax.distributed.is_initialized():
        return
    if coordinator == "auto":
        jax.distributed.initialize()
        return
    values = {}
    for name in (PROCESSES_ENV, PROCESS_ID_ENV):
        text = os.environ.get(name, "")
        if not text.isdigit():
            raise ScenarioError(f"expected {name} as a whole number with {COORDINATOR_ENV} set, "
                                f"given {text!r}", key=name)
        values[name] = int(text)
    jax.distributed.initialize(coordinator, values[PROCESSES_ENV], values[PROCESS_ID_ENV])


def barrier(name: str) -> None:
    """Wait until every process of the run has come here (one process: return at once)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _gpu_devices() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


class JaxBackend(AbstractBackend):
    name = "jax"

    def __init__(self, device: str = "cpu", dtype: str = "float64",
                 compile: bool | None = None,  # noqa: A002
                 mesh: tuple[tuple[str, int], ...] = ()) -> None:
        """``compile=False`` runs the step eagerly, one dispatch per operation (debugging).

        ``mesh`` (devices per dimension, ``(("y", 2), ("x", 2))``) splits every field along those
        of its dimensions over as many devices (of every process, in a multi-process run); the
        compiler inserts the exchanges the stages need."""
        check_options(self.name, device, dtype)
        configure_compilation_cache()
        initialize_distributed()
        gpus = _gpu_devices() if device in ("gpu", "auto") else []
        if device == "gpu" and not gpus:
            raise no_gpu(self.name)
        devices = gpus or jax.devices("cpu")
        self._device = devices[0]
        self.dtype = getattr(jnp, dtype)
        self.compile = compile is not False
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self._mesh: Mesh | None = None
        if self.process_count > 1 and not mesh:
            raise ScenarioError(f"expected mesh or devices in a run of {self.process_count} "
                                f"processes (each holds part of the state), given neither",
                                key="mesh")
        if mesh:
            self._mesh = _make_mesh(mesh, devices)
            self._replicated = NamedSharding(self._mesh, PartitionSpec())

    @property
    def compiled_with(self) -> str | None:
        return "jax.jit" if self.compile else None

    @property
    def device(self) -> str:
        if self._mesh is None:
            return f"{self._device.platform}:{self._device.id}"
        ids = [d.id for d in self._mesh.devices.flat]
        split = " ".join(f"{name}={size}" for name, size in self._mesh.shape.items())
        return f"{self._device.platform}:{','.join(map(str, ids))} (mesh {split})"

    def asarray(self, host: np.ndarray, cast: bool = True) -> jax.Array:
        host = np.asarray(host, dtype=self.dtype if cast else None)
        if self._mesh is not None:
            return _global(host, self._replicated)
        return jax.device_put(host, self._device)

    def place(self, host: np.ndarray, dims: tuple[str, ...]) -> jax.Array:
        if self._mesh is None:
            return self.asarray(host)
        spec = PartitionSpec(*(d if d in self._mesh.axis_names else None for d in dims))
        return _global(np.asarray(host, dtype=self.dtype), NamedSharding(self._mesh, spec))

    def agree(self, value: float) -> float:
        if jax.process_count() == 1:
            return value
        return float(multihost_utils.broadcast_one_to_all(np.float64(value)))

    def scalars(self, dt: float, step: int, time: float) -> tuple[jax.Array, ...]:
        values = ((dt, self.dtype), (step, STEP_DTYPE), (time, TIME_DTYPE))
        if self._mesh is not None:
            return tuple(_global(np.asarray(value, dtype=dtype), self._replicated)
                         for value, dtype in values)
        return tuple(jax.device_put(np.asarray(value, dtype=dtype), self._device)
                     for value, dtype in values)

    def ensemble_runner(self, program_for: Callable[[jax.Array], BlockProgram]) -> Any:
        return compile_ensemble_block(program_for, self.dtype)

    def run_ensemble_block(self, runner: Any, fields: Mapping[str, jax.Array],
                           values: jax.Array, plan: BlockPlan) -> BlockResult:
        return run_ensemble_block(runner, dict(fields), values, plan)

    def block_runner(self, program: BlockProgram) -> Any:
        if not self.compile:
            return program
        if self._mesh is not None:
            return _ShardedBlock(program, self.dtype)
        return compile_block(program, self.dtype)

    def run_block(self, runner: Any, fields: Mapping[str, jax.Array], plan: BlockPlan) -> Any:
        if isinstance(runner, BlockProgram):  # compile=False: the eager loop, for debugging
            with jax.disable_jit():
                return super().run_block(runner, fields, plan)
        return run_block(runner, fields, plan)

    def call(self, fn: Any, *args: Any) -> Any:
        if not self.compile:
            return fn(*args)
        # ``fn`` jitted once, dropped with ``fn`` (the jitted function calls it through
        # ``weakly``, so nothing here keeps its own key alive).
        jitted = self._compiled.get(fn)
        if jitted is None:
            jitted = self._compiled[fn] = jax.jit(weakly(fn))
        return jitted(*args)

    def grad_ops(self) -> Any:
        from simkit.backends._jax_grad import JaxGradOps

        return JaxGradOps()

    def synchronize(self, arrays: Any) -> None:
        jax.block_until_ready(arrays)

    def to_host(self, arrays: Mapping[str, jax.Array],
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        # A value split over the devices of several processes is gathered (every process takes
        # part, in the same order); one held whole by this process is copied as it is.
        arrays = {name: _gathered(value) for name, value in arrays.items()}
        for value in arrays.values():
            if isinstance(value, jax.Array):  # (the eager loop's buffers are NumPy already)
                value.copy_to_host_async()
        out = out or {}
        return {name: host_copy(value, out.get(name)) for name, value in arrays.items()}


def _make_mesh(mesh: tuple[tuple[str, int], ...], devices: list[jax.Device]) -> Mesh:
    """The device mesh of ``mesh`` over the first of ``devices`` (those of every process)."""
    wanted = math.prod(size for _, size in mesh)
    if wanted > len(devices):
        split = ", ".join(f"{name}: {size}" for name, size in mesh)
        hint = (" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
                if devices[0].platform == "cpu" else "")
        raise ScenarioError(f"expected at most {len(devices)} devices, the "
                            f"{devices[0].platform} devices JAX sees{hint}, given a mesh of "
                            f"{wanted} ({split})", key="mesh")
    grid = np.array(devices[:wanted], dtype=object).reshape([size for _, size in mesh])
    return Mesh(grid, tuple(name for name, _ in mesh))


def _global(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """``host`` (the same on every process) laid out with ``sharding``: each device gets its
    own part, also where the mesh spans processes."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _gathered(value: Any) -> Any:
    if not isinstance(value, jax.Array) or value.is_fully_addressable:
        return value
    if value.is_fully_replicated:
        return np.asarray(value.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


class _ShardedBlock:
    """The block program on a device mesh: jitted once per layout of the fields it is given,
    which every step of the block keeps (the loop carry stays split as the run placed it)."""

    def __init__(self, program: BlockProgram, dtype: Any) -> None:
        self.program = program
        self.dtype = dtype
        self._jitted: dict[tuple, Any] = {}

    def __call__(self, fields: dict[str, jax.Array], *plan: Any) -> tuple:
        key = tuple(sorted((name, value.sharding) for name, value in fields.items()))
        if key not in self._jitted:
            self._jitted[key] = jax.jit(self._function(dict(key)))
        return self._jitted[key](fields, *plan)

    def _function(self, shardings: dict[str, Any]) -> Any:
        def keep(f):
            return {name: jax.lax.with_sharding_constraint(value, shardings[name])
                    if name in shardings else value for name, value in f.items()}

        step, staged = self.program.step, self.program.staged

        def kept_step(f, dt, index, time):
            return keep(step(f, dt, index, time))

        def kept_staged(f, dt, index, time):
            f, seen = staged(f, dt, index, time)
            return keep(f), seen

        program = dataclasses.replace(self.program, step=kept_step,
                                      staged=kept_staged if staged is not None else None)
        block = block_function(program, self.dtype)

        def run(fields, *plan):
            f, *rest = block(keep(fields), *plan)
            return (keep(f), *rest)

        return run
