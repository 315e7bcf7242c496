"""Type aliases shared across simkit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: An array of any backend (numpy.ndarray, jax.Array, torch.Tensor).
Array = Any
#: Named arrays of one backend: the prognostic fields, plus stage intermediates within a step.
State = Mapping[str, Array]
#: One stage: ``(state, dt) -> state``.
StageFn = Callable[[State, Any], State]
#: One full step: ``(fields, dt, step, time) -> fields``; ``step`` is the index of the step
#: being taken (0 for the first) and ``time`` the simulated time at its start.
StepFn = Callable[[State, Any, Any, Any], dict[str, Array]]
#: A device-side predicate vector: ``fields -> bool array of shape (k,)``.
WatchFn = Callable[[State], Array]
