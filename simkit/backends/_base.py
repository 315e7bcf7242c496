"""The backend protocol: the few things that truly differ per array library.

Device placement, the compiled block program, the host copy, and the types a step function is
called with. Everything else is written once against the Array API.

The type contract (the same on every backend and every path: the compiled block, an eager run, a
step that captures after a stage, the non-finite replay): a step function is called as
``step_fn(fields, dt, step, time)`` and its stages find ``state["step"]`` and ``state["time"]``,
where

- ``step`` is an int64 0-d array, the index of the step being taken (0 for the first);
- ``time`` is a float64 0-d array, the simulated time at the step's start, whatever the run's
  dtype (float32 time would lose steps after a few million);
- ``dt`` is a 0-d array of the run's dtype: float64 in a float64 run. A float32 run gets a float32
  ``dt`` because a float64 0-d array would promote float32 fields to float64 under NumPy's and
  JAX's promotion rules (PyTorch's would not; the contract is one for all);
- all three live in the fields' namespace and on their device (``AbstractBackend.scalars``
  makes them), so a compiled step never specialises on their values.

A stage that mixes ``time`` with float32 fields casts it where it uses it. ``state["seed"]`` is
the run's seed, a Python int (a constant of the run).
"""

from __future__ import annotations

import abc
import types
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from simkit._types import Array
from simkit.backends._block import (
    BlockPlan,
    BlockProgram,
    BlockResult,
    EagerBlockOps,
    run_block_eager,
)
from simkit.errors import ScenarioError

#: Environment of a multi-process run (``simkit run --coordinator ...`` sets them): the
#: coordinator's ``host:port`` (``auto``: detected from the cluster, e.g. SLURM), the number of
#: processes and this process's index.
COORDINATOR_ENV, PROCESSES_ENV, PROCESS_ID_ENV = (
    "SIMKIT_COORDINATOR", "SIMKIT_PROCESSES", "SIMKIT_PROCESS_ID")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu", "auto")
#: Dtypes of the step index and of the simulated time that stages see (see the module docstring).
STEP_DTYPE, TIME_DTYPE = "int64", "float64"


class AbstractBackend(abc.ABC):
    """One array library on one device with one floating-point dtype."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """The device the state lives on, in the library's own words (e.g. ``cuda:0``)."""

    @abc.abstractmethod
    def asarray(self, host: np.ndarray, cast: bool = True) -> Array:
        """A copy of ``host`` on this backend's device, cast to its dtype (``cast=False``: in
        the host array's own)."""

    def place(self, host: np.ndarray, dims: tuple[str, ...]) -> Array:
        """A copy of the field ``host`` (named dimensions ``dims``) laid out on the backend's
        devices: split along the dimensions of the run's device mesh, where it has one."""
        return self.asarray(host)

    #: Index of this process among the processes of one run (0: the one that writes the file),
    #: and their number.
    process_index: int = 0
    process_count: int = 1

    def agree(self, value: float) -> float:
        """``value`` as process 0 has it, so that every process of a multi-process run plans the
        same blocks (one process: ``value`` itself)."""
        return value

    @property
    def compiled_with(self) -> str | None:
        """What compiles this backend's block program (``"jax.jit"``, ``"torch.compile
        (inductor)"``), or None where it runs eagerly: recorded in a run's provenance."""
        return None

    @abc.abstractmethod
    def scalars(self, dt: float, step: int, time: float) -> tuple[Array, Array, Array]:
        """``dt``, ``step`` and ``time`` as the 0-d arrays a step function is called with: ``dt``
        in the run's dtype, ``step`` int64, ``time`` float64, on this backend's device."""

    @abc.abstractmethod
    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` once, compiled where the library allows (partial steps, diagnostics).

        What is compiled for ``fn`` is kept as long as ``fn`` lives, and no longer: the caller
        keeps the functions it wants reused."""

    def call_step(self, step_fn: Any, fields: Mapping[str, Array], dt: float, step: int,
                  time: float) -> Any:
        """One step (or a step that also returns a stage's state) outside the loop, called with
        the same types as inside it."""
        return self.call(step_fn, dict(fields), *self.scalars(dt, step, time))

    @abc.abstractmethod
    def synchronize(self, arrays: Any) -> None:
        """Wait until ``arrays`` are computed (only for timing; never inside the loop)."""

    @abc.abstractmethod
    def to_host(self, arrays: Mapping[str, Array],
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """NumPy copies of ``arrays``: never views of live device or host memory.

        With ``out``, the copies go into those preallocated host buffers (no page faults).
        """


    # ------------------------------------------------------------ blocks (DESIGN D4)

    def block_runner(self, program: BlockProgram) -> Any:
        """What runs the blocks of ``program``: compiled once per run where the library compiles
        (the eager backends run the program itself)."""
        return program

    def block_ops(self) -> EagerBlockOps:
        """The array operations of the eager block loop on this backend."""
        return EagerBlockOps(self.scalars)

    def run_block(self, runner: Any, fields: Mapping[str, Array], plan: BlockPlan
                  ) -> BlockResult:
        """Run every capture point of ``plan`` as one call, captures stored on the device."""
        return run_block_eager(runner, fields, plan, self.block_ops())

    def ensemble_runner(self, program_for: Callable[[Array], BlockProgram]) -> Any | None:
        """What runs the blocks of an ensemble as one call: member ``m`` along a leading
        ``member`` axis with ``program_for(values[m])`` (its parameter row), one plan for all;
        None where the library cannot map a program over members (no vectorized ensembles)."""
        return None

    def run_ensemble_block(self, runner: Any, fields: Mapping[str, Array], values: Array,
                           plan: BlockPlan) -> BlockResult:
        """Run every capture point of ``plan`` for every member as one call (``fields`` and
        ``values`` with a leading member axis, and so every entry of the result)."""
        raise NotImplementedError(f"backend {self.name}: expected a backend with an "
                                  f"ensemble_runner, given one without")

    def block_to_host(self, result: BlockResult) -> dict[str, Any]:
        """The block's captures as host arrays (each slot's buffers cut to its count), its step
        count, fired conditions and finite flag: the one wait for the device per block."""
        small = {"counts": result.counts, "steps": result.steps, "finite": result.finite}
        if result.fired is not None:
            small["fired"] = result.fired
        if result.held is not None:
            small["held"] = result.held
        host = {name: _host_value(self, value) for name, value in small.items()}
        host.setdefault("fired", None)
        host.setdefault("held", None)
        # Whole buffers, cut on the host: a device slice of each new length would compile anew.
        host["buffers"] = [
            {name: value[:int(count)] for name, value in self.to_host(buffers).items()}
            if int(count) else {}
            for buffers, count in zip(result.buffers, host["counts"], strict=True)]
        return host

    # ------------------------------------------------------- differentiation (DESIGN D10)

    def grad_ops(self) -> GradOps:
        """What differentiating a run needs of this library (``simkit.autodiff``).

        Raises:
            NotImplementedError: on a backend that does not differentiate.
        """
        raise NotImplementedError(f"backend {self.name}: expected a backend that "
                                  f"differentiates, given one that does not")


@dataclass(frozen=True)
class SegmentPlan:
    """The steps of a differentiable run cut into segments (``sqrt`` and ``all``): ``steps``
    steps of ``dt`` in segments of ``length``, the fields ``names`` kept at the steps of
    ``take`` (step -> index), the probes added after the steps of ``probe_slot`` (step -> index
    in the probes' first axis), each segment recomputed on the way back where ``remat``."""

    steps: int
    length: int
    dt: float
    keys: tuple[str, ...]
    names: tuple[str, ...]
    take: Mapping[int, int]
    probe_slot: Mapping[int, int]
    remat: bool


#: What the executors of a differentiable run return: the final fields, and the states they
#: took as ``(pieces, order)``: ``order`` lists ``(piece, index in it or None, step)``, where
#: None means the piece is that one state (``{name: array}``).
Taken = tuple[dict[str, Any], list[dict[str, Any]], list[tuple[int, int | None, int]]]


class GradOps(Protocol):
    """The operations of reverse mode that differ per array library: the algorithms (segments,
    the binomial schedule, reuse of a run's checkpoints) are written once over these."""

    #: What ``make_step`` is given as ``kernels`` for a step that is differentiated.
    kernels: bool | None

    def rules(self) -> AbstractContextManager[Any]:
        """The type promotion a differentiated run is traced under."""

    def value_and_grad(self, fn: Callable[..., Any], args: tuple[Any, ...]
                       ) -> tuple[Any, tuple[Any, ...]]:
        """``fn(*args)`` (a real scalar) and its gradient with respect to each of ``args``
        (pytrees of arrays, None for none; zeros where ``fn`` does not depend on one)."""

    def vjp(self, fn: Callable[..., Any], *primals: Any
            ) -> tuple[Any, Callable[[Any], tuple[Any, ...]]]:
        """``fn(*primals)`` and its pullback: cotangents of the outputs (a pytree like them) to
        cotangents of ``primals`` (zeros where unused)."""

    def compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` compiled where the library traces pure functions (else ``fn``)."""

    def param(self, value: Any) -> Any:
        """A parameter's value as the binomial executor takes it."""

    def index(self, step: int) -> Any:
        """A step index as a compiled backward pass takes it: data where the pass is compiled
        (one compilation for segments that start at any step)."""

    def run_segments(self, plan: SegmentPlan, step: Callable[..., Any],
                     fields: dict[str, Any], probes: Mapping[str, Any] | None,
                     offset: Any) -> Taken:
        """The run of ``plan`` from ``fields`` (probes already added at step 0), the steps
        from index ``offset`` of the whole run, each segment recomputed on the way back where
        the plan says so."""

    def run_binomial(self, plan: Any, step_of: Callable[[Mapping[str, Any]], Any],
                     params: dict[str, Any], fields: dict[str, Any],
                     probes: dict[str, Any], offset: Any) -> Taken:
        """The run of a binomial ``plan`` (``simkit.autodiff._reverse.Plan``): its sweep and
        backward pass run on this library's machine, the backward pass as the run's vjp; the
        step rebuilt around the parameters by ``step_of``."""


def _host_value(backend: AbstractBackend, value: Any) -> np.ndarray:
    if isinstance(value, (bool, int, float, np.ndarray, np.generic)):
        return np.asarray(value)
    return backend.to_host({"value": value})["value"]


def weakly(fn: Callable) -> Callable:
    """``fn`` called through a weak reference, for what a backend compiles from ``fn``: a
    compiled function holds what it wraps, so in a cache keyed weakly on ``fn`` it would keep its
    own key alive for ever (one leaked compilation per run); through this, both go together.

    Each wrapper has a code object of its own: ``torch.compile`` keeps its compilations per code
    object and, past a few, silently runs a function eagerly, which one shared wrapper (or the one
    ``step`` of every ``make_step``) would reach after a few solvers in one process.
    """
    ref = weakref.ref(fn)

    def call(*args: Any) -> Any:
        return ref()(*args)

    name = getattr(fn, "__name__", "fn")
    return types.FunctionType(call.__code__.replace(co_name=name), call.__globals__, name, None,
                              call.__closure__)


def check_options(backend: str, device: str, dtype: str) -> None:
    """Reject a device or dtype name no backend knows."""
    if device not in DEVICES:
        raise ScenarioError(f"expected one of {', '.join(DEVICES)}, given {device!r}", key="device")
    if dtype not in DTYPES:
        raise ScenarioError(f"expected one of {', '.join(DTYPES)}, given {dtype!r}", key="dtype")


def no_gpu(backend: str) -> ScenarioError:
    return ScenarioError(
        f"expected cpu or auto: the {backend} backend sees no GPU on this machine, given gpu",
        key="device")


def host_copy(array: Any, out: np.ndarray | None = None) -> np.ndarray:
    """A writable NumPy copy of an array that NumPy can read (into ``out`` when given)."""
    if out is None:
        return np.array(array, copy=True)
    np.copyto(out, np.asarray(array), casting="no")
    return out
