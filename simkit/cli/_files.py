"""The commands on a run's file: ``recover``, ``inspect``, ``plot``, ``watch``, ``stop``,
``export``, ``tensorboard``; and ``schema`` and ``list``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


def _run_file(path: str) -> None:
    from simkit.errors import ScenarioError
    from simkit.io import is_zarr

    if is_zarr(path):  # a Zarr run (a directory, or in S3): its reader tells what is wrong
        return
    if not Path(path).is_file():
        what = ("a directory" if Path(path).is_dir() else "a path that does not exist"
                if not Path(path).exists() else "a FIFO, device or socket")
        raise ScenarioError(f"expected an existing NetCDF file written by simkit, given {what}",
                            source=path)


def _reading(path: str, read: Callable[[str], _T]) -> _T:
    """``read(path)`` of a run file, a file that cannot be read said as bad input."""
    from simkit.errors import ScenarioError

    _run_file(path)
    try:
        return read(path)
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=path) from None


def _cmd_recover(args: argparse.Namespace) -> int:
    from simkit.io import recover

    kept = _reading(args.file, recover)
    print(f"{args.file}: " + ", ".join(f"{name} {n} captures" for name, n in kept.items()))
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


def _cmd_inspect(args: argparse.Namespace) -> int:
    from simkit.io.inspect import describe

    text = _reading(args.file, describe)
    print(text)  # after reading: a closed pipe (`| head`) says nothing about the file
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

