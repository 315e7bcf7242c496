"""Reading a run file after a crash: which captures are whole, the latest full-state checkpoint,
and rewriting the file with only whole captures (``simkit recover``, and before a resume)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from simkit.errors import ScenarioError, SimkitError
from simkit.io._factory import cut_back, open_reader, open_tree
from simkit.io._lock import xarray_lock
from simkit.io._protocol import Checkpoint, StrPath
from simkit.io._storage import (
    DISK_MARGIN_BYTES,
    copy_disk_full,
    copy_space_errors,
    exclusive,
    file_size_limit,
    fsync_path,
    release,
    unreadable,
)
from simkit.io._temporaries import remove_stale_temporaries
from simkit.io.netcdf_copy import copy_run

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "Checkpoint",
    "open_run_tree",
    "read_attrs",
    "recover",
    "require_run_file",
    "rewrite",
    "unreadable",
]


def _copy_why(path: Path, free: int, limit: int | None) -> str:
    size = path.stat().st_size
    return (f"file size limit of {limit} bytes, the file has {size}"
            if limit is not None and size + DISK_MARGIN_BYTES > limit
            else f"{free / 2**20:.1f} MiB free, the copy needs about {size / 2**20:.1f} MiB")


def rewrite(path: StrPath, keep: Mapping[str, int],
            attrs: Mapping[str, object] | None = None) -> None:
    """Replace ``path`` by a copy whose streams keep only their first ``keep[name]`` captures
    (and whose root has ``attrs`` set).

    The copy is written beside the file, fsync'ed and moved over it: a crash meanwhile leaves the
    original untouched (and its copy, removed by the next command that writes the file).
    """
    if cut_back(path, keep, attrs):  # a Zarr run: one commit, no copy
        return
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.recover.tmp")
    # The copy needs about the file's size again: refuse up front rather than let HDF5 fail
    # with a bare "HDF error" halfway.
    needed = path.stat().st_size + DISK_MARGIN_BYTES
    free = shutil.disk_usage(path.parent).free
    limit = file_size_limit()
    if free < needed or (limit is not None and path.stat().st_size > limit):
        raise copy_disk_full(tmp, path, _copy_why(path, free, limit))
    lock = exclusive(path)  # never under a run still writing the file
    try:
        with copy_space_errors(tmp, path, path.stat().st_size,
                               lambda: _copy_why(path, shutil.disk_usage(path.parent).free,
                                                 limit)):
            copy_run(path, tmp, keep, attrs)
            fsync_path(tmp)
            os.replace(tmp, path)
    finally:
        release(lock)
        tmp.unlink(missing_ok=True)


def require_run_file(path: StrPath) -> None:
    """Refuse, with one line, a file that is not a run file simkit wrote (a NetCDF file from
    elsewhere would otherwise fail deep inside with a KeyError).

    Raises:
        ScenarioError: naming the file and what it lacks.
    """
    source = str(path)
    try:
        with open_reader(path) as reader:
            missing = reader.missing_parts()
    except FileNotFoundError:
        raise ScenarioError("expected an existing run file, given a path that does not exist",
                            source=source) from None
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=source) from None
    except (RuntimeError, AttributeError, ValueError) as error:  # corrupt metadata (a flipped
        # bit in an attribute's header: AttributeError "Can't open HDF5 attribute")
        raise unreadable(source, error) from None
    if missing:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one without "
                            f"{missing}", source=source)


@contextlib.contextmanager
def open_run_tree(path: StrPath) -> Iterator[xr.DataTree]:
    """The run file at ``path`` as a lazily read xarray ``DataTree`` of its whole captures (a
    torn or corrupt trailing capture left out, as every reader does), under the xarray lock.

    A file that is not a run file, or whose bytes cannot be read (truncated, corrupt, not
    NetCDF), is refused with one line (exit code 2), also when what fails is a read of its data
    inside the ``with`` block.

    Raises:
        ScenarioError: naming the file and why it cannot be read.
    """
    require_run_file(path)
    source = str(path)
    with xarray_lock(), contextlib.ExitStack() as stack:
        try:
            with open_reader(path) as reader:
                counts = reader.whole_counts()
            tree = stack.enter_context(open_tree(path, counts))
        except (OSError, RuntimeError, ValueError, IndexError, KeyError) as error:
            raise unreadable(source, error) from None
        try:
            yield tree
        except (OSError, RuntimeError) as error:
            if isinstance(error, SimkitError):
                raise
            raise unreadable(source, error) from None


def recover(path: StrPath) -> dict[str, int]:
    """Drop torn or corrupt trailing captures so every reader sees only whole ones.

    Safe to run twice. Returns the captures kept per stream.
    """
    require_run_file(path)
    release(exclusive(path))  # a running run's last captures are not torn: refuse
    remove_stale_temporaries(Path(path))  # copies of killed recovers and resumes, and runs'
    with open_reader(path) as reader:
        counts = reader.whole_counts()
        lengths = reader.lengths()
    if counts != lengths:
        rewrite(path, counts)
    return counts


def read_attrs(path: StrPath) -> dict[str, object]:
    """The root attributes (provenance) of a run file."""
    with open_reader(path) as reader:
        return reader.attrs()

