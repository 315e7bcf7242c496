"""A gradient that reuses the run's own checkpoints: the forward run has written its file (final
state, captures, and full states at its checkpoint steps); the backward pass goes over the
segments between those checkpoints from the last to the first, each recomputed from the state
the file holds at its start under the chosen policy (``sqrt``, ``all``, ``binomial``, applied
to the segment) and taken backward with the adjoint that the later segments handed it.

The states the backward pass starts from are read from the file (host memory), not kept on the
device: it holds one segment's states at a time, however long the run (a whole-run ``sqrt``
holds about 2 sqrt(n)). The objective is taken of the file's final state and captures (the
run's own values); its derivatives with respect to them seed the adjoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from simkit import _stop
from simkit.autodiff._function import DifferentiableRun
from simkit.autodiff._objective import real_scalar
from simkit.io import open_reader, schema
from simkit.scenario import RunPlan

Objective = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], Any]


def checkpoint_steps(plan: RunPlan, run: DifferentiableRun) -> tuple[int, ...]:
    """The steps strictly inside the run at which one of its checkpoint streams (full states at
    the end of a step) captures: where the backward pass can start a segment from the file."""
    full = plan.checkpoints
    return tuple(sorted({s for c in run.captures if c.name in full for s in c.steps
                         if 0 < s < run.steps}))


class _RunFile:
    """The run file's final state, the captures the run function would return, and its full
    states at ``steps``, as host arrays."""

    def __init__(self, path: Any, run: DifferentiableRun, steps: Sequence[int]) -> None:
        names = run.field_names
        with open_reader(path) as reader:
            final = reader.final_state(names)
            if final is None:
                raise RuntimeError(f"the run file {path} holds no final state")
            self.final = {k: np.asarray(final.fields[k]) for k in names}
            held = {c.name: reader.captures(c.name, names=(*c.fields, *c.diagnostics))
                    for c in run.captures}
        self.captures: dict[str, dict[str, np.ndarray]] = {}
        self.steps: dict[str, np.ndarray] = {}
        wanted = set(steps)
        self.states: dict[int, dict[str, np.ndarray]] = {}
        for capture in run.captures:
            taken = np.asarray(held[capture.name].steps, dtype=np.int64)
            at = np.searchsorted(taken, capture.steps)
            if len(capture.steps) and (at.max() >= len(taken)
                                       or not np.array_equal(taken[at], capture.steps)):
                raise RuntimeError(f"the run file {path} lacks captures of stream "
                                   f"{capture.name} at steps the run takes them")
            self.steps[capture.name] = np.asarray(capture.steps, dtype=np.int64)
            self.captures[capture.name] = {name: np.asarray(value[at]) for name, value
                                           in held[capture.name].arrays.items()}
            if set(names) <= set(capture.fields):
                for step in wanted & set(capture.steps):
                    row = capture.steps.index(step)
                    self.states.setdefault(step, {k: self.captures[capture.name][k][row]
                                                  for k in names})


def _segments(run: DifferentiableRun, steps: Sequence[int]) -> list[tuple[int, int]]:
    bounds = [0, *steps, run.steps]
    return list(zip(bounds[:-1], bounds[1:], strict=True))[::-1]


def _rows(run: DifferentiableRun, first: int, last: int) -> dict[str, np.ndarray]:
    """Per stream, the rows of its captures that the segment from ``first`` to ``last`` takes."""
    low = -1 if first == 0 else first
    return {c.name: np.asarray([i for i, s in enumerate(c.steps) if low < s <= last],
                               dtype=np.int64) for c in run.captures}


def value_and_grad_reusing(run: DifferentiableRun, objective: Objective, path: Any,
                           steps: Sequence[int], params: Sequence[str], fields: Sequence[str],
                           probe_fields: Sequence[str]
                           ) -> tuple[float, dict[str, Any], dict[str, np.ndarray]]:
    """The objective of the run written at ``path`` and its gradient with respect to
    ``params`` and initial ``fields`` (and the adjoints at the run's probe steps, for
    ``probe_fields``), the backward pass starting its segments from the file's states at
    ``steps`` (``checkpoint_steps``).

    Returns:
        ``(value, grads, probe_grads)`` as the whole-run computation gives them: floats for
        parameters, host arrays for fields and probes (``(len(probe_steps), *shape)``).
    """
    held = _RunFile(path, run, steps)
    return _reverse(run, objective, held, _segments(run, steps), params, fields, probe_fields)


def _parts(run: DifferentiableRun, held: _RunFile, segments: list[tuple[int, int]],
           wanted: Mapping[str, Any], start: Mapping[str, Any], put: Callable[[Any], Any]
           ) -> Iterator[tuple[int, DifferentiableRun, dict[str, np.ndarray],
                               Mapping[str, Any]]]:
    """Per segment, last first: where it starts, the segment's run keeping only the streams of
    ``wanted`` that capture in it, their rows there, and the state it starts from (``start`` at
    step 0, else the file's, on the device)."""
    for first, last in segments:
        _stop.check()  # between segments: a signal stops the gradient phase here
        part = run.segment(first, last)
        rows = {s: r for s, r in _rows(run, first, last).items() if len(r) and s in wanted}
        part.captures = tuple(c for c in part.captures if c.name in rows)
        state = start if first == 0 else {k: put(v) for k, v in held.states[first].items()}
        yield first, part, rows, state


def _probe_zeros(run: DifferentiableRun, held: _RunFile, probe_fields: Sequence[str]
                 ) -> dict[str, np.ndarray]:
    return {f: np.zeros((len(run.probe_steps), *held.final[f].shape), dtype=held.final[f].dtype)
            for f in probe_fields}


def _putter(run: DifferentiableRun) -> Callable[[np.ndarray], Any]:
    """Host arrays onto the run's device: in the run's dtype where the file holds that one,
    else in their own (summaries are float64 in any run)."""
    dtype = np.dtype(run.dtype)
    return lambda value: run.backend.asarray(value, cast=np.asarray(value).dtype == dtype)


def _nonzero(cts: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """The cotangents of the streams the objective depends on (some value not zero): the
    others need not be taken again in the segments."""
    return {s: c for s, c in cts.items() if any(np.any(v) for v in c.values())}


def _values(captures: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s: {n: v for n, v in c.items() if n != schema.STEP} for s, c in captures.items()}


def _with_steps(values: Mapping[str, Mapping[str, Any]], held: _RunFile
                ) -> dict[str, dict[str, Any]]:
    return {s: {schema.STEP: held.steps[s], **v} for s, v in values.items()}


def _place(probe_grads: dict[str, np.ndarray], run: DifferentiableRun, part: DifferentiableRun,
           first: int, found: Mapping[str, Any]) -> None:
    at = [run.probe_steps.index(first + s) for s in part.probe_steps]
    for name, value in found.items():
        probe_grads[name][at] = _host(run, value)


# ----------------------------------------------------------------------------- the pass


def _reverse(run: DifferentiableRun, objective: Objective, held: _RunFile,
             segments: list[tuple[int, int]], params: Sequence[str], fields: Sequence[str],
             probe_fields: Sequence[str]
             ) -> tuple[float, dict[str, Any], dict[str, np.ndarray]]:
    ops, put = run.ops, _putter(run)
    p0, f0 = run.initial_params(), run.initial_fields()
    value, lam, ct_host = _seed(run, objective, held, put)
    grads = {k: array_namespace(p0[k]).zeros_like(p0[k]) for k in params}
    probe_grads = _probe_zeros(run, held, probe_fields)
    fixed = {k: v for k, v in p0.items() if k not in params}
    compiled: dict[tuple[Any, ...], Any] = {}
    for first, part, rows, start in _parts(run, held, segments, ct_host, f0, put):
        key = (part.steps, tuple((c.name, c.steps) for c in part.captures), part.probe_steps,
               tuple(rows))
        if key not in compiled:
            # One compiled backward pass for every segment of the same shape: the offset is
            # an argument.
            compiled[key] = ops.compiled(_pull_back(part, fixed))
        xp = array_namespace(*start.values())
        probes = {f: xp.zeros((len(part.probe_steps), *start[f].shape), dtype=start[f].dtype,
                              device=device(start[f]))
                  for f in probe_fields} if part.probe_steps and probe_fields else None
        ct = {s: {n: put(v[rows[s]]) for n, v in ct_host[s].items()} for s in rows}
        dp, lam, dprobes = compiled[key]({k: p0[k] for k in params}, start, probes,
                                         ops.index(first), lam, ct)
        grads = {k: grads[k] + dp[k] for k in params}
        if dprobes:
            _place(probe_grads, run, part, first, dprobes)
    # The run started where the parameters put it (initial_params): the rest of their
    # derivative goes through the initial state.
    _, pull = ops.vjp(lambda p, f: run.at_params(f, {**p0, **p}), {k: p0[k] for k in params},
                      f0)
    dp, lam = pull(lam)
    grads = {k: grads[k] + dp[k] for k in params}
    out: dict[str, Any] = {k: float(grads[k]) for k in params}
    out.update({k: _host(run, lam[k]) for k in fields})
    return float(value), out, probe_grads


def _seed(run: DifferentiableRun, objective: Objective, held: _RunFile,
          put: Callable[[Any], Any]
          ) -> tuple[Any, dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The objective of the file's final state and captures, and its derivatives: with
    respect to the final state (on the device) and to the captures the objective depends on
    (on the host: they go back a segment's rows at a time)."""
    final = {k: put(v) for k, v in held.final.items()}
    values = {s: {n: put(v) for n, v in c.items()} for s, c in held.captures.items()}
    value, pull = run.ops.vjp(lambda f, c: real_scalar(objective(f, _with_steps(c, held))),
                              final, values)
    ct_final, ct_values = pull(array_namespace(value).ones_like(value))
    ct_host = _nonzero({s: {n: _host(run, v) for n, v in c.items()}
                        for s, c in ct_values.items()})
    return value, ct_final, ct_host


def _pull_back(part: DifferentiableRun, fixed: Mapping[str, Any]) -> Callable[..., Any]:
    """``(p, x, probes, offset, lam, ct) -> (dp, dx, dprobes)``: the segment's vjp from its
    start, seeded with the adjoint ``lam`` of its end and the cotangents ``ct`` of its
    captures (``{stream: {name: rows}}``)."""
    ops = part.ops

    def pull_back(p: Any, x: Any, probes: Any, offset: Any, lam: Any, ct: Any) -> Any:
        def forward(p: Any, x: Any, probes: Any) -> tuple[Any, Any]:
            end, captures = part({**fixed, **p}, x, probes, offset=offset)
            return end, {s: {n: captures[s][n] for n in names} for s, names in ct.items()}

        _, vjp = ops.vjp(forward, p, x, probes)
        return vjp((lam, ct))

    return pull_back


def _host(run: DifferentiableRun, value: Any) -> np.ndarray:
    return run.backend.to_host({"value": value})["value"]
