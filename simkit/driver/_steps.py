"""Functions made from a solver (its step, stage steps, diagnostics, watched conditions), kept
by solver class and parameters so a process that runs the same solver again compiles nothing new."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from array_api_compat import array_namespace, device

from simkit.solver import KERNELS_ENV, AbstractSolver, make_step

#: Environment variables whose values are part of what a cached step is (``KERNELS_ENV`` among
#: them).
ENV_PREFIX = KERNELS_ENV.split("_", 1)[0] + "_"

#: Functions made from a solver (steps, stage steps, diagnostics, watched conditions) by solver
#: class, parameters and what they are, so a process that runs the same solver again (a notebook,
#: a sweep, a benchmark) reuses them and what the backend compiled for them. Backends keep
#: compiled code only while its function lives, so this bound also bounds the memory a long
#: process spends on compiled code: the least recently used go first.
_STEPS: OrderedDict[tuple[object, ...], Any] = OrderedDict()
_STEPS_KEPT = 32


def solver_cached(solver: AbstractSolver, what: tuple[object, ...], make: Callable[[], Any]) -> Any:
    params = getattr(solver, "params", None)
    if params is None or not hasattr(params, "model_dump_json"):
        return make()
    # The kernel switches (SIMKIT_KERNELS, and those of solvers' own kernels, e.g. SIMKIT_NUMBA)
    # change what a step is made of: part of the key.
    switches = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    key = (type(solver), params.model_dump_json(), switches, *what)
    found = _STEPS.get(key)
    if found is None:
        found = _STEPS[key] = make()
        while len(_STEPS) > _STEPS_KEPT:
            _STEPS.popitem(last=False)
    else:
        _STEPS.move_to_end(key)
    return found


def step_for(solver: AbstractSolver, seed: int, capture_after: tuple[str, ...] = ()) -> Any:
    """``make_step(solver, seed, capture_after=...)``, the same function for the same solver."""
    return solver_cached(solver, ("step", seed, tuple(capture_after)),
                          lambda: make_step(solver, seed, capture_after=capture_after))


def diagnostics_for(solver: AbstractSolver) -> dict[str, Any]:
    """The solver's diagnostics by name, the same functions for the same solver (a backend
    compiles each once per process, not once per run)."""
    found: dict[str, Any] = solver_cached(solver, ("diagnostics",),
                                          lambda: {d.name: d for d in solver.diagnostics()})
    return found


def conditions_for(solver: AbstractSolver, conditions: tuple[tuple[str, float | None, float | None,
                                                     str | None], ...]) -> Any:
    """The device predicate of conditions ``(diagnostic, above, below, stage)``: a bool vector
    of ``(fields, seen)``, one entry per condition, each taken of the end-of-step ``fields`` or,
    with a stage, of ``seen[stage]`` (the state right after it; False where ``seen`` is None:
    no step made the state); the same function for the same conditions."""
    def make() -> Any:
        diagnostics = diagnostics_for(solver)
        return condition_flags({name: d.fn for name, d in diagnostics.items()}, conditions)

    return solver_cached(solver, ("conditions", conditions), make)


def condition_flags(diagnostics: dict[str, Callable[[Any], Any]],
                    conditions: tuple[tuple[str, float | None, float | None, str | None], ...]
                    ) -> Callable[..., Any]:
    """``conditions_for``'s predicate over the given diagnostic functions (an ensemble member's
    close over its traced parameters, so they are not cached)."""
    tests = [(diagnostics[name], above, below, stage) for name, above, below, stage in conditions]

    def flags(fields: Mapping[str, Any], seen: Mapping[str, Any] | None = None) -> Any:
        values = []
        for fn, above, below, stage in tests:
            if stage is None:
                value = fn(fields)
            elif seen is None:
                some = next(iter(fields.values()))
                xp = array_namespace(some)
                values.append(xp.zeros((), dtype=xp.bool, device=device(some)))
                continue
            else:
                value = fn(seen[stage])
            values.append(value > above if above is not None else value < below)
        return array_namespace(*values).stack(values)

    return flags
