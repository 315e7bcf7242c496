"""Writing a run to one NetCDF4 file: final state, streams of captures, provenance.

Each capture is appended along its stream's unlimited ``step`` dimension with a CRC32 of its
contents, synced to the file and fsync'ed, so a run that dies keeps every capture written before;
a capture counts once its ``step`` (written last) is on disk and its checksum matches. After the
first failed write nothing more is written, so a full disk leaves no holes. Every call into
netCDF4 holds the process-wide HDF5 lock (``simkit.io._lock``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import netCDF4
import numpy as np

from simkit.errors import DiskFullError, ScenarioError
from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._storage import (
    DISK_MARGIN_BYTES,
    capture_checksum,
    exclusive,
    file_size_limit,
    fsync_path,
    is_space_error,
    release,
)
from simkit.io._temporaries import partial_path, remove_stale_temporaries, temporary_path
from simkit.io.netcdf_files import check_replaceable, written_by_simkit
from simkit.io.netcdf_layout import create_final, define, resume_attrs

__all__ = [
    "DISK_MARGIN_BYTES",
    "NetCDFWriter",
    "capture_checksum",
    "check_replaceable",
    "exclusive",
    "fsync_path",
    "release",
    "written_by_simkit",
]


class NetCDFWriter:
    """Writes one run file.

    A new file is first built under a temporary name beside ``path`` and moved into place once its
    layout is on disk, so a crash never leaves a half-created file at ``path``. When ``path``
    already exists (``overwrite=True``), the old file stays until the run finishes; a run that
    fails meanwhile is kept as ``partial_path`` (``X.partial.nc``). With ``append=True`` an
    existing run file is continued (resume). The final state (root ``step``, ``time`` and fields)
    is written when the run ends: until then those variables are absent.

    Args:
        path: where the file goes.
        layout: coordinates, final-state fields and streams.
        attrs: provenance attributes of the root group (a ``source`` or ``institution`` given
            here is kept as given).
        overwrite: replace an existing file when the run finishes.
        append: continue the existing file at ``path``.
    """

    #: What a full disk's message tells the user to do (``{path}``: the file kept).
    after_disk_full = "free space, then `simkit resume {path}`"

    def __init__(self, path: str | os.PathLike[str], layout: schema.RunLayout,
                 attrs: Mapping[str, object], overwrite: bool = False, append: bool = False) -> None:
        self.path = Path(path)
        self.layout = layout
        self._names = {s.name: tuple(v.name for v in s.variables)
                       + ((schema.SCHEDULE_STATE,) if s.state_slots else ())
                       for s in layout.streams}
        self._bytes = {s.name: sum(_nbytes(v, layout) for v in s.variables)
                       for s in layout.streams}
        self._failed: Exception | None = None
        self._whole = False  # a failure that wrote nothing (the space check)
        self._closed: Path | None = None
        self._lock: int | None = None
        self._target_lock: int | None = None
        self._ds: netCDF4.Dataset
        self._counts: dict[str, int]
        if append:
            self._open_existing(attrs)
        else:
            self._create(attrs, overwrite)

    def _open_existing(self, attrs: Mapping[str, object]) -> None:
        """Continue the run file at ``path`` (resume), marked running again."""
        self._replace_at_close = False
        self._tmp = self.partial_path = self.path
        self._lock = exclusive(self.path)
        self._target_lock = None
        with hdf5_lock():
            try:
                self._ds = netCDF4.Dataset(self.path, "a")
            except BaseException:
                release(self._lock)
                raise
            try:
                resume_attrs(self._ds, attrs)
                self._counts = {s.name: len(self._ds.groups[s.name].dimensions[schema.STEP_DIM])
                                for s in self.layout.streams}
                self._ds.sync()
            except BaseException:
                self._ds.close()
                release(self._lock)
                raise
        self._committed = dict(self._counts)

    def _create(self, attrs: Mapping[str, object], overwrite: bool) -> None:
        """Create the file under a temporary name and, unless it replaces one, move it to
        ``path`` once its layout is on disk."""
        self._counts = {stream.name: 0 for stream in self.layout.streams}
        self._committed = dict(self._counts)
        self._replace_at_close = self.path.exists()
        if self._replace_at_close and not overwrite:
            raise _output_taken(self.path)
        if self._replace_at_close:
            check_replaceable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self._tmp = temporary_path(self.path)
        self.partial_path = partial_path(self.path) if self._replace_at_close else self.path
        self._lock = None
        # The file to be replaced stays ours until the run ends: never under a run writing it,
        # nor under another run replacing it.
        self._target_lock = exclusive(self.path) if self._replace_at_close else None
        try:
            self._create_file(attrs)
        except FileExistsError:
            self._undo_create()
            raise _output_taken(self.path) from None
        except BaseException:
            self._undo_create()
            raise

    def _create_file(self, attrs: Mapping[str, object]) -> None:
        with hdf5_lock():
            self._ds = netCDF4.Dataset(self._tmp, "w", format=schema.FORMAT)
            self._lock = exclusive(self._tmp)  # the run's file, whatever its name later
            try:
                define(self._ds, self.layout, attrs)
                self._ds.sync()
            except BaseException:
                self._ds.close()
                raise
        fsync_path(self._tmp)
        if not self._replace_at_close:
            try:
                os.link(self._tmp, self.path)  # no-clobber: fails if the path appeared
            except BaseException:
                with hdf5_lock():
                    self._ds.close()
                raise
            self._tmp.unlink()

    def _undo_create(self) -> None:
        release(self._lock)
        release(self._target_lock)
        self._tmp.unlink(missing_ok=True)

    @property
    def working_path(self) -> Path:
        """The file being written now (a temporary name beside ``path`` when overwriting)."""
        return self._tmp if self._replace_at_close else self.path

    def count(self, stream: str) -> int:
        """Captures of ``stream`` in the file so far."""
        return self._counts[stream]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Refuse to write after a failed write, and remember the first failure."""
        if self._failed is not None:
            raise self._failed
        try:
            yield
        except Exception as error:
            self._failed = error
            raise

    def check_space(self, streams: Iterable[str]) -> None:
        """Raise ``DiskFullError`` unless captures of ``streams`` (one each, repeats counted) fit.

        Stops before the disk (or the file size limit) is reached: HDF5 cannot close a file
        cleanly once its writes fail, so the margin keeps room for the metadata.
        """
        with self._writing():
            needed = sum(self._bytes[s] for s in streams) + DISK_MARGIN_BYTES
            free = shutil.disk_usage(self.working_path.parent).free
            limit = file_size_limit()
            if free < needed or (limit is not None
                                 and self.working_path.stat().st_size + needed > limit):
                # Refused before writing: nothing more is written, but the file is whole and
                # closes with its status (the margin keeps room for it).
                self._whole = True
                raise self._disk_full(free, needed)

    def _disk_full(self, free: int, needed: int | None = None) -> DiskFullError:
        # Only synced captures count: what was written since may not be on disk.
        intact = ", ".join(f"{name}: {n}" for name, n in self._committed.items()) or "none"
        limit = file_size_limit()
        margin = (needed if needed is not None
                  else max(self._bytes.values(), default=0) + DISK_MARGIN_BYTES)
        why = (f"file size limit of {limit} bytes reached" if limit is not None and
               self.working_path.stat().st_size + margin > limit
               else f"{free / 2**20:.1f} MiB free")
        kept = "" if self.partial_path == self.working_path else \
            f"; the run so far is kept as {self.partial_path}"
        return DiskFullError(f"disk full writing {self.working_path} ({why}); captures intact: "
                             f"{intact}{kept}; "
                             + self.after_disk_full.format(path=self.partial_path))

    def write_capture(self, stream: str, step: int, time: float,
                      arrays: Mapping[str, np.ndarray], sync: bool = True) -> None:
        """Append one capture to ``stream``.

        With ``sync=False`` the caller writes a batch: it has called ``check_space`` for the
        whole batch and calls ``sync`` after it, so a full disk stops the batch before any of it
        is written and the captures reported intact are exactly those in the file.
        """
        if sync:
            self.check_space((stream,))
        with self._writing(), self._space_errors(), hdf5_lock():
            group = self._ds.groups[stream]
            i = self._counts[stream]
            for name, value in arrays.items():
                group.variables[name][i, ...] = value
            group.variables[schema.TIME][i] = time
            group.variables[schema.CHECKSUM][i] = capture_checksum(step, time, arrays,
                                                                  self._names[stream])
            # The step is written last: a capture counts once its step is on disk.
            group.variables[schema.STEP][i] = step
            self._counts[stream] = i + 1
        if sync:
            self.sync()

    def write_block(self, stream: str, steps: Sequence[int], times: Sequence[float],
                    arrays: Mapping[str, np.ndarray]) -> None:
        """Append ``len(steps)`` captures of ``stream`` at once: ``arrays`` hold them along their
        first axis. One write per variable; each capture keeps its own checksum, and the steps
        are written last, so a capture counts only once all of it is in the file. Not synced:
        the caller has checked the space and syncs after the batch."""
        n = len(steps)
        if not n:
            return
        with self._writing(), self._space_errors(), hdf5_lock():
            group = self._ds.groups[stream]
            i = self._counts[stream]
            names = self._names[stream]
            for name, value in arrays.items():
                group.variables[name][i:i + n, ...] = value
            group.variables[schema.TIME][i:i + n] = np.asarray(times, dtype=np.float64)
            group.variables[schema.CHECKSUM][i:i + n] = np.array(
                [capture_checksum(step, time, {name: arrays[name][j] for name in names}, names)
                 for j, (step, time) in enumerate(zip(steps, times, strict=True))],
                dtype=np.uint32)
            # The steps are written last: a capture counts once its step is on disk.
            group.variables[schema.STEP][i:i + n] = np.asarray(steps, dtype=np.int64)
            self._counts[stream] = i + n

    @contextlib.contextmanager
    def _space_errors(self) -> Iterator[None]:
        """Turn the libraries' vague errors on a full disk into a DiskFullError."""
        try:
            yield
        except (RuntimeError, OSError) as error:
            if isinstance(error, DiskFullError):
                raise
            margin = 2 * max(self._bytes.values(), default=0) + (1 << 20)
            if is_space_error(error, self.working_path, margin):
                raise self._disk_full(shutil.disk_usage(self.working_path.parent).free) from error
            raise

    def sync(self) -> None:
        """Flush what was written to the file and fsync it."""
        with self._writing(), self._space_errors():
            with hdf5_lock():
                self._ds.sync()
            fsync_path(self.working_path)  # outside the lock: other runs' writes go on
        self._committed = dict(self._counts)

    def committed(self, step: int) -> None:
        """Record that every capture due up to ``step`` is in the file. Call it only once they
        are synced (fsync'ed): the attribute is flushed now, after them, so a killed run's file
        says all it holds (no fsync of its own: what it claims is on the disk already)."""
        with self._writing(), self._space_errors(), hdf5_lock():
            self._ds.setncattr(schema.ATTR_COMMITTED, np.int64(step))
            self._ds.sync()

    def write_final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the final state to the root group (created now, so that an unfinished run has
        none rather than fill values that read as data)."""
        with self._writing(), self._space_errors(), hdf5_lock():
            ds = self._ds
            create_final(ds, self.layout)
            for name, value in arrays.items():
                ds.variables[name][...] = value
            ds.variables[schema.TIME].assignValue(time)
            ds.variables[schema.STEP].assignValue(step)  # last, as for captures

    def close(self, attrs: Mapping[str, object] | None = None, complete: bool = True) -> Path:
        """Finish the file (status, end attributes), fsync it and move it into place.

        After a failed write nothing more is written: the file is only closed, and it counts as
        unfinished. Returns the file that holds the run: ``path``, or ``partial_path`` for an
        unfinished run that was to replace an existing file.
        """
        if self._closed is not None:
            return self._closed
        complete = complete and self._failed is None
        working = self.working_path
        with hdf5_lock():
            try:
                if self._failed is None or self._whole:
                    for key, value in (attrs or {}).items():
                        self._ds.setncattr(key, value)
                    # A status among ``attrs`` is the caller's (a run whose gradients follow).
                    if complete and schema.ATTR_STATUS not in (attrs or {}):
                        self._ds.setncattr(schema.ATTR_STATUS, schema.STATUS_COMPLETE)
            finally:
                self._closed = working
                try:
                    self._ds.close()
                finally:
                    release(self._lock)
                    release(self._target_lock)
        fsync_path(working)
        if self._replace_at_close:
            self._closed = self.path if complete else self.partial_path
            os.replace(self._tmp, self._closed)
        return self._closed

    def abort(self, attrs: Mapping[str, object] | None = None) -> Path:
        """Close after a failure, keeping what was written; returns the file that holds it."""
        with contextlib.suppress(Exception):
            return self.close(attrs, complete=False)
        if self._replace_at_close and self._tmp.exists():
            with contextlib.suppress(OSError):
                os.replace(self._tmp, self.partial_path)
                return self.partial_path
        return self.working_path


def _nbytes(var: schema.VariableSpec, layout: schema.RunLayout) -> int:
    sizes = {c.name: len(c.values) for c in layout.coordinates}
    return int(np.prod([sizes[d] for d in var.dims], dtype=np.int64)) * np.dtype(var.dtype).itemsize


def _output_taken(path: Path) -> ScenarioError:
    """Another run created ``path`` after this one was planned (two runs on one new path)."""
    return ScenarioError(f"expected a new file (or --overwrite), given {str(path)!r}, which "
                         "another run created meanwhile", key="output")
