"""Reading a run's file while the run is writing it, and asking a run to stop from outside.

HDF5 locks a file against readers while a writer has it open; simkit opens its files without
HDF5's lock (see the package's ``__init__``) so a notebook can look at a running run, and keeps two
writers apart with a lock of its own. What a reader sees while the writer works may be mid-way:
``read_live`` takes only captures that are whole (steps written, checksum right) and retries
when the library reports the file mid-update.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, overload

from simkit.errors import ScenarioError
from simkit.io import schema
from simkit.io._factory import open_reader, run_exists
from simkit.io._lock import xarray_lock
from simkit.io._protocol import LiveSummary
from simkit.io._storage import exclusive, release
from simkit.io._temporaries import temporaries
from simkit.io.recover import require_run_file
from simkit.io.zarr_paths import is_zarr

if TYPE_CHECKING:
    import xarray as xr

_T = TypeVar("_T")

#: Attempts and the pause between them when the file is caught mid-update.
READ_ATTEMPTS = 40
READ_PAUSE = 0.05
#: What netCDF4 raises when it meets a file its writer has mid-update.
_MID_UPDATE = (OSError, RuntimeError, IndexError, ValueError, KeyError, AttributeError,
               ScenarioError)


def stop_request_path(path: str | os.PathLike[str]) -> Path:
    """The file whose existence asks the run writing ``path`` to stop (``simkit stop``)."""
    path = Path(path)
    return path.with_name(path.name + ".stop")


def current_file(path: str | os.PathLike[str]) -> Path:
    """The file that holds the run writing ``path`` now: ``path`` itself, or, while a run that
    will replace it (``--overwrite``) goes on, that run's temporary file beside it."""
    path = Path(path)
    for candidate in temporaries(path):
        if writer_alive(candidate):
            return candidate
    return path


def request_stop(path: str | os.PathLike[str]) -> Path:
    """Ask the run writing ``path`` to stop at its next block boundary, leaving a resumable file.

    Raises:
        ScenarioError: ``path`` is not a run file, or its run is not running.
    """
    status = live_summary(path)["attrs"].get(schema.ATTR_STATUS)
    if status == schema.STATUS_RUNNING and writer_alive(current_file(path)) is False:
        raise ScenarioError("expected the file of a running run, given one whose run's process "
                            f"is gone (killed?): `simkit resume {path}` continues it",
                            source=str(path))
    if status != schema.STATUS_RUNNING:
        raise ScenarioError(f"expected the file of a running run, given one whose status is "
                            f"{status!r}", source=str(path))
    request = stop_request_path(path)
    request.touch()
    return request


@overload
def read_live(path: str | os.PathLike[str], group: None = None) -> xr.DataTree: ...


@overload
def read_live(path: str | os.PathLike[str], group: str) -> xr.Dataset: ...


def read_live(path: str | os.PathLike[str], group: str | None = None
              ) -> xr.DataTree | xr.Dataset:
    """The captures a run's file holds now, whole ones only, loaded into memory.

    Safe while the run writes the file: a capture is taken only once its step, data and
    checksum are all on disk, so what is returned never holds a torn or half-written capture,
    and the steps seen only grow from one call to the next.

    Args:
        path: a file written by simkit (running, finished or stopped).
        group: a stream's name for that stream as an ``xarray.Dataset``; None for the whole file
            as an ``xarray.DataTree`` (the root holds the final state once there is one).

    Raises:
        ScenarioError: not a run file, or no such stream.
    """
    return _retrying(path, lambda: _read_once(current_file(path), group))


def _read_once(path: Path, group: str | None) -> xr.DataTree | xr.Dataset:
    with xarray_lock(), open_reader(path) as reader:
        streams = reader.streams()
        if group is not None and group not in streams:
            raise ScenarioError(f"expected one of the file's streams ({', '.join(streams)}), "
                                f"given {group!r}", key="group", source=str(path))
        return reader.to_xarray(group)


def live_summary(path: str | os.PathLike[str]) -> LiveSummary:
    """What a live view shows of a run's file, read cheaply (no field data): its root attributes,
    and per stream the whole captures, the last step and time, and the last value of each
    scalar variable. Retries as ``read_live`` does."""
    return _retrying(path, lambda: _summary_once(current_file(path)))


def _retrying(path: str | os.PathLike[str], read: Callable[[], _T]) -> _T:
    """``read()`` of a run file, looked at again while the writer has it mid-update."""
    if not (run_exists(path) if is_zarr(path) else Path(path).is_file()):
        raise ScenarioError("expected an existing run file, given a path that does not exist",
                            source=str(path))
    error: Exception | None = None
    for attempt in range(READ_ATTEMPTS):
        try:
            require_run_file(path)
            return read()
        except _MID_UPDATE as caught:
            if isinstance(caught, ScenarioError) and caught.key is not None:
                raise  # a wrong argument, not a file mid-update
            error = caught
            if attempt + 1 < READ_ATTEMPTS:
                time.sleep(READ_PAUSE)
    if isinstance(error, ScenarioError):
        raise error
    raise ScenarioError(f"expected a readable run file, given one that stayed unreadable over "
                        f"{READ_ATTEMPTS} attempts: {error}", source=str(path))


def _summary_once(path: Path) -> LiveSummary:
    with open_reader(path) as reader:
        return reader.live_summary()


def writer_alive(path: str | os.PathLike[str]) -> bool | None:
    """Whether a process holds ``path`` open for writing (a run still going), by trying the
    writers' lock; None when that cannot be told (no such locks here, or no write access)."""
    try:
        fd = exclusive(path)
    except ScenarioError:
        return True
    except OSError:
        return None
    if fd is None:
        return None
    release(fd)
    return False
