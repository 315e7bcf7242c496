"""Reading a run file back for a human: streams, captured steps, fields and provenance."""

from __future__ import annotations

import json
import os

import netCDF4
import numpy as np

from simkit.io import gradients, schema
from simkit.io._lock import hdf5_lock
from simkit.io.live import writer_alive
from simkit.io.recover import require_run_file, whole_captures


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


def describe(path: str | os.PathLike) -> str:
    """A text summary of a run file.

    An unfinished run (killed, stopped or still running) has no final state yet: its root group
    holds only the grid, and the summary says so.
    """
    require_run_file(path)
    lines: list[str] = []
    with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
        attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        lines.append(f"{path}: {attrs.get(schema.ATTR_SOLVER, '?')} on "
                     f"{attrs.get(schema.ATTR_BACKEND, '?')} ({attrs.get(schema.ATTR_DEVICE, '?')},"
                     f" {attrs.get(schema.ATTR_DTYPE, '?')}), status "
                     f"{attrs.get(schema.ATTR_STATUS, '?')}")
        if schema.ATTR_ERROR in attrs:
            lines.append(f"error: {attrs[schema.ATTR_ERROR]}")
        step = ds.variables[schema.STEP][...] if schema.STEP in ds.variables else np.ma.masked
        time = ds.variables.get(schema.TIME)
        final = [v for v in ds.variables if ds.variables[v].dimensions and v not in ds.dimensions
                 and not v.startswith(gradients.GRADIENT_PREFIX)]
        if np.ma.is_masked(step):
            lines.append("final state: not written (the run did not finish; "
                         "the root group holds no state until it does)")
        else:
            lines.append(f"final state: step {int(step)}, time {float(time[...]):g} "
                         f"{time.units}; fields {', '.join(final)}")
        coords = ", ".join(f"{d}={len(ds.dimensions[d])}" for d in ds.dimensions)
        lines.append(f"grid: {coords}")
        # Only whole captures (steps written, checksums right): a writer that died between a
        # capture's data and its step leaves a torn one at the end.
        whole = whole_captures(ds)
        running = attrs.get(schema.ATTR_STATUS) == schema.STATUS_RUNNING \
            and writer_alive(path) is not False
        for name in attrs.get(schema.ATTR_STREAMS, "").split():
            group = ds.groups[name]
            n = whole[name]
            steps = [int(s) for s in np.ma.getdata(group.variables[schema.STEP][:n])]
            times = np.ma.getdata(group.variables[schema.TIME][:n])
            what = ", ".join(v for v in (group.getncattr(schema.ATTR_STREAM_FIELDS),
                                         group.getncattr(schema.ATTR_STREAM_DIAGNOSTICS)) if v)
            span = f", time {float(times[0]):g}..{float(times[-1]):g}" if steps else ""
            torn = len(group.dimensions[schema.STEP_DIM]) - n
            after = "" if not torn else (
                f"; {torn} more not whole yet (being written)" if running else
                f"; {torn} torn or corrupt after them (`simkit recover` drops "
                f"{'them' if torn > 1 else 'it'})")
            lines.append(f"stream {name}: {what}; steps {summarize_steps(steps)}{span}{after}")
        lines.extend(_gradient_lines(ds, attrs))
        lines.append("provenance:")
        for key in schema.PROVENANCE_ATTRS:
            if key in attrs:
                value = attrs[key]
                if key == schema.ATTR_VERSIONS:
                    value = ", ".join(f"{k} {v}" for k, v in json.loads(value).items())
                lines.append(f"  {key.removeprefix('simkit_')}: {value}")
        lines.append("  scenario:")
        lines.extend("    " + line for line in attrs.get(schema.ATTR_SCENARIO, "").splitlines())
    return "\n".join(lines)


def _gradient_lines(ds: netCDF4.Dataset, attrs: dict) -> list[str]:
    """What a differentiated run added: the objective, its gradients, its adjoint streams."""
    if gradients.ATTR_OBJECTIVE not in attrs or gradients.OBJECTIVE not in ds.variables:
        return []
    objective = ds.variables[gradients.OBJECTIVE]
    policy = json.loads(attrs.get(gradients.ATTR_CHECKPOINT, '"?"'))
    if isinstance(policy, dict):  # {"binomial": N}, as a scenario writes it
        policy = "{" + ", ".join(f"{k}: {v}" for k, v in policy.items()) + "}"
    reused = attrs.get(gradients.ATTR_REUSED)
    how = f"checkpoint {policy}" + ("" if reused is None else
                                    f", {int(reused)} of the run's checkpoints reused")
    lines = [f"objective {attrs[gradients.ATTR_OBJECTIVE]}: {float(objective[...]):.6g} "
             f"{objective.units} ({how})"]
    for name, var in ds.variables.items():
        if not name.startswith(gradients.GRADIENT_PREFIX):
            continue
        wrt = name.removeprefix(gradients.GRADIENT_PREFIX)
        if var.dimensions:  # an initial field's, named as wrt names it
            wrt = "initial." + wrt.removeprefix("initial_")
            value = np.asarray(var[...])
            lines.append(f"  gradient {wrt}: {' x '.join(map(str, value.shape))} array, "
                         f"largest |value| {float(np.max(np.abs(value))):.6g} {var.units}")
        else:
            lines.append(f"  gradient {wrt}: {float(var[...]):.6g} {var.units}")
    for name in attrs.get(gradients.ATTR_GRADIENT_STREAMS, "").split():
        group = ds.groups[name]
        steps = [int(s) for s in group.variables[schema.STEP][:]]
        fields = [v for v in group.variables if group.variables[v].dimensions[1:]]
        lines.append(f"adjoint stream {name}: {', '.join(fields)}; steps "
                     f"{summarize_steps(steps)}")
    return lines
