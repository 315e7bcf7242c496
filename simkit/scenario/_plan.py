"""``plan_run``: a scenario loaded, overridden and validated into a ``RunPlan``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from simkit.errors import ScenarioError
from simkit.io import is_zarr
from simkit.scenario._additions import _additions, _extend
from simkit.scenario._checks import (
    _check_initial,
    _check_memory,
    _check_output,
    _check_output_text,
    _mesh,
)
from simkit.scenario._load import MAX_DEPTH, KeyPath, read_scenario_file
from simkit.scenario._model import RunPlan, Scenario, validate_model
from simkit.scenario._overrides import _plain, apply_override, merge_overrides
from simkit.scenario._python import objects_as_mappings
from simkit.scenario._streams import (
    _check_capture_count,
    _check_stream_count,
    _check_stream_fires,
    _stop_when,
    _stream,
    _warn_questionable,
)
from simkit.schedule import MAX_STEP
from simkit.solver import load_solver

_DEFAULT_OUTPUT_DIR = "runs"


def plan_run(
    scenario: str | os.PathLike[str] | Mapping[str, Any] | Scenario,
    *,
    sets: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    allow_import: bool | None = None,
    search: Sequence[str | os.PathLike[str]] = (),
) -> RunPlan:
    """Load, override and validate a scenario; nothing is computed or written.

    Args:
        scenario: a scenario file, a mapping of scenario data, or a ``Scenario``. From Python,
            a stream of ``outputs`` or ``gradients`` may be a ``simkit.Stream`` (or a bare
            schedule) and ``stop_when`` a ``simkit.When``: planned and recorded as the mappings
            a file would hold.
        sets: ``KEY.PATH=VALUE`` overrides, as on the command line.
        overrides: keyword overrides, merged deeply (e.g. ``{"params": {"diffusivity": 0.5}}``).
        overwrite: allow replacing an existing output file.
        allow_import: allow ``solver: module:Class``, which imports (runs) that module, searched
            first beside the scenario file; None reads the ``SIMKIT_ALLOW_IMPORT`` environment
            variable. Registered solver names never need it.
        search: more directories for such imports, after the scenario file's (a resumed run's
            recorded scenario has no file: its run file and original scenario file's).

    Raises:
        ScenarioError: for any bad input, naming file, line, key path, expected and given.
    """
    source: str | None = None
    lines: dict[KeyPath, int] = {}
    if isinstance(scenario, Scenario):
        data = scenario.model_dump(exclude_none=True)
    elif isinstance(scenario, Mapping):
        try:
            data = _plain(scenario)
        except RecursionError:
            raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given far "
                                "more", source="<scenario>") from None
    else:
        source = str(scenario)
        _, data, lines = read_scenario_file(scenario)
        if not isinstance(data, dict):
            raise ScenarioError(f"expected a mapping of scenario keys, given {data!r}",
                                source=source, line=1)
    try:
        for assignment in sets:
            apply_override(data, assignment)
        merge_overrides(data, overrides or {})
        return _plan(data, source, overwrite, allow_import, search)
    except RecursionError:
        # Python-side data has no YAML loader to bound its depth.
        raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given far more",
                            source=source or "<scenario>") from None
    except ScenarioError as error:
        raise locate(error, source, lines, sets) from None


def locate(error: ScenarioError, source: str | None, lines: Mapping[KeyPath, int],
           sets: Sequence[str] = ()) -> ScenarioError:
    """``error`` said of the scenario ``source`` at the line of its key (``lines``, as
    ``read_scenario_file`` gives them), or of the ``--set`` that gave the key its value."""
    if error.source:
        return error
    # List items are named key[i]: their lines are under the item's index.
    path = tuple(error.key.replace("[", ".").replace("]", "").split(".")) if error.key else ()
    line = None
    while path and line is None:
        line = lines.get(path) or lines.get(tuple(int(p) if p.isdigit() else p for p in path))
        path = path[:-1]
    overridden = [s for s in sets if error.key and
                  (error.key + ".").startswith(s.partition("=")[0].strip() + ".")]
    where = source or "<scenario>"
    if overridden:
        where += f" (--set {overridden[-1]})"
        line = None
    return error.located(where, line)


def _run_length(scenario: Scenario, dt: float) -> int:
    """The run's step limit (``until`` converted at the nominal ``dt``), bounded."""
    if scenario.steps is not None:
        return scenario.steps
    assert scenario.until is not None  # the model holds exactly one of them
    steps = scenario.until / dt
    if steps > MAX_STEP:
        raise ScenarioError(f"expected at most {MAX_STEP} steps (until / dt), given until "
                            f"{scenario.until:g} with dt {dt:g}: {steps:.3g} steps", key="until")
    return math.ceil(steps)


def _plan(data: dict[str, Any], source: str | None, overwrite: bool,
          allow_import: bool | None = None, extra: Sequence[str | os.PathLike[str]] = ()
          ) -> RunPlan:
    objects_as_mappings(data)
    scenario: Scenario = validate_model(Scenario, data)
    _check_stream_count(scenario)
    if scenario.gradients and scenario.objective is None:
        raise ScenarioError("expected an objective block beside gradients (they are adjoints of "
                            "an objective), given none", key="gradients")
    if scenario.output is not None:
        _check_output_text(scenario.output)
    search = ((Path(source).parent,) if source else ()) + tuple(Path(d) for d in extra)
    solver_cls = load_solver(scenario.solver, allow_import=allow_import, search=search)
    params = validate_model(solver_cls.Params, scenario.params, ("params",))
    initial = validate_model(solver_cls.Initial, scenario.initial, ("initial",))
    try:
        solver = solver_cls(params)  # type: ignore[call-arg]  # a solver takes its Params
        _check_memory(solver, scenario.dtype)
    except ScenarioError:
        raise
    except (MemoryError, OverflowError, ValueError) as error:
        # Sizes pydantic let through can still be too large to lay out (10**12 trajectories).
        raise ScenarioError(f"expected params {solver_cls.name} can lay out in memory, given ones "
                            f"that fail ({type(error).__name__})", key="params") from None
    limit = solver.max_stable_dt()
    dt = scenario.dt if scenario.dt is not None else solver.default_dt()
    if limit is not None and dt > limit:
        raise ScenarioError(f"expected at most {limit:g}, the stable limit of {solver.name} for "
                            f"these params, given {dt:g}", key="dt")
    steps = _run_length(scenario, dt)
    solver = _extend(solver, scenario, initial,
                     _additions(scenario, solver, allow_import, search))
    streams = tuple(_stream(name, spec, solver) for name, spec in scenario.outputs.items())
    for stream in streams:
        _check_stream_fires(stream, scenario, steps, dt)
        _check_capture_count(stream, scenario, steps, dt)
    if scenario.output is not None:
        output = Path(scenario.output)
        if scenario.format is not None and (scenario.format == "zarr") != is_zarr(output):
            wanted = "ending in .zarr (or an s3:// URL)" if scenario.format == "zarr" \
                else "not ending in .zarr"
            raise ScenarioError(f"expected an output {wanted} for format: {scenario.format}, "
                                f"given {scenario.output!r}", key="output")
    else:
        stem = Path(source).stem if source else scenario.solver
        suffix = ".zarr" if scenario.format == "zarr" else ".nc"
        output = Path(_DEFAULT_OUTPUT_DIR) / f"{stem}{suffix}"
    if scenario.objective is not None and is_zarr(output):
        raise ScenarioError(f"expected a NetCDF output for a run with an objective (gradients "
                            f"are written to NetCDF files only), given {str(output)!r}",
                            key="output")
    inputs = {"scenario file": source} if source else {}
    if isinstance(getattr(initial, "path", None), str):
        inputs["initial condition file"] = initial.path
    misfit = (scenario.objective or {}).get("misfit")
    if isinstance(misfit, Mapping) and isinstance(misfit.get("path"), str):
        inputs["observations file (objective.misfit.path)"] = misfit["path"]
    _check_output(output, overwrite, inputs)
    stop_when = _stop_when(scenario, solver)
    _check_initial(solver, initial, scenario.seed)
    mesh = _mesh(scenario, solver)
    _warn_questionable(scenario, solver, streams, dt, steps)
    text = yaml.safe_dump(scenario.model_dump(exclude_none=True), sort_keys=False)
    return RunPlan(scenario=scenario, solver=solver, initial=initial, dt=dt, streams=streams,
                   output=output, overwrite=overwrite, text=text, source=source,
                   stop_when=stop_when, mesh=mesh)
