"""The backend protocol: the few things that truly differ per array library.

Device placement, the compiled loop, the host copy. Everything else is written once against the
Array API.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from simkit._types import Array, StepFn, WatchFn
from simkit.errors import ScenarioError

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu", "auto")


class AbstractBackend(abc.ABC):
    """One array library on one device with one floating-point dtype."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """The device the state lives on, in the library's own words (e.g. ``cuda:0``)."""

    @abc.abstractmethod
    def asarray(self, host: np.ndarray) -> Array:
        """A copy of ``host`` on this backend's device, cast to its dtype."""

    @abc.abstractmethod
    def advance(self, step_fn: StepFn, fields: Mapping[str, Array], n: int, dt: float,
                step0: int, time0: float, watch: WatchFn | None = None,
                enabled: np.ndarray | None = None) -> tuple[dict[str, Array], int, Any]:
        """Apply ``step_fn`` up to ``n`` times with time step ``dt``, from step ``step0`` at time
        ``time0``; compiled where the library allows, with no host round trip per step.

        With ``watch``, the loop also stops right after the first step at which one of the
        ``enabled`` conditions of ``watch(fields)`` turns from false to true (edge-triggered).

        Returns:
            The new fields, the number of steps taken, and (with ``watch``) a host bool array of
            the conditions that turned true at the last step, else None.
        """

    @abc.abstractmethod
    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` once, compiled where the library allows (partial steps, diagnostics)."""

    @abc.abstractmethod
    def synchronize(self, arrays: Any) -> None:
        """Wait until ``arrays`` are computed (only for timing; never inside the loop)."""

    @abc.abstractmethod
    def to_host(self, arrays: Mapping[str, Array],
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """NumPy copies of ``arrays``: never views of live device or host memory.

        With ``out``, the copies go into those preallocated host buffers (no page faults).
        """


def eager_loop(step_fn: StepFn, fields: Mapping[str, Array], n: int, dt: float, step0: int,
               time0: float) -> dict[str, Array]:
    """The plain loop, for backends without a loop compiler."""
    out = dict(fields)
    for i in range(n):
        out = step_fn(out, dt, step0 + i, time0 + i * dt)
    return out


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
