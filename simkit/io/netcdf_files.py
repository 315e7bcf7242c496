"""Whether a file on disk is one simkit wrote, told from its bytes and root attributes before
anything trusts it (an output is replaced only then)."""

from __future__ import annotations

import os
import stat

import netCDF4

from simkit.errors import ScenarioError
from simkit.io import schema
from simkit.io._lock import hdf5_lock

#: The first bytes of every file simkit writes (NetCDF4 is HDF5).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Root attributes only files simkit wrote carry: a run or a recording (its streams), or one
#: stream exported flat.
_SIMKIT_MARKS = (schema.ATTR_STREAMS, schema.ATTR_EXPORTED_STREAM)


def written_by_simkit(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file simkit wrote (a run, a recording or an export), read
    without trusting it: its first bytes are looked at before any library opens it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, len(HDF5_SIGNATURE))
    except OSError:
        return False
    finally:
        os.close(fd)
    if head != HDF5_SIGNATURE:
        return False
    try:
        with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
            found = ds.ncattrs()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(mark in found for mark in _SIMKIT_MARKS)


def check_replaceable(path: str | os.PathLike[str], key: str = "output") -> None:
    """Refuse to replace ``path`` (``--overwrite``) unless simkit wrote it: a scenario from
    elsewhere names its own output, and must not replace another file through it.

    Raises:
        ScenarioError: naming the file, what may be replaced, and what to do.
    """
    if not written_by_simkit(path):
        raise ScenarioError(f"expected a file simkit wrote (a run, recording or export) to "
                            f"replace with --overwrite, given {str(path)!r}, which is not one; "
                            "remove it yourself or choose another output", key=key)
