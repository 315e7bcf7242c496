"""A solver extended by its scenario without subclassing: diagnostics and probes given as
functions (``module:function``) and summaries of its fields, evaluated in the compiled step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from simkit.solver._base import Coordinate, Diagnostic, FieldSpec, Stage
from simkit.solver._summaries import Summary


@dataclass(frozen=True)
class Added:
    """A diagnostic, or a probe computed right after a stage, that a scenario adds.

    Args:
        name: its name in streams and in the file.
        fn: ``state -> array``, written against the Array API (the state a diagnostic or the
            stage's output sees: fields, earlier probes, ``step``, ``time``, ``seed``).
        units: CF units.
        long_name: CF long name.
        dims: dimensions among the solver's coordinates (``()``: a scalar).
        stage: None for a diagnostic; the stage after which a probe is computed.
    """

    name: str
    fn: Callable[[Any], Any]
    units: str = "1"
    long_name: str = ""
    dims: tuple[str, ...] = ()
    stage: str | None = None


#: Generated classes by (solver class, summaries, additions): a run of the same solver and
#: extensions in one process gets the same class, so what was compiled for it is reused.
_CLASSES: dict[tuple, type] = {}
_PLAIN = "_simkit_plain_solver"


def extended(solver: Any, summaries: Sequence[Summary] = (), added: Sequence[Added] = ()
             ) -> Any:
    """``solver`` with ``summaries`` and ``added`` among its diagnostics and probes.

    The result is an instance of a generated subclass of the solver's class (memoized), so it is
    built again from parameters alone, as ensembles do; every other method runs on a plain
    instance of the solver's own class (its code may rely on its own coordinates).

    Raises:
        ValueError: a histogram without a fixed range, or an addition whose name is taken.
    """
    summaries, added = tuple(summaries), tuple(added)
    if not summaries and not added:
        return solver
    for summary in summaries:
        if summary.kind == "histogram" and summary.range is None:
            raise ValueError(f"summary {summary.name}: expected a fixed histogram range")
    base = type(solver)
    key = (base, summaries, added)
    cls = _CLASSES.get(key)
    if cls is None:
        delegated = {name: _delegate(name) for name in
                     ("fields", "initial_state", "default_dt", "max_stable_dt")}
        cls = _CLASSES[key] = type(f"{base.__name__}Extended", (base,), {
            **delegated, "summaries": summaries, "added": added,
            "diagnostics": _diagnostics, "coordinates": _coordinates, "stages": _stages,
            "__module__": base.__module__})
    made = cls.__new__(cls)
    made.__dict__.update({k: v for k, v in solver.__dict__.items() if k != _PLAIN})
    return made


def _plain(solver: Any) -> Any:
    """The solver as an instance of its own class (made once, from the same attributes)."""
    inner = solver.__dict__.get(_PLAIN)
    if inner is None:
        base = type(solver).__mro__[1]
        inner = base.__new__(base)
        inner.__dict__.update({k: v for k, v in solver.__dict__.items() if k != _PLAIN})
        solver.__dict__[_PLAIN] = inner
    return inner


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(_plain(self), name)(*args, **kwargs)

    method.__name__ = name
    return method


def _specs(solver: Any) -> dict[str, FieldSpec]:
    found = {f.name: f for f in solver.fields()}
    found.update({p.name: p for stage in solver.stages() for p in stage.probes})
    return found


def _diagnostics(self: Any) -> list[Diagnostic]:
    found = list(_plain(self).diagnostics())
    found.extend(Diagnostic(a.name, a.fn, a.units, a.long_name or a.name, a.dims)
                 for a in type(self).added if a.stage is None)
    specs = _specs(self)
    for summary in type(self).summaries:
        spec = specs[summary.field]
        found.append(summary.diagnostic(spec.units, spec.long_name))
    return found


def _coordinates(self: Any) -> list[Coordinate]:
    found = list(_plain(self).coordinates())
    specs = _specs(self)
    for summary in type(self).summaries:
        found.extend(summary.coordinates(specs[summary.field].units))
    return found


def _stages(self: Any) -> list[Stage]:
    probes: dict[str, list[Added]] = {}
    for a in type(self).added:
        if a.stage is not None:
            probes.setdefault(a.stage, []).append(a)
    stages = list(_plain(self).stages())
    for i, stage in enumerate(stages):
        extra = probes.get(stage.name)
        if extra:
            stages[i] = Stage(
                stage.name, _with_probes(stage.fn, extra),
                probes=stage.probes + tuple(FieldSpec(a.name, a.dims, a.units,
                                                      a.long_name or a.name) for a in extra),
                kernels={k: _with_probes(fn, extra) for k, fn in stage.kernels.items()})
    return stages


def _with_probes(fn: Callable[..., Any], extra: Sequence[Added]) -> Callable[..., Any]:
    def stage(state: Any, dt: Any) -> Any:
        out = fn(state, dt)
        return {**out, **{a.name: a.fn(out) for a in extra}}

    stage.__name__ = getattr(fn, "__name__", "stage")
    return stage
