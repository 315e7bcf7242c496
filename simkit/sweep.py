"""Parameter sweeps and ensembles on Dask distributed: one run file per member, then one combined
dataset along a ``member`` dimension with the swept parameters as coordinates."""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simkit import _stop
from simkit.errors import RunInterrupted, ScenarioError
from simkit.scenario import apply_override, read_scenario_file, validate_model

logger = logging.getLogger(__name__)
COMBINED = "combined.nc"
#: In a sweep's output directory while it stops: members see it between blocks and stop, members
#: not yet started do not start.
STOP_MARKER = ".simkit_sweep.stop"
#: Seconds a stopping sweep waits for its members to say they stopped.
STOP_WAIT = 30.0
#: Called as members end with (members ended, members to run).
SweepProgress = Callable[[int, int], None]
#: Root attribute of a combined file: what could not be combined across members, and why.
ATTR_NOT_COMBINED = "simkit_not_combined"


class SweepFile(BaseModel):
    """A sweep: a base scenario and the values of the keys to vary."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    scenario: str = Field(description="base scenario file (relative to the current directory)")
    parameters: dict[str, list[Any]] = Field(
        description="dotted scenario keys and their values, e.g. params.feed: [0.03, 0.04]")
    combine: Literal["product", "zip"] = "product"
    set: dict[str, Any] = Field(default_factory=dict, description="overrides for every member")
    output: str = Field(description="directory for the member files and combined.nc")


@dataclass(frozen=True)
class Member:
    index: int
    values: dict[str, Any]
    data: dict[str, Any]
    path: Path
    #: Where modules the scenario names by reference are looked for: the base scenario's folder.
    search: tuple[str, ...] = ()

    def label(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.values.items())


@dataclass(frozen=True)
class SweepResult:
    """What a sweep left: the combined file (None when no member completed), the members
    complete (``skipped``: already before this run), failures by member index with their error,
    and one line per kind of variable that could not be combined, saying why."""

    combined: Path | None
    done: list[Member]
    skipped: list[Member]
    failed: dict[int, str]
    not_combined: list[str] = field(default_factory=list)
    #: Set when a stop signal (or Ctrl-C) stopped the sweep: its name. Members it stopped are
    #: in ``interrupted`` (their files marked interrupted), none was combined.
    stopped_by: str | None = None
    interrupted: list[int] = field(default_factory=list)


def load_sweep(path: str | os.PathLike) -> tuple[SweepFile, list[Member]]:
    """Read a sweep file and expand it into members (validated before anything runs)."""

    source = str(path)
    _, data, _ = read_scenario_file(path)
    try:
        sweep = validate_model(SweepFile, data)
    except ScenarioError as error:
        raise error.located(source) from None
    names = list(sweep.parameters)
    columns = [sweep.parameters[name] for name in names]
    if any(not column for column in columns):
        raise ScenarioError("expected at least one value for each parameter, given an empty "
                            "list", source=source, key="parameters")
    if sweep.combine == "zip" and len({len(c) for c in columns}) > 1:
        raise ScenarioError(f"expected lists of one length with combine: zip, given lengths "
                            f"{[len(c) for c in columns]}", source=source, key="parameters")
    rows = itertools.product(*columns) if sweep.combine == "product" else zip(*columns,
                                                                              strict=True)
    _, base, _ = read_scenario_file(sweep.scenario)
    search = (str(Path(sweep.scenario).resolve().parent),)
    directory = Path(sweep.output)
    members = []
    for index, row in enumerate(rows):
        data = copy.deepcopy(base)  # members must not share nested mappings
        values = dict(zip(names, row, strict=True))
        for key, value in {**sweep.set, **values}.items():
            apply_override(data, f"{key}={_yaml(value)}")
        data["output"] = str(directory / f"member_{index:03d}.nc")
        member = Member(index, values, data, directory / f"member_{index:03d}.nc", search)
        try:
            _plan(member)
        except ScenarioError as error:
            raise ScenarioError(f"member {index} ({member.label()}): {error.message}",
                                source=source, key=error.key) from None
        members.append(member)
    return sweep, members


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _is_complete(member: Member) -> bool:
    if not member.path.exists():
        return False
    from simkit.io import read_attrs, schema

    try:
        attrs = read_attrs(member.path)
    except OSError:
        return False
    recorded = attrs.get(schema.ATTR_SCENARIO)
    return (attrs.get(schema.ATTR_STATUS) == schema.STATUS_COMPLETE
            and recorded == _plan(member).text)


def _plan(member: Member) -> Any:
    from simkit.scenario import plan_run

    return plan_run(member.data, overwrite=True, search=member.search)


@dataclass(frozen=True)
class MemberInterrupted:
    """What a member's run stopped by its sweep's stop returns (returned, not raised: Dask's
    workers log every exception as a failure)."""

    message: str


class _Marker:
    """A stop ``execute`` checks between blocks: whether the sweep's stop marker exists."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()


def _note_stop_signals(dask_worker: Any = None) -> None:
    """In a local cluster's worker process (the main thread of its event loop): stop signals sent
    to the whole process group (Ctrl-C in a terminal) are only noted (``simkit._stop``), so the
    member running there stops at its next block boundary and says so, instead of the worker
    dying with it; the sweep's own process stops the sweep."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, lambda signum, frame: _stop.note(signal.Signals(signum).name))


def _run_member(member: Member, marker: Path | None = None) -> str | MemberInterrupted:
    from simkit.driver import execute

    if (marker is not None and marker.exists()) or _stop.received():
        return MemberInterrupted("not started: the sweep was stopping")
    try:
        return str(execute(_plan(member), stop=_Marker(marker) if marker else None).path)
    except RunInterrupted as error:
        return MemberInterrupted(f"stopped; the run so far is in {error.path}")


def run_sweep(path: str | os.PathLike, *, scheduler: str | None = None, workers: int = 2,
              vectorize: bool = False, progress: SweepProgress | None = None,
              dask_log_level: int = logging.ERROR) -> SweepResult:
    """Run every member of a sweep on Dask (a LocalCluster unless ``scheduler`` is given), skip
    members already complete, report failures, and combine what completed.

    With ``vectorize`` (JAX, members differing only in real-valued ``params.*``), the members
    run on one device as one block loop with a leading ``member`` axis instead of on Dask.

    A stop signal the command line noted (``simkit._stop``), or Ctrl-C, stops the sweep: every
    running member stops at its next block boundary (its file marked interrupted), the others do
    not start, and nothing is combined; running the sweep again goes on with what is not complete.

    Args:
        progress: called as members end, with (members ended, members to run).
        dask_log_level: the level of Dask's own log messages, in this process and a local
            cluster's workers (default: errors only).

    Raises:
        ScenarioError: bad sweep file, Dask not installed, or members that cannot be batched.
    """
    sweep, members = load_sweep(path)
    if vectorize:
        return _run_vectorized(sweep, members)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ScenarioError("expected dask.distributed installed: pip install 'simkit[sweep]', "
                            "given a Python without it", key="sweep") from None
    Path(sweep.output).mkdir(parents=True, exist_ok=True)
    skipped = [m for m in members if _is_complete(m)]
    todo = [m for m in members if m not in skipped]
    failed: dict[int, str] = {}
    interrupted: list[int] = []
    stopped_by = None
    if todo:
        logging.getLogger("distributed").setLevel(dask_log_level)
        marker = Path(sweep.output) / STOP_MARKER
        marker.unlink(missing_ok=True)  # left by a sweep that was killed while it stopped
        cluster = None if scheduler else LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            # no dashboard; the scheduler's own HTTP routes on a free port (its default, 8787,
            # is taken by any other cluster on the machine, and Dask then warns)
            scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=dask_log_level)
        try:
            with Client(scheduler or cluster) as client:
                if cluster is not None:
                    client.run(_note_stop_signals)
                futures = {client.submit(_run_member, m, marker.resolve(), pure=False): m
                           for m in todo}
                stopped_by = _wait_for_members(client, futures, marker, progress, failed,
                                               interrupted)
        finally:
            marker.unlink(missing_ok=True)
            if cluster is not None:
                cluster.close()
    if stopped_by is not None:
        done = [m for m in members if m.index not in failed and m.index not in interrupted]
        return SweepResult(None, done, skipped, failed, stopped_by=stopped_by,
                           interrupted=sorted(interrupted))
    done = [m for m in members if m.index not in failed]
    return _result(sweep, done, skipped, failed)


def _wait_for_members(client: Any, futures: dict[Any, Member], marker: Path,
                      progress: SweepProgress | None, failed: dict[int, str],
                      interrupted: list[int]) -> str | None:
    """Collect the members' outcomes as they end; on a stop signal, have the rest stop cleanly
    and wait for them (at most ``STOP_WAIT`` seconds, and not once the workers are gone: a
    Ctrl-C in a terminal stops them too). Returns the stop signal's name, if one came."""
    from dask.distributed import wait

    pending, stopped_by, give_up = set(futures), None, math.inf
    if progress is not None:
        progress(0, len(futures))
    while pending:
        if stopped_by is not None and (time.monotonic() > give_up
                                       or not client.scheduler_info().get("workers")):
            logger.warning("members %s did not say how they stopped",
                           ", ".join(str(futures[f].index) for f in pending))
            interrupted.extend(futures[f].index for f in pending)
            break
        try:
            ended = wait(pending, timeout=0.2, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # (older Dask) none ended yet
            ended = set()
        except KeyboardInterrupt as error:  # Ctrl-C outside the command line's handler
            ended, stopped_by = set(), stopped_by or str(error) or "SIGINT"
        for future in ended:
            member = futures[future]
            pending.discard(future)
            error = future.exception()
            if error is None and isinstance(future.result(), MemberInterrupted):
                interrupted.append(member.index)
                logger.info("member %d (%s): %s", member.index, member.label(),
                            future.result().message)
            elif error is None:
                logger.info("member %d done (%s)", member.index, member.label())
            else:
                failed[member.index] = f"{type(error).__name__}: {error}"
                logger.error("member %d (%s) failed: %s", member.index, member.label(),
                             failed[member.index])
            if progress is not None:
                progress(len(futures) - len(pending), len(futures))
        if stopped_by is None and _stop.received():
            stopped_by = _stop.take()
        if stopped_by is not None and not marker.exists():
            logger.info("stopping the sweep (%s): running members stop at their next block "
                        "boundary", stopped_by)
            marker.touch()
            give_up = time.monotonic() + STOP_WAIT
    return stopped_by


def _run_vectorized(sweep: SweepFile, members: list[Member]) -> SweepResult:
    from simkit.driver import execute_ensemble

    Path(sweep.output).mkdir(parents=True, exist_ok=True)
    skipped = [m for m in members if _is_complete(m)]
    todo = [m for m in members if m not in skipped]
    failed: dict[int, str] = {}
    if todo:
        outcomes = execute_ensemble([_plan(m) for m in todo],
                                    list(sweep.parameters))
        logger.info("%d members run as one ensemble", len(todo))
        for member, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, Exception):  # stopped alone; the others went on
                failed[member.index] = f"{type(outcome).__name__}: {outcome}"
    done = [m for m in members if m.index not in failed]
    return _result(sweep, done, skipped, failed)


def _result(sweep: SweepFile, done: list[Member], skipped: list[Member], failed: dict[int, str]
            ) -> SweepResult:
    if not done:
        return SweepResult(None, done, skipped, failed)
    combined, not_combined = combine(done, Path(sweep.output) / COMBINED)
    return SweepResult(combined, done, skipped, failed, not_combined)


def _coordinate_names(keys: list[str]) -> dict[str, str]:
    short = {key: key.rsplit(".", 1)[-1] for key in keys}
    if len(set(short.values())) < len(keys):
        short = {key: key.replace(".", "_") for key in keys}
    return short


def _holding_hdf5_lock(function):
    """Run ``function`` holding simkit's HDF5 lock: xarray does not lock every netCDF4 call, and
    runs in other threads of this process must not write meanwhile."""
    @functools.wraps(function)
    def locked(*args, **kwargs):
        from simkit.io import xarray_lock

        with xarray_lock():
            return function(*args, **kwargs)
    return locked


@_holding_hdf5_lock
def combine(members: list[Member], output: Path) -> tuple[Path, list[str]]:
    """One file with every member along ``member``, swept values as coordinates, each stream a
    group as in the member files.

    Only what shares coordinates is combined: a variable on a grid dimension whose coordinate
    differs between members (a sweep over ``params.spacing`` or ``params.shape``) stays in the
    member files only, never padded with NaN. Streams are aligned on ``step``: a member with no
    capture at a step (it ran fewer steps, or stopped early) reads as missing there.

    Returns:
        The combined file, and one line per group saying what was not combined and why (also
        kept in the file's ``simkit_not_combined`` attribute).
    """
    import xarray as xr

    from simkit.io import open_member_trees, schema, write_groups

    names = _coordinate_names(list(members[0].values))
    left_out: dict[str, list[str]] = {}  # why -> variables
    with open_member_trees([m.path for m in members]) as trees:
        groups = {}
        for path in ["/"] + [f"/{name}" for name in trees[0].children]:
            parts = [t[path].to_dataset().drop_vars(schema.CHECKSUM, errors="ignore")
                     for t in trees]
            parts, dropped, why = _shared_grid(parts, members)
            if dropped:
                left_out.setdefault(why, []).extend(
                    name if path == "/" else f"{path.lstrip('/')}/{name}" for name in dropped)
            ds = xr.concat(parts, dim="member", join="outer", combine_attrs="drop_conflicts")
            ds = ds.assign_coords(member=[m.index for m in members])
            for key, name in names.items():
                ds = ds.assign_coords({name: ("member", [m.values[key] for m in members])})
                ds[name].attrs["long_name"] = f"swept scenario key {key}"
            groups[path] = ds
        lines = [f"{', '.join(names)}: {why}; read them from the member files"
                 for why, names in left_out.items()]
        if lines:
            groups["/"].attrs[ATTR_NOT_COMBINED] = "\n".join(lines)
        write_groups(groups, output)
    for line in lines:
        logger.info("not combined: %s", line)
    return output, lines


def _axis(ds: Any, dim: str) -> Any:
    """What places a dimension: its coordinate values, or its length where it has none."""
    return ds[dim].values if dim in ds.variables else ds.sizes.get(dim)


def _describe(axis: Any) -> str:
    import numpy as np

    if axis is None:
        return "absent"
    if isinstance(axis, int):
        return f"length {axis}"
    values = np.asarray(axis)
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return f"{values.size} values"
    return f"{values.size} values from {values[0]:g} to {values[-1]:g}"


def _shared_grid(parts: list[Any], members: list[Member]) -> tuple[list[Any], list[str], str]:
    """The members' datasets of one group without the variables on grid dimensions whose
    coordinates differ between members; the data variables so left out, and why."""
    import numpy as np

    from simkit.io import schema

    dims = dict.fromkeys(dim for part in parts for dim in part.dims if dim != schema.STEP_DIM)
    differing = {}
    for dim in dims:
        first = _axis(parts[0], dim)
        for member, part in zip(members[1:], parts[1:], strict=True):
            axis = _axis(part, dim)
            same = (first is None) == (axis is None) and (
                isinstance(first, int) and first == axis
                or not isinstance(first, int) and not isinstance(axis, int)
                and np.array_equal(first, axis))
            if not same:
                differing[dim] = (f"{dim} ({_describe(first)} in member {members[0].index}, "
                                  f"{_describe(axis)} in member {member.index})")
                break
    if not differing:
        return parts, [], ""
    dropped = [name for name in dict.fromkeys(n for part in parts for n in part.variables)
               if any(set(part[name].dims) & set(differing)
                      for part in parts if name in part.variables)]
    data = [name for name in dropped if any(name in part.data_vars for part in parts)]
    why = f"grid coordinates differ between members: {'; '.join(differing.values())}"
    return [part.drop_vars(dropped, errors="ignore") for part in parts], data, why
