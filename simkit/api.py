"""The Python entry point: one call runs a scenario and returns the file and the final state."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simkit.backends._base import COORDINATOR_ENV
from simkit.driver import CaptureFn, ProgressFn, ResumePoint, RunResult, execute
from simkit.errors import RunComplete, ScenarioError
from simkit.io import (
    Checkpoint,
    exclusive,
    open_reader,
    read_attrs,
    release,
    require_run_file,
    rewrite,
    run_exists,
    schema,
)
from simkit.io.schema import ATTR_GRADIENTS, GRADIENTS_AWAITED, GRADIENTS_PENDING
from simkit.scenario import RunPlan, Scenario, plan_run


def _check_inputs(scenario: Any, sets: Any) -> None:
    """Refuse, with one line, arguments of the wrong type (they would fail deep inside)."""
    if isinstance(scenario, bool) or not isinstance(scenario, (str, os.PathLike, Mapping,
                                                               Scenario)):
        raise ScenarioError(f"expected a scenario file path, a mapping or a Scenario, given "
                            f"{type(scenario).__name__} {scenario!r:.60}", key="scenario")
    if isinstance(sets, (str, bytes)) or not isinstance(sets, Sequence) or \
            not all(isinstance(item, str) for item in sets):
        raise ScenarioError(f"expected a list of 'KEY=VALUE' strings, given "
                            f"{type(sets).__name__} {sets!r:.60}", key="sets")


def run(
    scenario: str | os.PathLike | Mapping[str, Any] | Scenario,
    *,
    sets: Sequence[str] = (),
    overwrite: bool = False,
    resume: bool = False,
    progress: ProgressFn | None = None,
    allow_import: bool | None = None,
    on_capture: CaptureFn | None = None,
    **overrides: Any,
) -> RunResult:
    """Run a scenario and write its NetCDF file.

    Args:
        scenario: a scenario file, a mapping of scenario data, or a ``Scenario``.
        sets: ``KEY.PATH=VALUE`` overrides, as ``--set`` on the command line.
        overwrite: replace an existing output file (only once the run has finished).
        resume: keep an existing output file of this scenario: resume it when unfinished,
            return it as it is when complete (see ``run_or_resume``).
        progress: called between segments with ``(step, time, captures_written, steps)``.
        allow_import: allow ``solver: module:Class``, which imports (runs) that module; None
            reads the ``SIMKIT_ALLOW_IMPORT`` environment variable. Registered names never need it.
        on_capture: called with each ``Capture`` (stream, step, time, host copies) once it is on
            disk, on the writer's thread, while the run goes on (``simkit.iterate`` for a loop).
        **overrides: scenario keys to replace, merged deeply, e.g. ``backend="jax"`` or
            ``params={"diffusivity": 0.5}``.

    Returns:
        ``RunResult`` with the output ``path``, the final ``state`` (host arrays), ``step`` and
        ``time``.

    Raises:
        simkit.errors.ScenarioError: bad input; nothing was written.
        simkit.errors.RunInterrupted: Ctrl-C (or SIGTERM/SIGHUP under the CLI); the file so far
            is kept for ``resume``.
    """
    _check_inputs(scenario, sets)
    if resume:
        if overwrite:
            raise ScenarioError("expected one of resume (keep the output) or overwrite (replace "
                                "it), given both", key="resume")
        return run_or_resume(scenario, sets=sets, progress=progress, allow_import=allow_import,
                             **overrides)[1]
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=overwrite,
                    allow_import=allow_import)
    return execute(plan, progress=progress, on_capture=on_capture)


def run_or_resume(
    scenario: str | os.PathLike | Mapping[str, Any] | Scenario,
    *,
    sets: Sequence[str] = (),
    progress: ProgressFn | None = None,
    allow_import: bool | None = None,
    **overrides: Any,
) -> tuple[str, RunResult]:
    """Start, continue or leave alone the run of a scenario: safe to call any number of times,
    e.g. by a batch job that is requeued after preemption (``simkit run FILE --resume``).

    Args:
        scenario, sets, progress, allow_import, overrides: as for ``run``.

    Returns:
        What was done, ``"started"`` (no output file), ``"resumed"`` (an unfinished one) or
        ``"complete"`` (nothing: the file's final state is returned), and the result.

    Raises:
        simkit.errors.ScenarioError: bad input, or an output file that holds another scenario's
            run (or another solver version's): it is never touched.
    """
    _check_inputs(scenario, sets)
    # overwrite=True only to plan: an existing output is expected here, and is never replaced.
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=True,
                    allow_import=allow_import)
    output = plan.output
    if not run_exists(output):
        return "started", execute(dataclasses.replace(plan, overwrite=False), progress=progress)
    attrs = _run_attrs(output)
    if _without_output(attrs[schema.ATTR_SCENARIO]) != _without_output(plan.text):
        raise ScenarioError("expected the output file to hold a run of this scenario (with these "
                            "overrides) to resume, given one of a different scenario; choose "
                            "another output or --overwrite", source=str(output))
    try:
        return "resumed", resume(output, progress=progress, allow_import=allow_import)
    except RunComplete:
        return "complete", _complete_result(output, plan.field_names)


def _without_output(text: str) -> Any:
    data = yaml.safe_load(text)
    if isinstance(data, dict):
        data.pop("output", None)
    return data


def _run_attrs(path: str | os.PathLike) -> dict[str, object]:
    """The root attributes of a run file simkit wrote, or a ScenarioError naming the file."""
    require_run_file(path)  # exists, reads as NetCDF, has a run file's parts
    attrs = read_attrs(path)
    if schema.ATTR_SCENARIO not in attrs:
        raise ScenarioError("expected a run file written by simkit, given one without a recorded "
                            "scenario", source=str(path))
    if attrs.get(schema.ATTR_SOLVER) == "record":
        raise ScenarioError("expected the file of a scenario run, given a recording of a loop "
                            "(simkit.record): the loop itself continues it", source=str(path))
    _recorded_scenario(attrs, path)
    return attrs


def _recorded_scenario(attrs: Mapping[str, object], path: str | os.PathLike) -> dict[str, Any]:
    """The scenario recorded in a run file's attributes, or a ScenarioError naming the file and
    the attribute (safe_load: a tag never constructs anything)."""
    given = None
    try:
        data = yaml.safe_load(str(attrs[schema.ATTR_SCENARIO]))
    except yaml.constructor.ConstructorError:
        given = "a YAML tag that is not allowed"
    except yaml.YAMLError:
        given = "YAML that does not parse"
    else:
        if not isinstance(data, dict):
            given = {list: "a list", str: "a string", type(None): "nothing"}.get(
                type(data), f"a {type(data).__name__}")
    if given is not None:
        raise ScenarioError(f"expected the scenario the run was made from, a YAML mapping, "
                            f"given {given}", source=str(path), key=schema.ATTR_SCENARIO)
    return data


def _check_layout(path: str | os.PathLike, attrs: Mapping[str, object], plan: RunPlan) -> None:
    """Refuse a recorded scenario whose grid or streams are not the file's (a file whose
    attribute was edited): resumed, it would drop the captures on disk and fail at the end.

    Raises:
        ScenarioError: naming the file, the attribute and what differs.
    """
    streams = [s.name for s in plan.streams]
    held = str(attrs.get(schema.ATTR_STREAMS, "")).split()
    with open_reader(path) as reader:
        grid = reader.grid()
    wanted = plan.sizes
    given = None
    if any(grid.get(name) != size for name, size in wanted.items()):
        def shown(sizes: Mapping[str, object]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sizes.items())
        given = (f"one for a grid of {shown(wanted)} (the file's is "
                 f"{shown({k: grid.get(k, 'none') for k in wanted})})")
    elif sorted(streams) != sorted(held):
        given = (f"one with the streams {' '.join(streams) or 'none'} (the file's are "
                 f"{' '.join(held) or 'none'})")
    if given is not None:
        raise ScenarioError(f"expected the scenario the run was made from, given {given}",
                            source=str(path), key=schema.ATTR_SCENARIO)


def _complete_result(path: Path, names: Sequence[str]) -> RunResult:
    """The result of a run that already finished, read back from its file's root group (the
    final state of the fields ``names``)."""
    with open_reader(path) as reader:
        final = reader.final_state(names)
    if final is None:
        raise ScenarioError("expected a complete run's final state, given a file without one",
                            source=str(path))
    return RunResult(path=Path(path), state=final.fields, step=final.step, time=final.time)


def _joined() -> tuple[int, Any]:
    """This process's index among the processes of a run split over hosts (0 for a run of one
    process), and the barrier that waits for all of them."""
    if not os.environ.get(COORDINATOR_ENV):
        return 0, lambda name: None
    from simkit.backends.jax import barrier, initialize_distributed

    initialize_distributed()
    import jax

    return jax.process_index(), barrier


def _complete_up_to(plan: RunPlan, steps: dict[str, list[int]], committed: int | None
                    ) -> int | None:
    """The last step up to which the file holds every capture its streams are due: what the
    file says (``committed``; None in files that do not say), and before the next step any
    stream of step schedules is due at after its last whole capture (so a capture lost
    before the file said so, or in a file that does not say, is never bridged by a later
    checkpoint)."""
    bound = committed
    for stream in plan.streams:
        if not stream.schedule.steps_known:
            continue  # due when a condition or a clock says: the file's word only
        taken = steps.get(stream.name, [])
        due = stream.schedule.next_step(taken[-1] if taken else -1)
        if due is not None:
            bound = due - 1 if bound is None else min(bound, due - 1)
    return bound


def resume(
    path: str | os.PathLike,
    *,
    scenario: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    allow_import: bool | None = None,
    gradients: Callable[[RunPlan, ResumePoint | None, ProgressFn | None], Any] | None = None,
) -> RunResult:
    """Continue a run that stopped (killed, disk full, non-finite) from its last checkpoint.

    Torn or corrupt trailing captures are dropped; every stream keeps its captures up to the
    checkpoint's step, and the run goes on from there, so the final state and every stream end up
    as an uninterrupted run's. Without a checkpoint the run restarts from its initial state.

    Args:
        path: the run file.
        scenario: when given, the resume is refused unless this scenario is the recorded one.
        progress: as for ``run``.
        allow_import: as for ``run``: a file's recorded ``solver: module:Class`` is imported
            only when allowed, so resuming a file from elsewhere runs no code it names.
        gradients: for a run whose scenario has an ``objective``: finishes it, called with the
            plan, the point its forward run goes on from (None: the forward run is whole, only
            the gradients are missing) and ``progress``, and its result returned
            (``simkit.autodiff.resume_gradients``, what ``simkit resume`` passes).

    Raises:
        ScenarioError: the file is missing, or from a different scenario or solver version; a
            run with an objective without ``gradients``.
        RunComplete: (a ScenarioError) the run already finished; the file is left as it is.
            ``simkit resume`` says so and exits 0.
    """
    # Several processes (a run split over hosts): process 0 repairs the file, the others read
    # it once it has, and process 0 appends only once they have.
    index, barrier = _joined()
    if index:
        barrier("simkit resume: file repaired")
    if Path(path).is_file():  # never under a run still writing it (refused with its name)
        release(exclusive(path))
    attrs = _run_attrs(path)
    plan = _recorded_plan(path, attrs, scenario, allow_import)
    objective = _check_resumable(path, attrs, plan, gradients)
    if objective and attrs.get(ATTR_GRADIENTS) == GRADIENTS_PENDING:
        assert gradients is not None
        return gradients(plan, None, progress)
    point = _cut_at_checkpoint(path, attrs, plan, write=not index, barrier=barrier)
    if objective:
        assert gradients is not None
        return gradients(plan, point, progress)
    return execute(plan, progress=progress, resume=point)


def _recorded_plan(path: str | os.PathLike[str], attrs: Mapping[str, object],
                   scenario: str | os.PathLike[str] | None, allow_import: bool | None
                   ) -> RunPlan:
    """The plan of the run recorded in the file (refused unless it matches the file's layout,
    and ``scenario`` when given)."""
    source = str(path)
    recorded = _recorded_scenario(attrs, path)
    # Modules a recorded scenario names by reference are looked for where the scenario file
    # was, and beside the run file.
    recorded_file = str(attrs.get(schema.ATTR_SCENARIO_FILE, "") or "")
    search = [Path(p).parent for p in (recorded_file, source) if p]
    plan = plan_run({**recorded, "output": source}, overwrite=True, allow_import=allow_import,
                    search=search)
    _check_layout(path, attrs, plan)
    if scenario is not None:
        _check_inputs(scenario, ())
        given = plan_run(scenario, overrides={"output": source}, overwrite=True,
                         allow_import=allow_import)
        if given.text != plan.text:
            raise ScenarioError("expected the scenario recorded in the file, given a different "
                                "one; start a new run instead", source=str(scenario))
    return plan


def _check_resumable(path: str | os.PathLike[str], attrs: Mapping[str, object], plan: RunPlan,
                     gradients: object) -> bool:
    """Refuse a run that is complete, of another solver version, or whose gradients cannot be
    computed here; returns whether the run has an objective."""
    source = str(path)
    # After the scenario check: a complete run of another scenario is not "nothing to do".
    if attrs.get(schema.ATTR_STATUS) == schema.STATUS_COMPLETE:
        raise RunComplete("expected an unfinished run, given one that is complete",
                          source=source)
    version = str(attrs.get(schema.ATTR_SOLVER_VERSION))
    if version != plan.solver.version:
        raise ScenarioError(f"expected solver {plan.solver.name} version {version} as recorded, "
                            f"given version {plan.solver.version} installed", source=source)
    objective = plan.scenario.objective is not None
    if not objective and attrs.get(ATTR_GRADIENTS) in (GRADIENTS_AWAITED, GRADIENTS_PENDING):
        raise ScenarioError("expected a run whose gradients simkit resume can compute (an "
                            "objective block in its scenario), given one whose gradients of a "
                            "Python objective are not written; call value_and_grad with output= "
                            "again", source=source)
    if objective and gradients is None:
        raise ScenarioError("expected a run without an objective, given one whose gradients "
                            "are still to be computed: simkit resume finishes it", source=source)
    return objective


def _cut_at_checkpoint(path: str | os.PathLike[str], attrs: Mapping[str, object],
                       plan: RunPlan, *, write: bool, barrier: Callable[[str], None]
                       ) -> ResumePoint:
    """Cut the file back to its latest usable checkpoint (``write``: this process rewrites it)
    and return the point the run goes on from."""
    with open_reader(path) as reader:
        counts = reader.whole_counts()
        # Only end-of-step full states are checkpoints (a stage stream's are mid-step states),
        # and only those no later than the step up to which every stream's captures are on
        # disk: a crash during a flush may keep a checkpoint and lose another stream's
        # captures before it.
        steps = reader.steps(counts)
        committed = attrs.get(schema.ATTR_COMMITTED)
        upto = _complete_up_to(plan, steps, None if committed is None else int(committed))
        checkpoint: Checkpoint | None = reader.latest_checkpoint(
            plan.field_names,
            {s.name: counts[s.name] for s in plan.streams if plan.is_checkpoint(s)},
            upto=upto)
    cut = checkpoint.step if checkpoint is not None else -1
    keep = {name: sum(1 for s in stream_steps if s <= cut) for name, stream_steps in steps.items()}
    if write:
        # The copy holds every capture up to the checkpoint, none after it, and says so.
        rewrite(path, keep, {schema.ATTR_COMMITTED: np.int64(cut)})
        barrier("simkit resume: file repaired")
    barrier("simkit resume: file read")
    last = {name: stream_steps[keep[name] - 1] for name, stream_steps in steps.items()
            if keep[name]}
    if checkpoint is None:
        return ResumePoint(0, 0.0, None, last)
    return ResumePoint(checkpoint.step, checkpoint.time, checkpoint.fields, last,
                       checkpoint.schedules)
