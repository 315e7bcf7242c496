"""The ``simkit`` command: run, resume, recover, inspect, list.

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
             "inspect": _cmd_inspect, "list": _cmd_list}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simkit`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except SimkitError as error:
        print(f"simkit: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("simkit: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, then the traceback on request
        print(f"simkit: error: {type(error).__name__}: {error}", file=sys.stderr)
        if "--debug" in (argv or sys.argv):
            raise
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
