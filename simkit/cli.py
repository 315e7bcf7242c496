"""The ``simkit`` command: run, resume, recover, inspect, list, validate, schema, plot, sweep.

Heavy libraries (xarray, JAX, PyTorch) are imported only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simkit import _stop
from simkit.errors import EXIT_FAILURE, RunInterrupted, SimkitError

SCENARIO_DIR = Path("scenarios")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simkit",
        description="Staged physics simulation with scheduled captures into one NetCDF file.")
    parser.add_argument("--version", action="version", version=_version())
    _global_options(parser, {"verbose": 0, "log_quiet": False, "debug": False, "quiet": False})
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario file",
                         description="Run a scenario; print where the NetCDF file went.")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("-o", "--output", help="output NetCDF file (default: the scenario's)")
    run.add_argument("--backend", choices=("numpy", "jax", "torch"))
    run.add_argument("--device", choices=("cpu", "gpu", "auto"))
    run.add_argument("--dtype", choices=("float32", "float64"))
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key, e.g. --set params.diffusivity=0.5")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    run.add_argument("--resume", action="store_true",
                     help="idempotent, for requeued batch jobs: start when the output does not "
                          "exist, resume it when unfinished, do nothing when complete")
    run.add_argument("--eager", action="store_true",
                     help="no compilation: step by step (jax.disable_jit, torch eager), to debug")
    _distributed_arguments(run)

    resume = sub.add_parser("resume", help="continue a stopped run from its last checkpoint",
                            description="Continue a killed or failed run from its last "
                            "checkpoint; the result equals an uninterrupted run.")
    resume.add_argument("file", help="NetCDF file of the stopped run")
    resume.add_argument("--scenario", help="refuse unless the file was run from this scenario")
    _distributed_arguments(resume)

    recover = sub.add_parser("recover", help="drop torn or corrupt trailing captures of a file",
                             description="Make a crashed run's file hold only whole captures. "
                             "Safe to run twice.")
    recover.add_argument("file", help="NetCDF file of the stopped run")

    validate = sub.add_parser("validate", help="check a scenario file without running it")
    validate.add_argument("scenario", help="scenario YAML file")
    validate.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")

    sub.add_parser("schema", help="print the JSON Schema of scenario files",
                   description="Print the JSON Schema of scenario files (for editors): "
                   "simkit schema > simkit.schema.json")

    plot = sub.add_parser("plot", help="draw a captured field or diagnostic")
    plot.add_argument("file", help="NetCDF file written by simkit run")
    plot.add_argument("--field", required=True, help="field or diagnostic to draw")
    plot.add_argument("--stream", help="stream to take it from (default: the first holding it)")
    plot.add_argument("-o", "--output", help="out.png (panels), out.gif or out.mp4 (animation)")
    plot.add_argument("--panels", type=int, default=9, help="panels in a grid (default 9)")
    plot.add_argument("--summary", action="store_true",
                      help="draw the field's summaries (mean, min..max, quantile bands) over time")
    plot.add_argument("--color-scale", choices=("auto", "linear", "log"), default="auto",
                      help="colours of a histogram image (default auto: log when one bin holds "
                           "far more than the others)")

    plot.add_argument("--follow", action="store_true",
                      help="redraw --output every few seconds while the run goes on; stops when "
                           "it ends")

    watch = sub.add_parser("watch", help="live view of a running run (until it ends)")
    watch.add_argument("file", help="NetCDF file a run is writing")
    watch.add_argument("--interval", type=_interval, default=1.0,
                       help="seconds between refreshes (default 1)")

    stop = sub.add_parser("stop", help="ask a running run to stop at its next block boundary, "
                                       "leaving a resumable file")
    stop.add_argument("file", help="NetCDF file a run is writing")
    stop.add_argument("--wait", action="store_true", help="return once the run has stopped")

    sweep = sub.add_parser("sweep", help="run a parameter sweep on Dask")
    sweep.add_argument("file", help="sweep YAML file")
    sweep.add_argument("--scheduler", help="address of a running Dask scheduler "
                       "(default: a local cluster)")
    sweep.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    sweep.add_argument("--vectorize", action="store_true",
                       help="JAX: run all members through one block loop with a leading member "
                            "axis (vmap) on one device; members may differ only in real params")

    inspect = sub.add_parser("inspect", help="show what a run file holds")
    inspect.add_argument("file", help="NetCDF file written by simkit run")

    export = sub.add_parser("export", help="write one stream as a flat, CF-clean NetCDF file "
                                           "(one group: for tools without group support)")
    export.add_argument("file", help="NetCDF file written by simkit run")
    export.add_argument("--stream", required=True, help="the stream to export")
    export.add_argument("-o", "--output", required=True, help="the flat file to write")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output")

    board = sub.add_parser("tensorboard", help="write a run file's captures as TensorBoard "
                                               "events (needs simkit[tensorboard])")
    board.add_argument("file", help="NetCDF file written by simkit run or simkit.record")
    board.add_argument("logdir", help="directory for the event files (tensorboard --logdir)")

    listing = sub.add_parser("list", help="list solvers and scenarios")
    listing.add_argument("--scenarios", default=str(SCENARIO_DIR), metavar="DIR",
                         help="directory of scenario files (default: ./scenarios)")
    # The global options are accepted after the command too (`simkit run s.yaml -q --debug`);
    # SUPPRESS keeps a command from resetting one given before it.
    for command in sub.choices.values():
        _global_options(command, dict.fromkeys(("log_quiet", "debug", "quiet"),
                                               argparse.SUPPRESS), verbose="verbose_after")
    # `solver: module:Class` imports (runs) that module: never for a scenario not asked to.
    for name in ("run", "resume", "validate", "sweep"):
        sub.choices[name].add_argument(
            "--allow-import", dest="allow_import", action="store_true",
            help="allow `solver: module:Class`, which imports and runs that module (searched "
                 "first beside the scenario file); also SIMKIT_ALLOW_IMPORT=1")
    return parser


def _global_options(parser: argparse.ArgumentParser, defaults: dict[str, Any],
                    verbose: str = "verbose") -> None:
    """The options every command takes, before or after its name (``verbose``: where -v
    counts, so that `simkit -v run s.yaml -v` is -vv)."""
    parser.add_argument("-v", "--verbose", dest=verbose, action="count",
                        default=defaults.get(verbose, 0), help="more log messages (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", default=defaults["quiet"],
                        help="no progress bar")
    parser.add_argument("--log-quiet", dest="log_quiet", action="store_true",
                        default=defaults["log_quiet"], help="errors only in the log")
    parser.add_argument("--debug", action="store_true", default=defaults["debug"],
                        help="print the traceback after the one-line error message")


def _distributed_arguments(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "several processes (jax, a run split over the devices of several hosts; default: the "
        "SIMKIT_COORDINATOR, SIMKIT_PROCESSES and SIMKIT_PROCESS_ID environment variables)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0's coordinator (auto: from the cluster, SLURM)")
    group.add_argument("--processes", type=int, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index")


def _set_distributed(args: argparse.Namespace) -> None:
    """Hand the multi-process options to the JAX backend (which joins before it uses JAX)."""
    from simkit.backends._base import COORDINATOR_ENV, PROCESS_ID_ENV, PROCESSES_ENV

    for name, value in ((COORDINATOR_ENV, args.coordinator), (PROCESSES_ENV, args.processes),
                        (PROCESS_ID_ENV, args.process_id)):
        if value is not None:
            os.environ[name] = str(value)


def _interval(text: str) -> float:
    """A refresh interval of at least 0.05 s (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0.05:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0.05, given {text!r}")
    return value


def _version() -> str:
    from simkit._version import __version__

    return f"simkit {__version__}"


class _ProgressBar:
    """A rich progress bar on stderr that appears only once a run has taken over a second."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._first: tuple[int, float] | None = None  # (step, clock) of the first update
        self._bar = None
        self._task = None

    def __call__(self, step: int, sim_time: float, written: int, total: int | None) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first = (step, now)
        # A resumed run starts at its checkpoint: the rate counts only steps taken here.
        first_step, first_clock = self._first
        rate = (step - first_step) / (now - first_clock) if now > first_clock else 0.0
        # Every column's field is set when the task is added: rich renders from its own
        # refresh thread, possibly before the first update.
        fields = {"sim_time": sim_time, "written": written, "rate": rate,
                  "steps": f"{step:>8d}" + (f"/{total}" if total is not None else "")}
        if self._bar is None:
            if now - self._start < 1.0:
                return
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("step {task.fields[steps]}"), BarColumn(),
                TextColumn("t={task.fields[sim_time]:.4g}"),
                TextColumn("{task.fields[rate]:.0f} steps/s"),
                TextColumn("{task.fields[written]} captures"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("run", total=total, completed=step, **fields)
            self._bar.start()
        self._bar.update(self._task, completed=step, total=total, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _progress_bar(quiet: bool) -> _ProgressBar | None:
    """A progress bar when stderr is a terminal and not ``--quiet``."""
    return _ProgressBar() if not quiet and sys.stderr.isatty() else None


def _cmd_run(args: argparse.Namespace) -> int:
    from simkit.api import run, run_or_resume

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
    print(result.path)
    return 0


def _has_objective(scenario: str, sets: list[str]) -> bool:
    """Whether the scenario (with its --set overrides) asks for gradients (``objective:``)."""
    from simkit.scenario import read_scenario_file

    _, data, _ = read_scenario_file(scenario)
    return (isinstance(data, dict) and data.get("objective") is not None) or any(
        s.partition("=")[0].strip().split(".")[0] == "objective" for s in sets)


def _run_objective(args: argparse.Namespace, overrides: dict) -> int:
    """``simkit run`` of a scenario with an objective: the run file with its gradients."""
    from simkit.api import resume
    from simkit.autodiff import resume_gradients, run_scenario
    from simkit.errors import RunComplete
    from simkit.scenario import plan_run

    output = None
    if args.resume:  # an unfinished file is finished (its forward run, then its gradients)
        output = plan_run(args.scenario, sets=args.sets, overrides=overrides, overwrite=True,
                          allow_import=args.allow_import or None).output
        output = output if os.path.lexists(output) else None
    bar = _progress_bar(args.quiet)
    try:
        if output is not None:
            result = resume(output, scenario=args.scenario, progress=bar,
                            allow_import=args.allow_import or None, gradients=resume_gradients)
        else:
            result = run_scenario(args.scenario, sets=args.sets, overwrite=args.overwrite,
                                  allow_import=args.allow_import or None, progress=bar,
                                  **overrides)
    except RunComplete:
        print(f"simkit: {output} is already complete; nothing to do", file=sys.stderr)
        print(output)
        return 0
    finally:
        if bar is not None:
            bar.close()
    print(result.path)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from simkit.api import resume
    from simkit.autodiff import resume_gradients
    from simkit.errors import RunComplete

    _set_distributed(args)
    bar = _progress_bar(args.quiet)
    try:
        result = resume(args.file, scenario=args.scenario, progress=bar,
                        allow_import=args.allow_import or None, gradients=resume_gradients)
    except RunComplete:
        # Friendly for requeued batch jobs: nothing left to do is not an error.
        print(f"simkit: {args.file} is already complete; nothing to resume", file=sys.stderr)
        print(args.file)
        return 0
    finally:
        if bar is not None:
            bar.close()
    print(result.path)
    return 0


def _run_file(path: str) -> None:
    from simkit.errors import ScenarioError

    if not Path(path).is_file():
        what = ("a directory" if Path(path).is_dir() else "a path that does not exist"
                if not Path(path).exists() else "a FIFO, device or socket")
        raise ScenarioError(f"expected an existing NetCDF file written by simkit, given {what}",
                            source=path)


def _cmd_recover(args: argparse.Namespace) -> int:
    from simkit.errors import ScenarioError
    from simkit.io import recover

    _run_file(args.file)
    try:
        kept = recover(args.file)
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=args.file) from None
    print(f"{args.file}: " + ", ".join(f"{name} {n} captures" for name, n in kept.items()))
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


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from simkit.scenario import scenario_json_schema

    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from simkit.plot import plot

    _run_file(args.file)
    if args.follow:
        return _follow_plot(args, plot)
    print(plot(args.file, args.field, stream=args.stream, output=args.output,
               panels=args.panels, summary=args.summary, color_scale=args.color_scale))
    return 0


def _follow_plot(args: argparse.Namespace, plot: Any) -> int:
    """Redraw the image while the run writing the file goes on; a draw that meets the file
    mid-update is retried at the next turn."""
    from simkit.errors import ScenarioError
    from simkit.io import live_summary, schema, writer_alive

    if not args.output or Path(args.output).suffix.lower() != ".png":
        raise ScenarioError(f"expected an --output .png to redraw with --follow, given "
                            f"{args.output!r}", key="--output")
    drawn = None
    while True:
        status = live_summary(args.file)["attrs"].get(schema.ATTR_STATUS)
        running = status == schema.STATUS_RUNNING and writer_alive(args.file) is not False
        try:
            drawn = plot(args.file, args.field, stream=args.stream, output=args.output,
                         panels=args.panels, summary=args.summary,
                         color_scale=args.color_scale)
        except (OSError, RuntimeError, KeyError, ValueError):
            if not running:
                raise
        if not running:
            break
        time.sleep(2.0)
    print(drawn)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from simkit.live import WATCH_EXIT, watch

    _run_file(args.file)
    status = watch(args.file, interval=args.interval)
    return WATCH_EXIT.get(status, 1)


def _cmd_stop(args: argparse.Namespace) -> int:
    from simkit.io import live_summary, schema, writer_alive
    from simkit.live import stop

    _run_file(args.file)
    stop(args.file)
    print(f"asked the run writing {args.file} to stop at its next block boundary")
    if args.wait:
        while (live_summary(args.file)["attrs"].get(schema.ATTR_STATUS)
               == schema.STATUS_RUNNING and writer_alive(args.file) is not False):
            time.sleep(0.2)
        print(f"stopped: continue it with `simkit resume {args.file}`")
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


class _MembersBar:
    """A rich progress bar over a sweep's members, on stderr."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def __call__(self, ended: int, total: int) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("members"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("sweep", total=total, completed=ended)
            self._bar.start()
        self._bar.update(self._task, completed=ended, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _cmd_inspect(args: argparse.Namespace) -> int:
    from simkit.errors import ScenarioError
    from simkit.io.inspect import describe

    _run_file(args.file)
    try:
        text = describe(args.file)
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=args.file) from None
    print(text)  # outside the try: a closed pipe (`| head`) says nothing about the file
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from simkit.io import export_stream

    _run_file(args.file)
    print(export_stream(args.file, args.stream, args.output, overwrite=args.overwrite))
    return 0


def _cmd_tensorboard(args: argparse.Namespace) -> int:
    from simkit.tensorboard import to_tensorboard

    _run_file(args.file)
    print(to_tensorboard(args.file, args.logdir))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from simkit.errors import ScenarioError
    from simkit.scenario import read_scenario_file
    from simkit.solver import available_solvers, load_solver

    print("solvers:")
    names = available_solvers()
    for name in names:  # one column for the descriptions, however long the names
        print(f"  {name:<{max(map(len, names))}} {load_solver(name).description}")
    directory = Path(args.scenarios)
    print(f"scenarios ({directory}):")
    paths = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    for path in paths:
        try:
            _, data, _ = read_scenario_file(path)
            solver = data.get("solver", "?") if isinstance(data, dict) else "?"
        except ScenarioError:
            solver = "(invalid)"
        print(f"  {str(path):<{max(len(str(p)) for p in paths)}} {solver}")
    return 0


_COMMANDS = {"run": _cmd_run, "resume": _cmd_resume, "recover": _cmd_recover,
             "inspect": _cmd_inspect, "list": _cmd_list, "validate": _cmd_validate,
             "schema": _cmd_schema, "plot": _cmd_plot, "sweep": _cmd_sweep,
             "export": _cmd_export, "tensorboard": _cmd_tensorboard, "watch": _cmd_watch,
             "stop": _cmd_stop}


#: Signals that stop a command: batch schedulers send SIGTERM before they kill, a closed
#: terminal or ssh session sends SIGHUP, Ctrl-C SIGINT.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Stop cleanly on SIGTERM, SIGHUP and SIGINT: a run stops at its next block boundary (queued
    captures written, the file closed and marked interrupted, ready for ``simkit resume``), any
    other command by KeyboardInterrupt.

    During a run a signal is only a flag (``simkit._stop``) the run loop checks: raised as an
    exception it could land in a library's callback, which swallows it, and the run would go on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread
        return
    _stop.clear()

    def interrupt(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if not _stop.note(name):  # no run under way: stop whatever the command is doing
            raise KeyboardInterrupt(name)

    previous = {}
    for name in _STOP_SIGNALS:
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None:
            previous[number] = signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupted(error: KeyboardInterrupt) -> int:
    """Say what an interrupted command left behind; the exit code is 128 + the signal."""
    reason = str(error) or "SIGINT"  # Ctrl-C's KeyboardInterrupt carries no name
    if isinstance(error, RunInterrupted) and error.path is not None:
        message = (f"interrupted by {reason}; the run so far is in {error.path}: continue it "
                   f"with `simkit resume {error.path}`")
    elif isinstance(error, RunInterrupted):
        message = f"interrupted by {reason} before anything was written"
    else:
        message = f"interrupted by {reason}"
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print(f"simkit: {message}", file=sys.stderr)
    number = getattr(signal, reason, None)
    return 128 + int(number) if number is not None else 130


def _stdout_closed() -> int:
    """The reader of our output went away (`simkit inspect f.nc | head`): not an error of ours.
    Exit quietly, as a command killed by SIGPIPE would (141)."""
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """simkit's own warnings as one line like its errors; others as Python shows them."""
    if category.__name__ == "SimkitWarning":
        print(f"simkit: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simkit`` command; returns the exit code."""
    with _stop_signals_interrupt(), contextlib.ExitStack() as deferring:
        # Until the command is known a stop signal is only noted: a run takes it at its first
        # block boundary, any other command raises it below.
        deferring.enter_context(_stop.deferred())
        args = _parser().parse_args(argv)
        args.verbose += getattr(args, "verbose_after", 0)
        import logging

        level = logging.ERROR if args.log_quiet else \
            (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
        logging.basicConfig(level=level, format="simkit: %(levelname)s: %(message)s")
        warnings.showwarning = _show_warning
        return _command(args, deferring)


def _command(args: argparse.Namespace, deferring: contextlib.ExitStack) -> int:
    """Run the command; its errors as one line and an exit code."""
    try:
        # A run takes stop signals as a flag throughout: its loop stops at a block boundary, the
        # gradients of an objective between their segments and before they are written.
        runs = args.command in ("sweep", "resume", "run")
        if not runs:
            deferring.close()
            _stop.check()
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, while BrokenPipeError is caught
        if runs and code == 0 and _stop.received():
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                print(f"simkit: {_stop.received()} arrived once the run was complete; nothing "
                      f"to stop", file=sys.stderr)
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except SimkitError as error:
        print(f"simkit: error: {error}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return error.exit_code
    except KeyboardInterrupt as error:
        return _interrupted(error)
    except Exception as error:  # noqa: BLE001 - one line, then the traceback on request
        text = " ".join(str(error).split("\n"))
        print(f"simkit: error: {type(error).__name__}: {text}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
