"""The ``simkit`` command: run, resume, recover, inspect, list, validate, schema, plot, sweep.

Heavy libraries (xarray, JAX, PyTorch) are imported only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from simkit.errors import EXIT_FAILURE, SimkitError

SCENARIO_DIR = Path("scenarios")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simkit",
        description="Staged physics simulation with scheduled captures into one NetCDF file.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log messages (-vv for debug)")
    parser.add_argument("--log-quiet", dest="log_quiet", action="store_true",
                        help="errors only in the log")
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
    run.add_argument("--eager", action="store_true",
                     help="no compilation: step by step (jax.disable_jit, torch eager), to debug")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    resume = sub.add_parser("resume", help="continue a stopped run from its last checkpoint",
                            description="Continue a killed or failed run from its last "
                            "checkpoint; the result equals an uninterrupted run.")
    resume.add_argument("file", help="NetCDF file of the stopped run")
    resume.add_argument("--scenario", help="refuse unless the file was run from this scenario")
    resume.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

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

    sweep = sub.add_parser("sweep", help="run a parameter sweep on Dask")
    sweep.add_argument("file", help="sweep YAML file")
    sweep.add_argument("--scheduler", help="address of a running Dask scheduler "
                       "(default: a local cluster)")
    sweep.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    sweep.add_argument("--vectorize", action="store_true",
                       help="JAX: run all members as one batched compiled loop (vmap) on one "
                            "device; members may differ only in scalar params")

    inspect = sub.add_parser("inspect", help="show what a run file holds")
    inspect.add_argument("file", help="NetCDF file written by simkit run")

    listing = sub.add_parser("list", help="list solvers and scenarios")
    listing.add_argument("--scenarios", default=str(SCENARIO_DIR), metavar="DIR",
                         help="directory of scenario files (default: ./scenarios)")
    return parser


def _version() -> str:
    from simkit._version import __version__

    return f"simkit {__version__}"


class _ProgressBar:
    """A rich progress bar that appears only once a run has taken more than a second."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._bar = None
        self._task = None

    def __call__(self, step: int, sim_time: float, written: int, total: int | None) -> None:
        elapsed = time.perf_counter() - self._start
        if self._bar is None:
            if elapsed < 1.0:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("step {task.completed:>8.0f}/{task.total:.0f}"), BarColumn(),
                TextColumn("t={task.fields[sim_time]:.4g}"),
                TextColumn("{task.fields[rate]:.0f} steps/s"),
                TextColumn("{task.fields[written]} captures"), TimeRemainingColumn(),
                transient=True)
            self._bar.start()
            self._task = self._bar.add_task("run", total=total)
        self._bar.update(self._task, completed=step, sim_time=sim_time, written=written,
                         rate=step / elapsed)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _cmd_run(args: argparse.Namespace) -> int:
    from simkit.api import run

    overrides = {k: v for k, v in (("output", args.output), ("backend", args.backend),
                                   ("device", args.device), ("dtype", args.dtype)) if v}
    if args.eager:
        overrides["compile"] = False
    bar = _ProgressBar() if not args.quiet and sys.stderr.isatty() else None
    try:
        result = run(args.scenario, sets=args.sets, overwrite=args.overwrite, progress=bar,
                     **overrides)
    finally:
        if bar is not None:
            bar.close()
    print(result.path)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from simkit.api import resume

    bar = _ProgressBar() if not args.quiet and sys.stderr.isatty() else None
    try:
        result = resume(args.file, scenario=args.scenario, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    print(result.path)
    return 0


def _run_file(path: str) -> None:
    from simkit.errors import ScenarioError

    if not Path(path).is_file():
        raise ScenarioError("expected an existing NetCDF file written by simkit, given a path "
                            "that does not exist", source=path)


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

    plan = plan_run(args.scenario, sets=args.sets, overwrite=True)
    streams = ", ".join(s.name for s in plan.streams) or "none"
    length = (f"{plan.scenario.steps} steps" if plan.scenario.steps is not None
              else f"until {plan.scenario.until:g}")
    print(f"{args.scenario}: valid ({plan.solver.name}, {plan.scenario.backend}, {length}, "
          f"dt {plan.dt:g}, streams: {streams})")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from simkit.scenario import scenario_json_schema

    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from simkit.plot import plot

    _run_file(args.file)
    print(plot(args.file, args.field, stream=args.stream, output=args.output,
               panels=args.panels))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from simkit.sweep import run_sweep

    result = run_sweep(args.file, scheduler=args.scheduler, workers=args.workers,
                       vectorize=args.vectorize)
    print(f"members: {len(result.done)} complete ({len(result.skipped)} already were), "
          f"{len(result.failed)} failed")
    for index, error in result.failed.items():
        print(f"  member {index} failed: {error}", file=sys.stderr)
    if result.combined:
        print(result.combined)
    return 1 if result.failed else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from simkit.errors import ScenarioError
    from simkit.io.inspect import describe

    _run_file(args.file)
    try:
        print(describe(args.file))
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=args.file) from None
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from simkit.errors import ScenarioError
    from simkit.scenario import read_scenario_file
    from simkit.solver import available_solvers, load_solver

    print("solvers:")
    for name in available_solvers():
        cls = load_solver(name)
        print(f"  {name:<12} {cls.description}")
    directory = Path(args.scenarios)
    print(f"scenarios ({directory}):")
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            _, data, _ = read_scenario_file(path)
            solver = data.get("solver", "?") if isinstance(data, dict) else "?"
        except ScenarioError:
            solver = "(invalid)"
        print(f"  {str(path):<36} {solver}")
    return 0


_COMMANDS = {"run": _cmd_run, "resume": _cmd_resume, "recover": _cmd_recover,
             "inspect": _cmd_inspect, "list": _cmd_list, "validate": _cmd_validate,
             "schema": _cmd_schema, "plot": _cmd_plot, "sweep": _cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simkit`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    import logging

    level = logging.ERROR if args.log_quiet else \
        (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="simkit: %(levelname)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except SimkitError as error:
        print(f"simkit: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("simkit: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, then the traceback on request
        text = " ".join(str(error).split("\n"))
        print(f"simkit: error: {type(error).__name__}: {text}", file=sys.stderr)
        if "--debug" in (argv or sys.argv):
            raise
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
