"""Objectives: scalar functions of a run's final state and captures that a gradient is taken of.

Any callable ``objective(final, captures) -> scalar`` is one (``final`` maps fields to arrays,
``captures[stream][name]`` stacks a stream's captures along a first axis, with the steps under
``"step"``). It may carry ``name`` and CF ``units`` attributes, which the gradient file uses.
``misfit`` builds the usual one: the distance between this run's captures and another simkit
file's (observations).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from simkit.errors import ScenarioError
from simkit.io import RunReader, open_reader, schema

_SYMBOL = re.compile(r"^[A-Za-z]+-?[0-9]*$")


def squared_units(units: str) -> str:
    """CF units of a squared quantity (``K`` -> ``K2``, ``m s-1`` -> ``(m s-1)^2``)."""
    if units == "1":
        return "1"
    return f"{units}2" if _SYMBOL.match(units) else f"({units})^2"


def per_unit(numerator: str, denominator: str) -> str:
    """CF units of a derivative: units of ``numerator`` per unit of ``denominator``
    (``1`` per ``K`` -> ``1/(K)``)."""
    if denominator == "1":
        return numerator
    top = numerator if _SYMBOL.match(numerator) or numerator == "1" else f"({numerator})"
    return f"{top}/({denominator})"


def real_scalar(value: Any) -> Any:
    """``value`` when it is a 0-d array of a real floating dtype (what a gradient is taken of),
    checked when the objective is traced or run, not before.

    Raises:
        ScenarioError: naming ``objective``, saying what it returned.
    """
    try:
        xp = array_namespace(value)
    except TypeError:
        raise ScenarioError(f"expected an objective that returns a real scalar (an array of "
                            f"shape ()), given a {type(value).__name__}", key="objective") from None
    if getattr(value, "ndim", None) != 0 or not xp.isdtype(value.dtype, "real floating"):
        dtype = str(value.dtype).removeprefix("torch.")
        raise ScenarioError(f"expected an objective that returns a real scalar (an array of "
                            f"shape ()), given an array of shape {tuple(value.shape)} and dtype "
                            f"{dtype}", key="objective")
    return value


class Misfit:
    """Half the sum of squared differences between this run's captures of ``stream`` and the
    observations, at every observed step (each must be a step the run captures too).

    Args:
        path: a simkit file (or any NetCDF file with a ``stream`` group of ``step``-indexed
            variables) holding the observations.
        stream: the group of the observations, and the stream of this run compared with them.
        fields: the variables compared (default: the stream's fields in the file).
        steps: only these observed steps (default: all).
    """

    def __init__(self, path: str | os.PathLike[str], stream: str,
                 fields: Sequence[str] | None = None, steps: Sequence[int] | None = None) -> None:
        self.path, self.stream = Path(path), stream
        if not self.path.is_file():
            raise ScenarioError(f"expected an existing simkit file, given {str(path)!r}",
                                key="misfit.path")
        try:
            with open_reader(self.path) as reader:
                attrs = reader.attrs()
                names = str(attrs.get(schema.ATTR_STREAMS, "")).split()
                if schema.ATTR_STREAMS in attrs and stream in names:
                    found = _observations(reader, stream, fields, steps)
        except ScenarioError:
            raise
        except (ValueError, OSError) as error:
            reason = " ".join(str(error).split())[:120]
            raise ScenarioError(f"expected a simkit file, given one that cannot be read as "
                                f"NetCDF ({reason})", key="misfit.path") from None
        if schema.ATTR_STREAMS not in attrs:
            raise ScenarioError(f"expected a simkit file (with streams), given a NetCDF file "
                                f"without {schema.ATTR_STREAMS!r}", key="misfit.path")
        if stream not in names:
            raise ScenarioError(f"expected a stream of {self.path.name} ({', '.join(names)}), "
                                f"given {stream!r}", key="misfit.stream")
        self.fields, self.steps, self.observations, units = found
        self.name = f"misfit_{stream}"
        self.units = squared_units(units.pop()) if len(units) == 1 else "1"
        self.long_name = (f"half the sum of squared differences from the {stream} observations "
                          f"of {self.path.name}")

    def _check(self, streams: Sequence[str], steps: Any, kept: Sequence[str]) -> None:
        """Refuse a run whose stream of this name does not capture every observed step or
        keep every compared variable (``steps``, ``kept``: that stream's)."""
        if self.stream not in streams:
            raise ScenarioError(f"expected a run with a stream {self.stream!r} to compare with "
                                f"the observations, given streams {', '.join(streams)}",
                                key=f"outputs.{self.stream}")
        missing = sorted(set(self.steps.tolist()) - {int(s) for s in steps})
        if missing:
            raise ScenarioError(f"expected the run's stream {self.stream} to capture every "
                                f"observed step, given none at step {missing[0]}",
                                key=f"outputs.{self.stream}")
        for name in self.fields:
            if name not in kept:
                raise ScenarioError(f"expected the run's stream {self.stream} to keep {name!r}, "
                                    f"given {', '.join(kept)}", key=f"outputs.{self.stream}")

    def check(self, run: Any) -> None:
        """Refuse, before anything is computed, a differentiable run (``DifferentiableRun``)
        this misfit cannot compare with the observations: a stream it does not capture or
        keep, or observations of another shape than the run's values."""
        found = {c.name: c for c in run.captures}
        capture = found.get(self.stream)
        self._check(list(found), capture.steps if capture else (),
                    (*capture.fields, *capture.diagnostics) if capture else ())
        sizes, dims = run.plan.sizes, run.plan.dims
        for name in self.fields:
            if name not in dims:
                continue
            expected = tuple(sizes[d] for d in dims[name])
            given = tuple(self.observations[name].shape[1:])
            if given != expected:
                raise ScenarioError(f"expected observations of {name} of this run's shape "
                                    f"{expected}, given {given} in {self.path.name}",
                                    key="misfit.path")

    def __call__(self, final: Mapping[str, Any], captures: Mapping[str, Mapping[str, Any]]
                 ) -> Any:
        run = captures.get(self.stream, {})
        self._check(list(captures), np.asarray(run.get("step", ())),
                    [k for k in run if k != "step"])
        steps = np.asarray(run["step"])
        at = np.searchsorted(steps, self.steps)
        total = None
        for name in self.fields:
            value = run[name]
            xp = array_namespace(value)
            index = xp.asarray(at, device=device(value))
            observed = xp.asarray(self.observations[name], dtype=value.dtype,
                                  device=device(value))
            diff = xp.take(value, index, axis=0) - observed
            term = 0.5 * xp.sum(diff * diff)
            total = term if total is None else total + term
        return total


def misfit(path: str | os.PathLike[str], stream: str, fields: Sequence[str] | None = None,
           steps: Sequence[int] | None = None) -> Misfit:
    """The misfit between this run's captures of ``stream`` and those of the file ``path``:
    an objective for parameter estimation and data assimilation.

    Its value is half the sum of squared differences over the compared variables at every
    observed step, in the square of the variables' units (``K2`` for a field in ``K``). Each
    observed step must be one the run captures in ``stream``; ``simkit validate`` checks this
    for a scenario's ``objective:`` block.

    Args:
        path: the observations: a simkit file, or any NetCDF file with a ``stream`` group of
            ``step``-indexed variables.
        stream: the group of the observations, and the stream of this run compared with them.
        fields: the variables compared (default: the stream's fields in the file).
        steps: only these observed steps (default: all).

    Returns:
        A ``Misfit``, the objective to pass to ``value_and_grad`` or ``grad``.

    Raises:
        ScenarioError: the file is missing, or holds no such stream or variables.
    """
    return Misfit(path, stream, fields, steps)


def _observations(reader: RunReader, stream: str, fields: Sequence[str] | None,
                  steps: Sequence[int] | None
                  ) -> tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray], set[str]]:
    """The observed fields, steps, values (float64, at those steps, whole captures only: a
    torn trailing capture is no data) and units of ``stream`` in the file ``reader`` reads."""
    variables = {v.name: v for v in reader.variables(stream)}
    captured = [name for name, v in variables.items() if schema.STEP_DIM in v.dims
                and name not in (schema.STEP, schema.TIME, schema.CHECKSUM)]
    kept = str(reader.stream_attrs(stream).get(schema.ATTR_STREAM_FIELDS, "")).split()
    chosen = tuple(fields) if fields is not None else tuple(kept)
    unknown = [f for f in chosen if f not in captured]
    if unknown or not chosen:
        raise ScenarioError(f"expected variables of stream {stream} ({', '.join(captured)}), "
                            f"given {unknown[0] if unknown else 'none'!r}", key="misfit.fields")
    held = reader.captures(stream, names=chosen)
    observed = np.asarray(held.steps, dtype=np.int64)
    wanted = observed if steps is None else np.asarray(steps, dtype=np.int64)
    missing = sorted(set(wanted.tolist()) - set(observed.tolist()))
    if missing:
        raise ScenarioError(f"expected steps the observations hold, given {missing[0]}",
                            key="misfit.steps")
    at = np.searchsorted(observed, wanted)
    values = {f: np.asarray(held.arrays[f][at], dtype=np.float64) for f in chosen}
    return chosen, wanted, values, {variables[f].units or "1" for f in chosen}
