"""One lock for every HDF5 call of the process: neither HDF5 nor netCDF-C is thread-safe, so two
runs in two threads (or a Dask worker with several threads) must take turns in the library.

Two ways in: ``hdf5_lock()`` around direct ``netCDF4`` calls, and ``xarray_lock()`` around a
whole xarray read or write of NetCDF files. Ours is always taken before xarray's own HDF5 lock,
never after it, so the two cannot deadlock.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.RLock()
_held = threading.local()


def _xarray_hdf5_lock() -> Any:
    # Only once xarray is loaded can xarray code run in another thread; importing it here would
    # cost every run most of a second.
    locks = sys.modules.get("xarray.backends.locks")
    return None if locks is None else locks.HDF5_LOCK


@contextlib.contextmanager
def hdf5_lock() -> Iterator[None]:
    """Hold the process-wide HDF5 lock around direct ``netCDF4`` calls (reentrant).

    When xarray is loaded, its HDF5 lock is held too, so xarray reading in another thread and
    simkit writing take turns. Never call xarray while holding this: xarray's lock is not
    reentrant.
    """
    with _LOCK:
        depth = getattr(_held, "depth", 0)
        outer = _xarray_hdf5_lock() if depth == 0 else None
        if outer is not None:
            outer.acquire()
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth = depth
            if outer is not None:
                outer.release()


@contextlib.contextmanager
def xarray_lock() -> Iterator[None]:
    """Hold our lock (not xarray's) around a whole xarray open, read, write and close.

    xarray takes its own HDF5 lock around data reads and writes but not around every metadata
    call, so simkit's writers must not run meanwhile; xarray then takes its lock inside ours.

    Raises:
        RuntimeError: called inside ``hdf5_lock()``, where xarray would wait on itself.
    """
    if getattr(_held, "depth", 0):
        raise RuntimeError("xarray_lock() inside hdf5_lock(): xarray would deadlock on its own "
                           "HDF5 lock; take xarray_lock() first")
    with _LOCK:
        yield
