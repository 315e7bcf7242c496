"""The commands that run: ``run`` (with its objective), ``resume``, ``validate`` and ``sweep``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from simkit.cli._progress import _MembersBar, _progress_bar


def _set_distributed(args: argparse.Namespace) -> None:
    """Hand the multi-process options to the JAX backend (which joins before it uses JAX)."""
    from simkit.backends._base import COORDINATOR_ENV, PROCESS_ID_ENV, PROCESSES_ENV

    for name, value in ((COORDINATOR_ENV, args.coordinator), (PROCESSES_ENV, args.processes),
                        (PROCESS_ID_ENV, args.process_id)):
        if value is not None:
            os.environ[name] = str(value)


def _cmd_run(args: argparse.Namespace) -> int:
    from simkit.api import run, run_or_resume
    from simkit.io.zarr_paths import location

    _set_distributed(args)

    overrides = {k: v for k, v in (("output", args.output), ("backend", args.backend),
                                   ("device", args.device), ("dtype", args.dtype)) if v}
    if args.eager:
        overrides["compile"] = False
    if args.resume and args.overwrite:
        from simkit.errors import ScenarioError

        raise ScenarioError("expected one of --resume (keep the output) or --overwrite "
                            "(replace it), given both", key="--resume")
    if _has_objective(args.scenario, args.sets):
        return _run_objective(args, overrides)
    bar = _progress_bar(args.quiet)
    try:
        if args.resume:
            action, result = run_or_resume(args.scenario, sets=args.sets, progress=bar,
                                           allow_import=args.allow_import or None, **overrides)
        else:
            action, result = "started", run(args.scenario, sets=args.sets,
                                            overwrite=args.overwrite, progress=bar,
                                            allow_import=args.allow_import or None, **overrides)
    finally:
        if bar is not None:
            bar.close()
    if action == "complete":
        print(f"simkit: {result.path} is already complete; nothing to do", file=sys.stderr)
    print(location(result.path))  # an s3:// URL as given, not as pathlib keeps it
    return 0


def _has_objective(scenario: str, sets: list[str]) -> bool:
    """Whether the scenario (with its --set overrides) asks for gradients (``objective:``)."""
    from simkit.scenario import read_scenario_file

    _, data, _ = read_scenario_file(scenario)
    return (isinstance(data, dict) and data.get("objective") is not None) or any(
        s.partition("=")[0].strip().split(".")[0] == "objective" for s in sets)


def _run_objective(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``simkit run`` of a scenario with an objective: the run file with its gradients."""
    from simkit.api import resume
    from simkit.autodiff import resume_gradients, run_scenario
    from simkit.scenario import plan_run

    output = None
    if args.resume:  # an unfinished file is finished (its forward run, then its gradients)
        output = plan_run(args.scenario, sets=args.sets, overrides=overrides, overwrite=True,
                          allow_import=args.allow_import or None).output
        output = output if os.path.lexists(output) else None
    bar = _progress_bar(args.quiet)

    def start() -> Any:
        if output is not None:
            return resume(output, scenario=args.scenario, progress=bar,
                          allow_import=args.allow_import or None, gradients=resume_gradients)
        return run_scenario(args.scenario, sets=args.sets, overwrite=args.overwrite,
                            allow_import=args.allow_import or None, progress=bar, **overrides)

    return _finished(start, bar, f"{output} is already complete; nothing to do", output)


def _cmd_resume(args: argparse.Namespace) -> int:
    from simkit.api import resume
    from simkit.autodiff import resume_gradients

    _set_distributed(args)
    bar = _progress_bar(args.quiet)
    return _finished(lambda: resume(args.file, scenario=args.scenario, progress=bar,
                                    allow_import=args.allow_import or None,
                                    gradients=resume_gradients),
                     bar, f"{args.file} is already complete; nothing to resume", args.file)


def _finished(start: Callable[[], Any], bar: Any, complete: str, path: Any) -> int:
    """Run ``start()`` with its progress ``bar`` and print the file it wrote; a file that is
    already complete is not an error (friendly for requeued batch jobs): say ``complete``."""
    from simkit.errors import RunComplete
    from simkit.io.zarr_paths import location

    try:
        result = start()
    except RunComplete:
        print(f"simkit: {complete}", file=sys.stderr)
        print(path)
        return 0
    finally:
        if bar is not None:
            bar.close()
    print(location(result.path))  # an s3:// URL as given, not as pathlib keeps it
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from simkit.scenario import plan_run

    plan = plan_run(args.scenario, sets=args.sets, overwrite=True,
                    allow_import=args.allow_import or None)
    streams = ", ".join(s.name for s in plan.streams) or "none"
    length = (f"{plan.scenario.steps} steps" if plan.scenario.steps is not None
              else f"until {plan.scenario.until:g}")
    gradient = None
    if _has_objective(args.scenario, args.sets):  # checked whole before anything is said
        from simkit.autodiff import check_scenario

        gradient = check_scenario(args.scenario, sets=args.sets,
                                  allow_import=args.allow_import or None)
    print(f"{args.scenario}: valid ({plan.solver.name}, {plan.scenario.backend}, {length}, "
          f"dt {plan.dt:g}, streams: {streams})")
    if gradient is not None:
        print(f"{args.scenario}: {gradient}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from simkit.solver import ALLOW_IMPORT_ENV
    from simkit.sweep import run_sweep

    if args.allow_import:
        # Members are planned again in Dask worker processes, which inherit the environment.
        os.environ[ALLOW_IMPORT_ENV] = "1"
    import logging

    # Dask's own log messages: errors only, warnings with -v, everything with -vv.
    dask_level = logging.ERROR if args.log_quiet else \
        (logging.ERROR, logging.WARNING, logging.INFO)[min(args.verbose, 2)]
    bar = _MembersBar() if not args.quiet and sys.stderr.isatty() else None
    try:
        result = run_sweep(args.file, scheduler=args.scheduler, workers=args.workers,
                           vectorize=args.vectorize, progress=bar, dask_log_level=dask_level)
    finally:
        if bar is not None:
            bar.close()
    interrupted = f", {len(result.interrupted)} interrupted" if result.stopped_by else ""
    print(f"members: {len(result.done)} complete ({len(result.skipped)} already were), "
          f"{len(result.failed)} failed{interrupted}")
    for index, error in result.failed.items():
        print(f"  member {index} failed: {error}", file=sys.stderr)
    for line in result.not_combined:
        print(f"  not combined: {line}", file=sys.stderr)
    if result.stopped_by:
        print(f"simkit: interrupted by {result.stopped_by}; the members not complete run again "
              f"with `simkit sweep {args.file}`", file=sys.stderr)
        return 128 + int(getattr(signal, result.stopped_by, signal.SIGINT))
    if result.combined:
        print(result.combined)
    return 1 if result.failed else 0

