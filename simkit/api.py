"""The Python entry point: one call runs a scenario and returns the file and the final state."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import netCDF4
import yaml

from simkit.driver import ProgressFn, ResumePoint, RunResult, execute
from simkit.errors import ScenarioError
from simkit.io import captured_steps, latest_checkpoint, read_attrs, rewrite, schema, whole_captures
from simkit.scenario import Scenario, plan_run


def run(
    scenario: str | os.PathLike | Mapping[str, Any] | Scenario,
    *,
    sets: Sequence[str] = (),
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> RunResult:
    """Run a scenario and write its NetCDF file.

    Args:
        scenario: a scenario file, a mapping of scenario data, or a ``Scenario``.
        sets: ``KEY.PATH=VALUE`` overrides, as ``--set`` on the command line.
        overwrite: replace an existing output file (only once the run has finished).
        progress: called between segments with ``(step, time, captures_written, steps)``.
        **overrides: scenario keys to replace, merged deeply, e.g. ``backend="jax"`` or
            ``params={"diffusivity": 0.5}``.

    Returns:
        ``RunResult`` with the output ``path``, the final ``state`` (host arrays), ``step`` and
        ``time``.

    Raises:
        simkit.errors.ScenarioError: bad input; nothing was written.
    """
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=overwrite)
    return execute(plan, progress=progress)


def resume(
    path: str | os.PathLike,
    *,
    scenario: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Continue a run that stopped (killed, disk full, non-finite) from its last checkpoint.

    Torn or corrupt trailing captures are dropped; every stream keeps its captures up to the
    checkpoint's step, and the run goes on from there, so the final state and every stream end up
    as an uninterrupted run's. Without a checkpoint the run restarts from its initial state.

    Args:
        path: the run file.
        scenario: when given, the resume is refused unless this scenario is the recorded one.
        progress: as for ``run``.

    Raises:
        ScenarioError: the file is missing, complete, or from a different scenario or solver
            version.
    """
    source = str(path)
    try:
        attrs = read_attrs(path)
    except FileNotFoundError:
        raise ScenarioError("expected an existing run file, given a path that does not exist",
                            source=source) from None
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=source) from None
    if schema.ATTR_SCENARIO not in attrs:
        raise ScenarioError("expected a run file written by simkit, given one without a recorded "
                            "scenario", source=source)
    if attrs.get(schema.ATTR_STATUS) == schema.STATUS_COMPLETE:
        raise ScenarioError("expected an unfinished run, given one that is complete",
                            source=source)
    recorded = yaml.safe_load(str(attrs[schema.ATTR_SCENARIO]))
    plan = plan_run({**recorded, "output": source}, overwrite=True)
    if scenario is not None:
        given = plan_run(scenario, overrides={"output": source}, overwrite=True)
        if given.text != plan.text:
            raise ScenarioError("expected the scenario recorded in the file, given a different "
                                "one; start a new run instead", source=str(scenario))
    version = str(attrs.get(schema.ATTR_SOLVER_VERSION))
    if version != plan.solver.version:
        raise ScenarioError(f"expected solver {plan.solver.name} version {version} as recorded, "
                            f"given version {plan.solver.version} installed", source=source)
    with netCDF4.Dataset(path, "r") as ds:
        counts = whole_captures(ds)
    names = [f.name for f in plan.solver.fields()]
    checkpoint = latest_checkpoint(path, names, counts)
    steps = captured_steps(path, counts)
    cut = checkpoint.step if checkpoint is not None else -1
    keep = {name: sum(1 for s in stream_steps if s <= cut) for name, stream_steps in steps.items()}
    rewrite(path, keep)
    last = {name: stream_steps[keep[name] - 1] for name, stream_steps in steps.items()
            if keep[name]}
    if checkpoint is None:
        point = ResumePoint(0, 0.0, None, last)
    else:
        point = ResumePoint(checkpoint.step, checkpoint.time, checkpoint.fields, last)
    return execute(plan, progress=progress, resume=point)
