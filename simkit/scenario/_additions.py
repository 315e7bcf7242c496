"""Diagnostics and probes added by reference, and the summaries streams declare: the solver a run
actually steps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from simkit.errors import ScenarioError
from simkit.scenario._model import Scenario, unknown
from simkit.scenario._streams import _STREAM_NAME
from simkit.solver import AbstractSolver, SolverModel
from simkit.solver._extend import Added, extended
from simkit.solver._registry import load_function
from simkit.solver._summaries import Summary, parse_summaries

#: Bytes of an added diagnostic's or probe's name: room is left for a summary's suffix
#: (``_histogram``) within the 255 of a netCDF name.
MAX_ADDED_NAME_BYTES = 240


_ADDED_KEYS = {"diagnostics": ("function", "units", "long_name", "dims"),
               "probes": ("function", "stage", "units", "long_name", "dims")}


def _additions(scenario: Scenario, solver: AbstractSolver, allow_import: bool | None,
               search: Sequence[Path]) -> tuple[Added, ...]:
    """The diagnostics and probes the scenario adds by ``module:function`` reference."""
    stage_names = [s.name for s in solver.stages()]
    coordinates = [c.name for c in solver.coordinates()]
    taken = ([f.name for f in solver.fields()] + [p.name for s in solver.stages()
                                                  for p in s.probes]
             + [d.name for d in solver.diagnostics()] + coordinates + ["step", "time"])
    found: list[Added] = []
    for kind in ("diagnostics", "probes"):
        for name, spec in getattr(scenario, kind).items():
            key = f"{kind}.{name}"
            if not _STREAM_NAME.fullmatch(name) or name in taken:
                raise ScenarioError(f"expected a new name of letters, digits and _ (not one of "
                                    f"{', '.join(taken)}), given {name!r}", key=key)
            if len(name) > MAX_ADDED_NAME_BYTES:
                raise ScenarioError(f"expected a name of at most {MAX_ADDED_NAME_BYTES} "
                                    f"characters (a netCDF name has at most 255 with a summary's "
                                    f"suffix), given one of {len(name)}", key=key)
            taken.append(name)
            spec = {"function": spec} if isinstance(spec, str) else spec
            if not isinstance(spec, Mapping) or "function" not in spec:
                raise ScenarioError(f"expected module:function or a mapping with 'function', "
                                    f"given {spec!r}", key=key)
            for item in spec:
                if item not in _ADDED_KEYS[kind]:
                    raise unknown("key", item, _ADDED_KEYS[kind], f"{key}.{item}")
            stage = spec.get("stage")
            if kind == "probes" and stage not in stage_names:
                raise unknown("stage", stage, stage_names, f"{key}.stage")
            first = solver.fields()[0].dims if kind == "probes" else ()
            dims = spec.get("dims", list(first))
            if not isinstance(dims, list) or any(d not in coordinates for d in dims):
                raise ScenarioError(f"expected a list of dimensions among {', '.join(coordinates)}"
                                    f", given {dims!r}", key=f"{key}.dims")
            for text in ("units", "long_name"):
                if not isinstance(spec.get(text, ""), str):
                    raise ScenarioError(f"expected a string, given {spec[text]!r}",
                                        key=f"{key}.{text}")
            fn = cast(Callable[..., Any], load_function(
                spec["function"], key=f"{key}.function", allow_import=allow_import,
                search=search))
            found.append(Added(name, fn, spec.get("units", "1"), spec.get("long_name", name),
                               tuple(dims), stage))
    return tuple(found)


def _extend(solver: AbstractSolver, scenario: Scenario, initial: SolverModel,
            added: tuple[Added, ...]) -> AbstractSolver:
    """The solver with the diagnostics and probes ``added`` and the summaries its streams
    declare as generated diagnostics; a histogram without a range takes it from the initial
    state (the first capture of a field)."""
    found: dict[str, tuple[str, Summary]] = {}
    state = None
    known = ([f.name for f in solver.fields()] + [p.name for st in solver.stages()
                                                  for p in st.probes]
             + [a.name for a in added if a.stage is not None])
    for name, spec in scenario.outputs.items():
        if not isinstance(spec, Mapping) or "summaries" not in spec:
            continue
        key = f"outputs.{name}.summaries"
        for summary in parse_summaries(spec["summaries"], key):
            summary = replace(summary, dtype=scenario.dtype)
            if summary.field not in known:
                raise unknown("field", summary.field, known, key)
            if summary.kind == "histogram" and summary.range is None:
                if summary.field not in [f.name for f in solver.fields()]:
                    raise ScenarioError(f"expected a range for the histogram of "
                                        f"{summary.field!r} (only fields of the initial state fix "
                                        "one by themselves), given none", key=key)
                if state is None:
                    with contextlib.suppress(Exception):  # a bad initial state is reported later
                        state = solver.initial_state(initial,
                                                     np.random.default_rng(scenario.seed))
                if state is None:
                    return cast(AbstractSolver, extended(solver, (), added))
                summary = summary.with_range_of(state[summary.field])
            earlier = found.setdefault(summary.name, (key, summary))
            if earlier[1] != summary:
                raise ScenarioError(f"expected one {summary.kind} of {summary.field!r} in every "
                                    f"stream, given another in {earlier[0]}", key=key)
    return cast(AbstractSolver,
                extended(solver, [summary for _, summary in found.values()], added))
