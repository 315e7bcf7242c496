"""Writing a run to one NetCDF4 file: final state, streams of captures, provenance.

Each capture is appended along its stream's unlimited ``step`` dimension with a CRC32 of its
contents, synced to the file and fsync'ed, so a run that dies keeps every capture written before;
a capture counts once its ``step`` (written last) is on disk and its checksum matches. After the
first failed write nothing more is written, so a full disk leaves no holes. Every call into
netCDF4 holds the process-wide HDF5 lock (``simkit.io._lock``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit._version import __version__
from simkit.errors import DiskFullError, ScenarioError
from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._temporaries import partial_path, remove_stale_temporaries, temporary_path

#: Free space kept in reserve beyond the capture about to be written.
DISK_MARGIN_BYTES = 16 << 20


def _create_variables(group: netCDF4.Dataset, variables: tuple[schema.VariableSpec, ...],
                      leading: tuple[str, ...]) -> None:
    for var in variables:
        dtype = np.dtype(var.dtype)
        # The final state is written only when the run ends: until then it must read as missing.
        fill = netCDF4.default_fillvals[dtype.str[1:]] if not leading and dtype.kind == "f" \
            else None
        nc = group.createVariable(var.name, dtype, leading + var.dims, fill_value=fill)
        nc.units = var.units
        nc.long_name = var.long_name
        # CF: step and time are (auxiliary) coordinates of every variable; the checksum is not
        # (CF tools reject it there), it is named in the group's own `coordinates` instead.
        nc.coordinates = f"{schema.STEP} {schema.TIME}" if not leading else schema.TIME


def _create_coordinates(group: netCDF4.Dataset, layout: schema.RunLayout
                        ) -> list[tuple[netCDF4.Variable, np.ndarray]]:
    """Define the coordinates in ``group``; returns each variable with the values it is to hold.
    They are written once every group is defined: a write in define mode writes the whole
    file's metadata, which made a file of n streams cost n**2 (a minute for 600)."""
    values = []
    for coord in layout.coordinates:
        group.createDimension(coord.name, len(coord.values))
        nc = group.createVariable(coord.name, coord.values.dtype, (coord.name,))
        nc.units = coord.units
        nc.long_name = coord.long_name
        values.append((nc, coord.values))
    return values


def capture_checksum(step: int, time: float, arrays: Mapping[str, np.ndarray],
                     names: tuple[str, ...]) -> int:
    """CRC32 of a capture: its step, time and arrays in ``names`` order."""
    crc = zlib.crc32(np.array([step], dtype="i8").tobytes())
    crc = zlib.crc32(np.array([time], dtype="f8").tobytes(), crc)
    for name in names:
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]), crc)
    return crc


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk (no library we use does it for us)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exclusive(path: str | os.PathLike) -> int | None:
    """Keep other simkit writers off ``path`` while this process writes it: a write lock on an
    open file description (independent of HDF5's own locks, which readers may take), held until
    ``release`` of the returned descriptor. None where the platform has no such locks.

    Raises:
        ScenarioError: another process holds the lock (a run is writing the file).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    if not hasattr(fcntl, "F_OFD_SETLK"):  # pragma: no cover - not Linux
        return None
    try:
        fd = os.open(path, os.O_RDWR)
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


#: The first bytes of every file simkit writes (NetCDF4 is HDF5).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Root attributes only files simkit wrote carry: a run or a recording (its streams), or one
#: stream exported flat.
_SIMKIT_MARKS = (schema.ATTR_STREAMS, schema.ATTR_EXPORTED_STREAM)


def written_by_simkit(path: str | os.PathLike) -> bool:
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


def check_replaceable(path: str | os.PathLike, key: str = "output") -> None:
    """Refuse to replace ``path`` (``--overwrite``) unless simkit wrote it: a scenario from
    elsewhere names its own output, and must not replace another file through it.

    Raises:
        ScenarioError: naming the file, what may be replaced, and what to do.
    """
    if not written_by_simkit(path):
        raise ScenarioError(f"expected a file simkit wrote (a run, recording or export) to "
                            f"replace with --overwrite, given {str(path)!r}, which is not one; "
                            "remove it yourself or choose another output", key=key)


def _file_size_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


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

    def __init__(self, path: str | os.PathLike, layout: schema.RunLayout,
                 attrs: Mapping[str, Any], overwrite: bool = False, append: bool = False) -> None:
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
        if append:
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
                    for key, value in attrs.items():
                        self._ds.setncattr(key, value)
                    self._ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
                    if schema.ATTR_ERROR in self._ds.ncattrs():  # what stopped it is past
                        self._ds.delncattr(schema.ATTR_ERROR)
                    _add_history(self._ds, "resume", attrs.get(schema.ATTR_RESUMED))
                    self._counts = {s.name: len(self._ds.groups[s.name]
                                                .dimensions[schema.STEP_DIM])
                                    for s in layout.streams}
                    self._ds.sync()
                except BaseException:
                    self._ds.close()
                    release(self._lock)
                    raise
            self._committed = dict(self._counts)
            return
        self._counts = {stream.name: 0 for stream in layout.streams}
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
            with hdf5_lock():
                self._ds = netCDF4.Dataset(self._tmp, "w", format=schema.FORMAT)
                self._lock = exclusive(self._tmp)  # the run's file, whatever its name later
                try:
                    self._define(attrs)
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
        except FileExistsError:
            release(self._lock)
            release(self._target_lock)
            self._tmp.unlink(missing_ok=True)
            raise _output_taken(self.path) from None
        except BaseException:
            release(self._lock)
            release(self._target_lock)
            self._tmp.unlink(missing_ok=True)
            raise

    @property
    def working_path(self) -> Path:
        """The file being written now (a temporary name beside ``path`` when overwriting)."""
        return self._tmp if self._replace_at_close else self.path

    def count(self, stream: str) -> int:
        """Captures of ``stream`` in the file so far."""
        return self._counts[stream]

    def _define(self, attrs: Mapping[str, Any]) -> None:
        ds, layout = self._ds, self.layout
        ds.setncattr(schema.ATTR_CONVENTIONS, schema.CONVENTIONS)
        ds.setncattr(schema.ATTR_SOURCE, _source(attrs))
        for key, value in attrs.items():
            ds.setncattr(key, value)
        scenario = attrs.get(schema.ATTR_SCENARIO_FILE) or "a scenario"
        _add_history(ds, f"run of {attrs.get(schema.ATTR_SOLVER, '?')} from {scenario}",
                     attrs.get(schema.ATTR_STARTED))
        ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
        if schema.ATTR_COMMITTED not in attrs:
            ds.setncattr(schema.ATTR_COMMITTED, np.int64(-1))
        ds.setncattr(schema.ATTR_STREAMS, " ".join(s.name for s in layout.streams))
        coordinates = _create_coordinates(ds, layout)
        for stream in layout.streams:
            group = ds.createGroup(stream.name)
            coordinates += _create_coordinates(group, layout)
            group.createDimension(schema.STEP_DIM, None)
            step = group.createVariable(schema.STEP, "i8", (schema.STEP_DIM,))
            step.setncatts(schema.STEP_ATTRS)
            time = group.createVariable(schema.TIME, "f8", (schema.STEP_DIM,))
            time.setncatts(_time_attrs(layout))
            group.createDimension(schema.CHECKSUM_DIM, None)
            crc = group.createVariable(schema.CHECKSUM, "u4", (schema.CHECKSUM_DIM,))
            crc.setncatts(schema.CHECKSUM_ATTRS)
            _create_variables(group, stream.variables, (schema.STEP_DIM,))
            group.setncattr(schema.ATTR_STREAM_FIELDS, " ".join(v.name for v in stream.fields))
            group.setncattr(schema.ATTR_STREAM_DIAGNOSTICS,
                            " ".join(v.name for v in stream.diagnostics))
            # xarray reads a group's `coordinates` too: the checksum stays out of data_vars.
            group.setncattr("coordinates", schema.CHECKSUM)
            _define_stream_extras(group, stream)
        ds.sync()  # out of define mode once, for all groups
        for nc, values in coordinates:
            nc[:] = values

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
            limit = _file_size_limit()
            if free < needed or (limit is not None
                                 and self.working_path.stat().st_size + needed > limit):
                # Refused before writing: nothing more is written, but the file is whole and
                # closes with its status (the margin keeps room for it).
                self._whole = True
                raise self._disk_full(free, needed)

    def _disk_full(self, free: int, needed: int | None = None) -> DiskFullError:
        # Only synced captures count: what was written since may not be on disk.
        intact = ", ".join(f"{name}: {n}" for name, n in self._committed.items()) or "none"
        limit = _file_size_limit()
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
            if _is_space_error(error, self.working_path, margin):
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
            if schema.STEP not in ds.variables:
                ds.createVariable(schema.STEP, "i8", ()).setncatts(schema.STEP_ATTRS)
                time_var = ds.createVariable(schema.TIME, "f8", (),
                                             fill_value=netCDF4.default_fillvals["f8"])
                # No standard_name: CF wants a reference date with it, and a date would make
                # xarray decode the simulated time into calendar dates.
                time_var.setncatts({"long_name": schema.TIME_LONG_NAME,
                                    "units": self.layout.time_units})
                _create_variables(ds, tuple(f for f in self.layout.fields
                                            if f.name not in ds.variables), ())
            for name, value in arrays.items():
                ds.variables[name][...] = value
            ds.variables[schema.TIME].assignValue(time)
            ds.variables[schema.STEP].assignValue(step)  # last, as for captures

    def close(self, attrs: Mapping[str, Any] | None = None, complete: bool = True) -> Path:
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

    def abort(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Close after a failure, keeping what was written; returns the file that holds it."""
        with contextlib.suppress(Exception):
            return self.close(attrs, complete=False)
        if self._replace_at_close and self._tmp.exists():
            with contextlib.suppress(OSError):
                os.replace(self._tmp, self.partial_path)
                return self.partial_path
        return self.working_path


def _time_attrs(layout: schema.RunLayout) -> dict[str, str]:
    return {"standard_name": "time", "axis": "T", "long_name": schema.TIME_LONG_NAME,
            "units": layout.time_units}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _source(attrs: Mapping[str, Any]) -> str:
    if schema.ATTR_SOURCE in attrs:
        return str(attrs[schema.ATTR_SOURCE])
    solver = attrs.get(schema.ATTR_SOLVER, "?")
    return (f"simkit {__version__}, solver {solver} version "
            f"{attrs.get(schema.ATTR_SOLVER_VERSION, '?')}, backend "
            f"{attrs.get(schema.ATTR_BACKEND, '?')}")


def _add_history(ds: netCDF4.Dataset, action: str, when: object) -> None:
    """Append a CF ``history`` line: a time stamp, then what was done."""
    earlier = ds.getncattr(schema.ATTR_HISTORY) if schema.ATTR_HISTORY in ds.ncattrs() else ""
    line = f"{when or _now()}: simkit {__version__} {action}"
    ds.setncattr(schema.ATTR_HISTORY, f"{earlier}\n{line}" if earlier else line)


def _define_stream_extras(group: netCDF4.Dataset, stream: schema.StreamSpec) -> None:
    """The stage a stream captures after, and where its checkpoints keep the schedules' state
    (after the stream's variables: the checksum covers it, in file order)."""
    if stream.stage is not None:
        group.setncattr(schema.ATTR_STREAM_STAGE, stream.stage)
    if stream.state_slots:
        group.createDimension(schema.SCHEDULE_SLOT_DIM, len(stream.state_slots))
        var = group.createVariable(schema.SCHEDULE_STATE, "f8",
                                   (schema.STEP_DIM, schema.SCHEDULE_SLOT_DIM))
        var.setncatts({"long_name": schema.SCHEDULE_STATE_LONG_NAME, "units": "1",
                       schema.ATTR_SCHEDULE_SLOTS: " ".join(stream.state_slots)})
        # Bookkeeping for resume, not data: a coordinate, like the checksum.
        group.setncattr("coordinates", f"{schema.CHECKSUM} {schema.SCHEDULE_STATE}")


def _nbytes(var: schema.VariableSpec, layout: schema.RunLayout) -> int:
    sizes = {c.name: len(c.values) for c in layout.coordinates}
    return int(np.prod([sizes[d] for d in var.dims], dtype=np.int64)) * np.dtype(var.dtype).itemsize


def _output_taken(path: Path) -> ScenarioError:
    """Another run created ``path`` after this one was planned (two runs on one new path)."""
    return ScenarioError(f"expected a new file (or --overwrite), given {str(path)!r}, which "
                         "another run created meanwhile", key="output")


def _is_space_error(error: BaseException, path: Path, margin: int) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    if isinstance(error, RuntimeError) and "HDF error" in str(error):
        limit = _file_size_limit()
        size = path.stat().st_size if path.exists() else 0
        return ((limit is not None and size + margin >= limit)
                or shutil.disk_usage(path.parent).free < DISK_MARGIN_BYTES + margin)
    return False
