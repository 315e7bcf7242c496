"""Reading a run file back for a human: streams, captured steps, fields and provenance."""

from __future__ import annotations

import json
import os

import numpy as np

from simkit.io import schema
from simkit.io._factory import open_reader
from simkit.io._protocol import RunReader
from simkit.io.live import writer_alive
from simkit.io.recover import require_run_file


def summarize_steps(steps: list[int]) -> str:
    """Compact text for a list of steps, e.g. '0..1000 every 100 (11)'."""
    n = len(steps)
    if n == 0:
        return "none"
    if n > 3:
        gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
        if len(gaps) == 1:
            return f"{steps[0]}..{steps[-1]} every {gaps.pop()} ({n})"
    if n <= 8:
        return ", ".join(map(str, steps)) + f" ({n})"
    head = ", ".join(map(str, steps[:4]))
    tail = ", ".join(map(str, steps[-2:]))
    return f"{head}, ..., {tail} ({n})"


def describe(path: str | os.PathLike[str]) -> str:
    """A text summary of a run file.

    An unfinished run (killed, stopped or still running) has no final state yet: its root group
    holds only the grid, and the summary says so.
    """
    require_run_file(path)
    with open_reader(path) as reader:
        attrs = reader.attrs()
        lines = [f"{path}: {attrs.get(schema.ATTR_SOLVER, '?')} on "
                 f"{attrs.get(schema.ATTR_BACKEND, '?')} ({attrs.get(schema.ATTR_DEVICE, '?')},"
                 f" {attrs.get(schema.ATTR_DTYPE, '?')}), status "
                 f"{attrs.get(schema.ATTR_STATUS, '?')}"]
        if schema.ATTR_ERROR in attrs:
            lines.append(f"error: {attrs[schema.ATTR_ERROR]}")
        lines.append(_final_line(reader))
        lines.append(f"grid: {', '.join(f'{d}={n}' for d, n in reader.grid().items())}")
        running = attrs.get(schema.ATTR_STATUS) == schema.STATUS_RUNNING \
            and writer_alive(path) is not False
        lines.extend(_stream_lines(reader, str(attrs.get(schema.ATTR_STREAMS, "")).split(),
                                   running))
        lines.extend(_gradient_lines(reader, attrs))
    lines.append("provenance:")
    for key in schema.PROVENANCE_ATTRS:
        if key in attrs:
            value = attrs[key]
            if key == schema.ATTR_VERSIONS:
                value = ", ".join(f"{k} {v}" for k, v in json.loads(str(value)).items())
            lines.append(f"  {key.removeprefix('simkit_')}: {value}")
    lines.append("  scenario:")
    lines.extend("    " + line for line in str(attrs.get(schema.ATTR_SCENARIO, "")).splitlines())
    return "\n".join(lines)


def _final_line(reader: RunReader) -> str:
    variables = {v.name: v for v in reader.variables()}
    grid = reader.grid()
    step = reader.value(schema.STEP) if schema.STEP in variables else None
    if step is None:
        return ("final state: not written (the run did not finish; "
                "the root group holds no state until it does)")
    final = [name for name, v in variables.items() if v.dims and name not in grid
             and not name.startswith(schema.GRADIENT_PREFIX)]
    time = reader.value(schema.TIME)
    return (f"final state: step {int(step)}, time {float(_scalar(time)):g} "
            f"{variables[schema.TIME].units}; fields {', '.join(final)}")


def _scalar(value: np.ndarray | None) -> float:
    return float("nan") if value is None else float(value)


def _stream_lines(reader: RunReader, streams: list[str], running: bool) -> list[str]:
    """One line per stream: what it holds and its whole captures (steps written, checksums
    right): a writer that died between a capture's data and its step leaves a torn one at the
    end."""
    whole = reader.whole_counts()
    lengths = reader.lengths()
    lines = []
    for name in streams:
        n = whole[name]
        captures = reader.captures(name, n, names=())
        steps = [int(s) for s in captures.steps]
        times = captures.times
        own = reader.stream_attrs(name)
        what = ", ".join(str(v) for v in (own[schema.ATTR_STREAM_FIELDS],
                                          own[schema.ATTR_STREAM_DIAGNOSTICS]) if v)
        span = f", time {float(times[0]):g}..{float(times[-1]):g}" if steps else ""
        torn = lengths[name] - n
        after = "" if not torn else (
            f"; {torn} more not whole yet (being written)" if running else
            f"; {torn} torn or corrupt after them (`simkit recover` drops "
            f"{'them' if torn > 1 else 'it'})")
        lines.append(f"stream {name}: {what}; steps {summarize_steps(steps)}{span}{after}")
    return lines


def _gradient_lines(reader: RunReader, attrs: dict[str, object]) -> list[str]:
    """What a differentiated run added: the objective, its gradients, its adjoint streams."""
    variables = {v.name: v for v in reader.variables()}
    if schema.ATTR_OBJECTIVE not in attrs or schema.OBJECTIVE not in variables:
        return []
    policy = json.loads(str(attrs.get(schema.ATTR_CHECKPOINT, '"?"')))
    if isinstance(policy, dict):  # {"binomial": N}, as a scenario writes it
        policy = "{" + ", ".join(f"{k}: {v}" for k, v in policy.items()) + "}"
    reused = attrs.get(schema.ATTR_REUSED)
    how = f"checkpoint {policy}" + ("" if reused is None else
                                    f", {int(np.asarray(reused))} of the run's checkpoints reused")
    objective = _scalar(reader.value(schema.OBJECTIVE))
    lines = [f"objective {attrs[schema.ATTR_OBJECTIVE]}: {objective:.6g} "
             f"{variables[schema.OBJECTIVE].units} ({how})"]
    for name, var in variables.items():
        if not name.startswith(schema.GRADIENT_PREFIX):
            continue
        wrt = name.removeprefix(schema.GRADIENT_PREFIX)
        value = reader.value(name)
        if var.dims:  # an initial field's, named as wrt names it
            wrt = "initial." + wrt.removeprefix("initial_")
            array = np.asarray(value)
            lines.append(f"  gradient {wrt}: {' x '.join(map(str, array.shape))} array, "
                         f"largest |value| {float(np.max(np.abs(array))):.6g} {var.units}")
        else:
            lines.append(f"  gradient {wrt}: {_scalar(value):.6g} {var.units}")
    for name in str(attrs.get(schema.ATTR_GRADIENT_STREAMS, "")).split():
        steps = reader.steps({name: None})[name]
        fields = [v.name for v in reader.variables(name) if v.dims[1:]]
        lines.append(f"adjoint stream {name}: {', '.join(fields)}; steps "
                     f"{summarize_steps(steps)}")
    return lines
