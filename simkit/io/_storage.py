"""What every file simkit writes needs, whatever its format: a capture's checksum, fsync, the
lock that keeps two writers off one file, and telling a full disk (or file size limit) from
other write errors."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from simkit.errors import DiskFullError, ScenarioError, SimkitError

#: The file inside a run's directory (a Zarr run) that its writer holds locked.
WRITER_LOCK = ".simkit-writer.lock"
#: Free space kept in reserve beyond the capture about to be written.
DISK_MARGIN_BYTES = 16 << 20


def capture_checksum(step: int, time: float, arrays: Mapping[str, np.ndarray],
                     names: tuple[str, ...]) -> int:
    """CRC32 of a capture: its step, time and arrays in ``names`` order."""
    crc = zlib.crc32(np.array([step], dtype="i8").tobytes())
    crc = zlib.crc32(np.array([time], dtype="f8").tobytes(), crc)
    for name in names:
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).data, crc)
    return crc


def whole_prefix(steps: np.ndarray, record_ok: Callable[[int], bool],
                 missing: np.ndarray | None = None) -> int:
    """How many leading captures of a stream are whole, whatever the format: steps written
    (``missing`` marks those that are not) and increasing all along, so a hole is never
    bridged; then, from the tail, the last capture whose ``record_ok(i)`` (its checksum) holds.
    The data is checked only at the tail: captures before the last whole one were on disk
    before it."""
    bad = np.zeros(len(steps), dtype=bool) if missing is None else missing.copy()
    bad[1:] |= np.diff(steps) <= 0
    n = int(np.argmax(bad)) if bad.any() else len(steps)
    while n > 0 and not record_ok(n - 1):
        n -= 1
    return n


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to the disk (no library we use does it for us)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exclusive(path: str | os.PathLike[str]) -> int | None:
    """Keep other simkit writers off ``path`` while this process writes it: a write lock on an
    open file description (independent of HDF5's own locks, which readers may take), held until
    ``release`` of the returned descriptor. None where the platform has no such locks, and for
    object storage (``s3://``). A directory (a Zarr run) is locked through the file
    ``WRITER_LOCK`` inside it.

    Raises:
        ScenarioError: another process holds the lock (a run is writing the file).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    if not hasattr(fcntl, "F_OFD_SETLK"):  # pragma: no cover - not Linux
        return None
    if os.fspath(path).startswith("s3:/"):  # object storage: its commits keep writers apart
        return None
    target = os.path.join(path, WRITER_LOCK) if os.path.isdir(path) else path
    try:
        fd = os.open(target, os.O_RDWR | (os.O_CREAT if target != path else 0), 0o644)
    except PermissionError:  # read-only to us: we cannot write it either, nor lock it
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EACCES, errno.EAGAIN):
            raise ScenarioError(
                "expected a file no other process is writing, given one a running simkit "
                f"process writes; wait for it or stop it first (`simkit stop {path}`)",
                source=str(path)) from None
        raise
    return fd


def release(fd: int | None) -> None:
    """Let go of a lock taken by ``exclusive``."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def file_size_limit() -> int | None:
    """The process's file size limit in bytes (None: none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def is_space_error(error: BaseException, path: Path, margin: int) -> bool:
    """Whether ``error``, met writing ``path``, comes of a full disk or the file size limit
    (HDF5 says only "HDF error": then the free space and the limit tell, ``margin`` bytes
    beyond the file's size)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    if isinstance(error, RuntimeError) and "HDF error" in str(error):
        limit = file_size_limit()
        size = path.stat().st_size if path.exists() else 0
        return ((limit is not None and size + margin >= limit)
                or shutil.disk_usage(path.parent).free < DISK_MARGIN_BYTES + margin)
    return False


def copy_disk_full(tmp: Path, target: Path, why: str) -> DiskFullError:
    """A full disk met writing ``tmp``, the copy that was to become ``target``, in one line
    (``why``: the space or limit that ran out), exit code 4."""
    state = "unchanged" if target.exists() else "not written"
    return DiskFullError(f"disk full writing {tmp} ({why}); {target} is {state}; free space, "
                         "then run the command again")


@contextlib.contextmanager
def copy_space_errors(tmp: Path, target: Path, margin: int,
                      why: Callable[[], str]) -> Iterator[None]:
    """Turn a full disk met while writing ``tmp`` (see ``is_space_error``) into
    ``copy_disk_full``; other errors pass."""
    try:
        yield
    except (RuntimeError, OSError) as error:
        if isinstance(error, SimkitError) or not is_space_error(error, tmp, margin):
            raise
        raise copy_disk_full(tmp, target, why()) from None


def unreadable(source: str, error: BaseException) -> ScenarioError:
    """A file simkit cannot read, in one line: naming it and why (the library's words)."""
    reason = " ".join(str(error).split())[:200]
    return ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                         f"read ({reason})", source=source)
