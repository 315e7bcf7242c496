"""The command line's parser: the global options and each command's arguments, one piece per
command; the commands are added in the order ``simkit --help`` lists them."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

SCENARIO_DIR = Path("scenarios")

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simkit",
        description="Staged physics simulation with scheduled captures into one NetCDF file.")
    parser.add_argument("--version", action="version", version=_version())
    _global_options(parser, {"verbose": 0, "log_quiet": False, "debug": False, "quiet": False})
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMAND_PARSERS:
        add(sub)
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


def _add_run(sub: Commands) -> None:
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


def _add_resume(sub: Commands) -> None:
    resume = sub.add_parser("resume", help="continue a stopped run from its last checkpoint",
                            description="Continue a killed or failed run from its last "
                            "checkpoint; the result equals an uninterrupted run.")
    resume.add_argument("file", help="NetCDF file of the stopped run")
    resume.add_argument("--scenario", help="refuse unless the file was run from this scenario")
    _distributed_arguments(resume)


def _add_recover(sub: Commands) -> None:
    recover = sub.add_parser("recover", help="drop torn or corrupt trailing captures of a file",
                             description="Make a crashed run's file hold only whole captures. "
                             "Safe to run twice.")
    recover.add_argument("file", help="NetCDF file of the stopped run")


def _add_validate(sub: Commands) -> None:
    validate = sub.add_parser("validate", help="check a scenario file without running it")
    validate.add_argument("scenario", help="scenario YAML file")
    validate.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")


def _add_schema(sub: Commands) -> None:
    sub.add_parser("schema", help="print the JSON Schema of scenario files",
                   description="Print the JSON Schema of scenario files (for editors): "
                   "simkit schema > simkit.schema.json")


def _add_plot(sub: Commands) -> None:
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


def _add_watch(sub: Commands) -> None:
    watch = sub.add_parser("watch", help="live view of a running run (until it ends)")
    watch.add_argument("file", help="NetCDF file a run is writing")
    watch.add_argument("--interval", type=_interval, default=1.0,
                       help="seconds between refreshes (default 1)")


def _add_stop(sub: Commands) -> None:
    stop = sub.add_parser("stop", help="ask a running run to stop at its next block boundary, "
                                       "leaving a resumable file")
    stop.add_argument("file", help="NetCDF file a run is writing")
    stop.add_argument("--wait", action="store_true", help="return once the run has stopped")


def _add_sweep(sub: Commands) -> None:
    sweep = sub.add_parser("sweep", help="run a parameter sweep on Dask")
    sweep.add_argument("file", help="sweep YAML file")
    sweep.add_argument("--scheduler", help="address of a running Dask scheduler "
                       "(default: a local cluster)")
    sweep.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    sweep.add_argument("--vectorize", action="store_true",
                       help="JAX: run all members through one block loop with a leading member "
                            "axis (vmap) on one device; members may differ only in real params")


def _add_inspect(sub: Commands) -> None:
    inspect = sub.add_parser("inspect", help="show what a run file holds")
    inspect.add_argument("file", help="NetCDF file written by simkit run")


def _add_export(sub: Commands) -> None:
    export = sub.add_parser("export", help="write one stream as a flat, CF-clean NetCDF file "
                                           "(one group: for tools without group support)")
    export.add_argument("file", help="NetCDF file written by simkit run")
    export.add_argument("--stream", required=True, help="the stream to export")
    export.add_argument("-o", "--output", required=True, help="the flat file to write")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _add_tensorboard(sub: Commands) -> None:
    board = sub.add_parser("tensorboard", help="write a run file's captures as TensorBoard "
                                               "events (needs simkit[tensorboard])")
    board.add_argument("file", help="NetCDF file written by simkit run or simkit.record")
    board.add_argument("logdir", help="directory for the event files (tensorboard --logdir)")


def _add_list(sub: Commands) -> None:
    listing = sub.add_parser("list", help="list solvers and scenarios")
    listing.add_argument("--scenarios", default=str(SCENARIO_DIR), metavar="DIR",
                         help="directory of scenario files (default: ./scenarios)")


_COMMAND_PARSERS: tuple[Callable[[Commands], None], ...] = (
    _add_run, _add_resume, _add_recover, _add_validate, _add_schema, _add_plot, _add_watch,
    _add_stop, _add_sweep, _add_inspect, _add_export, _add_tensorboard, _add_list)


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

