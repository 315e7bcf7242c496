"""Intermediate results while a run goes on: iterate over its captures in-process, read its file
from another process, and ask it to stop from outside."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from simkit.driver import Capture, execute
from simkit.errors import RunInterrupted, ScenarioError
from simkit.io import (
    current_file,
    live_summary,
    read_live,
    request_stop,
    schema,
    writer_alive,
)
from simkit.scenario import Scenario, plan_run

_DONE = object()
logger = logging.getLogger(__name__)


def open(path: str | os.PathLike, group: str | None = None) -> Any:
    """Open a run's file, also while its run is writing it: every whole capture so far.

    Args:
        path: a file written by simkit.
        group: a stream's name for that stream as an ``xarray.Dataset``; None for the file as an
            ``xarray.DataTree``.
    """
    return read_live(path, group)


def stop(path: str | os.PathLike) -> None:
    """Ask the run writing ``path`` (in any process on a machine that sees the file) to stop at
    its next block boundary; its file is then marked interrupted and ``simkit resume`` continues
    it.

    The request is a file left beside the run's file, so it works across processes and
    machines that share the disk. The process running the run exits 130 (``simkit run``) or
    raises ``simkit.errors.RunInterrupted`` (``simkit.run``). Returns at once; ``simkit stop
    --wait`` waits until the run has stopped.

    Args:
        path: the run's file, as given to the run (a run that replaces a file writes a
            temporary beside it, which is found from this name).
    """
    request_stop(path)


def iterate(
    scenario: str | os.PathLike | Mapping[str, Any] | Scenario,
    *,
    streams: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    overwrite: bool = False,
    allow_import: bool | None = None,
    **overrides: Any,
) -> Iterator[Capture]:
    """Run a scenario in the background and yield each capture once it is on disk.

    Captures come per stream in step order (a block's captures of one stream at once). Leaving
    the loop early (``break``, an exception, Ctrl-C) stops the run at its next block boundary
    once the iterator is closed (at once for ``for c in simkit.iterate(...)``; call ``close()``
    on an iterator kept in a variable): its file is marked interrupted and ``simkit.resume``
    continues it to the uninterrupted result. A slow loop slows the run (the captures wait in a bounded queue), never loses them.

    Args:
        scenario, sets, overwrite, allow_import, overrides: as for ``simkit.run``.
        streams: only these streams' captures (default all); every stream is still written.

    Returns:
        As the generator's return value (``StopIteration.value``), the ``RunResult``.
    """
    if isinstance(streams, (str, bytes)):
        raise ScenarioError(f"expected a list of stream names, given {streams!r}",
                            key="streams")
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=overwrite,
                    allow_import=allow_import)
    names = [s.name for s in plan.streams]
    unknown = [name for name in streams or () if name not in names]
    if unknown:
        raise ScenarioError(f"expected streams among {', '.join(names)}, given "
                            f"{', '.join(map(repr, unknown))}", key="streams")
    # Checked and planned now; the run starts at the first ``next``.
    return _captures(plan, set(streams) if streams else None)


def _captures(plan: Any, wanted: set[str] | None) -> Iterator[Capture]:
    items: queue.Queue = queue.Queue(maxsize=64)
    halt = threading.Event()
    outcome: dict[str, Any] = {}

    def put(item: Any) -> None:
        while not halt.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            outcome["result"] = execute(plan, on_capture=lambda capture: put(capture)
                                        if wanted is None or capture.stream in wanted else None,
                                        stop=halt)
        except BaseException as error:  # noqa: BLE001 - handed to the loop
            outcome["error"] = error
        finally:
            items.put(_DONE)  # unbounded wait is safe: the loop drains until this comes

    thread = threading.Thread(target=work, name="simkit-run", daemon=True)
    thread.start()
    item = None
    try:
        while (item := items.get()) is not _DONE:
            yield item
    finally:
        if item is not _DONE:
            halt.set()  # the loop left early: stop the run, then let it finish its writes
            # (not while the interpreter exits: the run's thread is frozen then, and the file
            # is left as a killed run's, which resume continues)
            while item is not _DONE and not sys.is_finalizing():
                try:
                    item = items.get(timeout=0.1)
                except queue.Empty:
                    continue
        thread.join(timeout=None if not sys.is_finalizing() else 0)
    error = outcome.get("error")
    if isinstance(error, RunInterrupted) and halt.is_set():
        moved = error.path is not None and Path(error.path) != Path(plan.output)
        logger.log(logging.WARNING if moved else logging.INFO,
                   "the run was stopped when its captures were left; it is kept in %s: "
                   "simkit.resume continues it", error.path)
        return None
    if error is not None:
        raise error
    return outcome.get("result")


#: Exit codes of ``simkit watch`` by the status a run ends with.
WATCH_EXIT = {schema.STATUS_COMPLETE: 0, schema.STATUS_INTERRUPTED: 0}


def watch(path: str | os.PathLike, interval: float = 1.0, console: Any = None) -> str:
    """Show a live terminal view of the run writing ``path`` (progress, steps per second, the
    latest value of every scalar diagnostic, captures per stream) until it stops running.

    Returns:
        The status the run ended with (``complete``, ``interrupted``, ``failed``, ...), or
        ``gone`` when its process went away without closing the file (a kill: resume it).
    """
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    total = _total_steps(live_summary(path)["attrs"])
    seen: list[tuple[float, int]] = []
    with Live(console=console, refresh_per_second=4, transient=False) as view:
        while True:
            summary = live_summary(path)
            status = str(summary["attrs"].get(schema.ATTR_STATUS, "?"))
            if status == schema.STATUS_RUNNING and writer_alive(current_file(path)) is False:
                # Read again: the run may have closed the file between the two looks.
                summary = live_summary(path)
                status = str(summary["attrs"].get(schema.ATTR_STATUS, "?"))
                if status == schema.STATUS_RUNNING:
                    status = "gone"
            step = max((s["step"] for s in summary["streams"].values()
                        if s["step"] is not None), default=0)
            seen = [*seen[-9:], (time.monotonic(), step)]
            rate = ((seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])
                    if len(seen) > 1 and seen[-1][0] > seen[0][0] else None)
            view.update(_render(path, summary, status, step, total, rate))
            if status != schema.STATUS_RUNNING:
                return status
            time.sleep(interval)


def _total_steps(attrs: Mapping[str, Any]) -> int | None:
    """The run's length in steps from its recorded scenario (None when it runs to a time)."""
    try:
        scenario = yaml.safe_load(str(attrs.get(schema.ATTR_SCENARIO, "")))
    except yaml.YAMLError:
        return None
    steps = scenario.get("steps") if isinstance(scenario, dict) else None
    return int(steps) if isinstance(steps, int) else None


def _render(path: Any, summary: Mapping[str, Any], status: str, step: int, total: int | None,
            rate: float | None) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    attrs = summary["attrs"]
    done = f"{step}/{total}" if total else f"{step}"
    speed = f", {rate:.0f} steps/s" if rate is not None else ""
    times = [s["time"] for s in summary["streams"].values() if s["time"] is not None]
    head = Text(f"{path}: {attrs.get(schema.ATTR_SOLVER, '?')} on "
                f"{attrs.get(schema.ATTR_BACKEND, '?')}, {status}; step {done}"
                f"{f', t={max(times):.6g}' if times else ''}{speed}")
    table = Table("stream", "captures", "last step", "latest values", box=None)
    for name, stream in summary["streams"].items():
        values = ", ".join(f"{k}={v:.6g}" for k, v in stream["scalars"].items())
        table.add_row(name, str(stream["captures"]),
                      "-" if stream["step"] is None else str(stream["step"]), values)
    if status == "gone":
        tail = Text(f"the run's process is gone without closing the file: "
                    f"`simkit resume {path}` continues it")
        return Group(head, table, tail)
    return Group(head, table)
