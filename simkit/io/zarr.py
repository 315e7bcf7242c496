"""Writing a run to a Zarr v3 store in an Icechunk repository, on local disk (``run.zarr``) or in
S3 (``s3://bucket/prefix/run.zarr``), laid out as the NetCDF file is (``simkit.io.zarr_layout``).

Icechunk makes each write a transaction: what ``sync`` hands over (a block of captures of every
stream, the committed step) becomes one commit, visible to readers all at once or not at all. A
run killed at any moment leaves the repository at its last commit: every capture in it whole,
nothing to repair. Each capture still carries its CRC32, as in NetCDF files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time as _time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync

from simkit.errors import DiskFullError, ScenarioError
from simkit.io import schema
from simkit.io._storage import (
    DISK_MARGIN_BYTES,
    capture_checksum,
    exclusive,
    file_size_limit,
    release,
)
from simkit.io._temporaries import remove_stale_temporaries, temporary_path
from simkit.io.zarr_layout import add_history, create_final, define, json_value
from simkit.io.zarr_paths import is_s3, location
from simkit.io.zarr_store import (
    BRANCH,
    array,
    create_repository,
    dims,
    exists,
    open_repository,
    root,
)

#: A committed step is committed on its own at most this often (seconds); otherwise it goes with
#: the next block of captures (it may lag what is on disk, never lead it).
COMMIT_INTERVAL = 1.0
#: Words of an operating system error that say the disk (or the file size limit) is full.
_SPACE_WORDS = ("No space left", "os error 28", "File too large", "os error 27",
                "Disk quota", "os error 122")


class ZarrWriter:
    """Writes one run to an Icechunk repository (see the module's text); the ``RunWriter``.

    A new local repository is created under a temporary name beside ``path`` and moved into
    place once its layout is committed, so a crash never leaves a half-created one at ``path``.
    An existing run (``overwrite=True``) is replaced by a commit that starts the new run (the
    old one stays in the repository's history); ``append=True`` continues it (resume).

    Args:
        path: a local path ending in ``.zarr`` or an ``s3://`` URL.
        layout: coordinates, final-state fields and streams.
        attrs: provenance attributes of the root group.
        overwrite: replace an existing run.
        append: continue the existing run at ``path``.
    """

    #: What a full disk's message tells the user to do (``{path}``: the repository kept).
    after_disk_full = "free space, then `simkit resume {path}`"

    def __init__(self, path: str | os.PathLike[str], layout: schema.RunLayout,
                 attrs: Mapping[str, object], overwrite: bool = False, append: bool = False) -> None:
        self.location = location(path)
        self.path = self.partial_path = Path(self.location)
        self.layout = layout
        self._names = {s.name: tuple(v.name for v in s.variables)
                       + ((schema.SCHEDULE_STATE,) if s.state_slots else ())
                       for s in layout.streams}
        sizes = {c.name: len(c.values) for c in layout.coordinates}
        self._bytes = {s.name: sum(int(np.prod([sizes[d] for d in v.dims], dtype=np.int64))
                                   * np.dtype(v.dtype).itemsize for v in s.variables)
                       for s in layout.streams}
        self._failed: Exception | None = None
        self._closed: Path | None = None
        self._lock: int | None = None
        self._session: icechunk.Session | None = None
        self._root: zarr.Group | None = None
        self._dirty = False
        #: Captures handed over since the last commit, by array: where they start, and pieces.
        self._pending: dict[str, tuple[int, list[np.ndarray]]] = {}
        self._last_commit = _time.monotonic()
        self._counts: dict[str, int] = {s.name: 0 for s in layout.streams}
        if append:
            self._open_existing(attrs)
        else:
            self._create(attrs, overwrite)
        self._committed = dict(self._counts)

    # Creating and opening.

    def _open_existing(self, attrs: Mapping[str, object]) -> None:
        self._repo = open_repository(self.location)
        self._lock = None if is_s3(self.location) else exclusive(self.path)
        try:
            group = self._begin()
            found: dict[str, Any] = dict(group.attrs)
            found.update({key: json_value(value) for key, value in attrs.items()})
            found[schema.ATTR_STATUS] = schema.STATUS_RUNNING
            found.pop(schema.ATTR_ERROR, None)  # what stopped it is past
            add_history(found, "resume", attrs.get(schema.ATTR_RESUMED))
            self._set_root_attrs(found)
            self._counts = {s.name: int(array(group, f"{s.name}/{schema.STEP}").shape[0])
                            for s in self.layout.streams}
            self._commit("resume")
        except BaseException:
            release(self._lock)
            raise

    def _create(self, attrs: Mapping[str, object], overwrite: bool) -> None:
        taken = exists(self.location)
        if taken and not overwrite:
            if is_s3(self.location):  # no check before the run looked at object storage
                raise ScenarioError(f"expected a new output (or --overwrite), given "
                                    f"{self.location!r} which exists", key="output")
            raise _output_taken(self.location)
        if taken:
            check_replaceable(self.location)
            self._repo = open_repository(self.location)
            self._lock = None if is_s3(self.location) else exclusive(self.path)
            try:
                self._start(attrs, "new run replacing the one before")
            except BaseException:
                release(self._lock)
                raise
            return
        if is_s3(self.location):
            self._repo = create_repository(self.location)
            self._start(attrs, "new run")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        tmp = temporary_path(self.path)
        try:
            self._repo = create_repository(tmp)
            self._lock = exclusive(tmp)  # the lock file moves with the repository
            self._start(attrs, "new run")
            try:
                os.rename(tmp, self.path)  # fails if a non-empty one appeared meanwhile
            except OSError:
                raise _output_taken(self.location) from None
        except BaseException:
            release(self._lock)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._repo = open_repository(self.location)

    def _start(self, attrs: Mapping[str, object], message: str) -> None:
        assert self._session is None
        self._session = self._repo.writable_session(BRANCH)
        self._root = root(self._session.store, "w")
        define(self._root, self.layout, attrs)
        self._commit(message)

    # Sessions and commits.

    def _begin(self) -> zarr.Group:
        """The root group of the session that collects the next commit."""
        if self._root is None:
            self._session = self._repo.writable_session(BRANCH)
            self._root = root(self._session.store, "r+")
        return self._root

    def _set_root_attrs(self, attrs: Mapping[str, object]) -> None:
        group = self._begin()
        group.attrs.put({key: json_value(value) for key, value in attrs.items()})
        self._dirty = True

    def _flush(self) -> None:
        """Write the pending captures, every array at once (one round trip to Zarr's event loop
        rather than one per array)."""
        pending, self._pending = self._pending, {}
        if pending:
            group = self._begin()
            sync(_write_all(group._async_group, {
                path: (start, pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
                for path, (start, pieces) in pending.items()}))

    def _commit(self, message: str) -> None:
        self._flush()
        session, self._session, self._root = self._session, None, None
        self._dirty = False
        if session is not None and session.has_uncommitted_changes:
            session.commit(message)
        self._last_commit = _time.monotonic()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Refuse to write after a failed write, remember the first failure, and tell a full
        disk as one."""
        if self._failed is not None:
            raise self._failed
        try:
            yield
        except Exception as error:
            if not isinstance(error, DiskFullError) and _is_space_error(error):
                error = self._disk_full(self._free())
            self._failed = error
            self._session = self._root = None  # what it collected is dropped, never committed
            self._pending = {}
            raise error from None

    def _free(self) -> int:
        """Free bytes where the repository is (object storage: no limit to tell)."""
        if is_s3(self.location):
            return 1 << 62
        return shutil.disk_usage(_existing(self.path)).free

    def _disk_full(self, free: int) -> DiskFullError:
        intact = ", ".join(f"{name}: {n}" for name, n in self._committed.items()) or "none"
        limit = file_size_limit()
        why = (f"file size limit of {limit} bytes reached" if limit is not None
               and max(self._bytes.values(), default=0) + DISK_MARGIN_BYTES > limit
               else f"{free / 2**20:.1f} MiB free")
        return DiskFullError(f"disk full writing {self.location} ({why}); captures intact: "
                             f"{intact}; " + self.after_disk_full.format(path=self.location))

    # The RunWriter protocol.

    def check_space(self, streams: Iterable[str]) -> None:
        """Raise ``DiskFullError`` unless captures of ``streams`` fit (local disk only; object
        storage has no such limit to look at)."""
        with self._writing():
            if is_s3(self.location):
                return
            wanted = list(streams)
            needed = sum(self._bytes[s] for s in wanted) + DISK_MARGIN_BYTES
            free = self._free()
            limit = file_size_limit()
            largest = max((self._bytes[s] for s in wanted), default=0)
            if free < needed or (limit is not None and largest + DISK_MARGIN_BYTES > limit):
                raise self._disk_full(free)

    def write_capture(self, stream: str, step: int, time: float,
                      arrays: Mapping[str, np.ndarray], sync: bool = True) -> None:
        """Add one capture to ``stream`` (committed by ``sync``, at once with ``sync=True``)."""
        if sync:
            self.check_space((stream,))
        self.write_block(stream, [step], [time],
                         {name: np.asarray(value)[None] for name, value in arrays.items()})
        if sync:
            self.sync()

    def write_block(self, stream: str, steps: Sequence[int], times: Sequence[float],
                    arrays: Mapping[str, np.ndarray]) -> None:
        """Add ``len(steps)`` captures of ``stream`` (``arrays`` along their first axis), each
        with its checksum, to the commit that ``sync`` makes."""
        n = len(steps)
        if not n:
            return
        with self._writing():
            names = self._names[stream]
            crcs = [capture_checksum(step, time, {name: arrays[name][j] for name in names}, names)
                    for j, (step, time) in enumerate(zip(steps, times, strict=True))]
            values = {**{name: np.asarray(value) for name, value in arrays.items()},
                      schema.TIME: np.asarray(times, dtype=np.float64),
                      schema.CHECKSUM: np.array(crcs, dtype=np.uint32),
                      schema.STEP: np.asarray(steps, dtype=np.int64)}
            for name, value in values.items():
                self._pending.setdefault(f"{stream}/{name}", (self._counts[stream], []))[1] \
                    .append(value)
            self._counts[stream] += n
            self._dirty = True

    def sync(self) -> None:
        """Commit what was written since the last commit (with a committed step set since)."""
        with self._writing():
            if self._dirty:
                self._commit("captures up to " + ", ".join(
                    f"{name} {n}" for name, n in self._counts.items()))
        self._committed = dict(self._counts)

    def committed(self, step: int) -> None:
        """Record that every capture due up to ``step`` is committed. Committed on its own at
        most every ``COMMIT_INTERVAL`` seconds; otherwise with the next captures or the end."""
        with self._writing():
            self._begin().attrs[schema.ATTR_COMMITTED] = int(step)
            self._dirty = True
            if _time.monotonic() - self._last_commit >= COMMIT_INTERVAL:
                self._commit(f"committed step {step}")

    def write_final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the final state to the root group (created now: an unfinished run has none)."""
        with self._writing():
            group = self._begin()
            create_final(group, self.layout)
            for name, value in arrays.items():
                array(group, name)[...] = np.asarray(value)
            array(group, schema.TIME)[...] = np.float64(time)
            array(group, schema.STEP)[...] = np.int64(step)
            self._dirty = True

    def close(self, attrs: Mapping[str, object] | None = None, complete: bool = True) -> Path:
        """Commit the status and end attributes with whatever is still uncommitted.

        After a failed write what it collected is dropped (every commit before stays whole),
        and the status and end attributes are committed alone, if the storage takes them.
        """
        if self._closed is not None:
            return self._closed
        complete = complete and self._failed is None
        try:
            group = self._begin()
            found: dict[str, Any] = {key: json_value(value)
                                     for key, value in (attrs or {}).items()}
            # A status among ``attrs`` is the caller's (a run whose gradients follow).
            if complete and schema.ATTR_STATUS not in found:
                found[schema.ATTR_STATUS] = schema.STATUS_COMPLETE
            group.attrs.update(found)
            self._commit(f"closed {found.get(schema.ATTR_STATUS, 'unfinished')}")
        except Exception as error:
            if _is_space_error(error):
                raise self._disk_full(self._free()) from None
            raise
        finally:
            self._closed = self.path
            release(self._lock)
        return self.path

    def abort(self, attrs: Mapping[str, object] | None = None) -> Path:
        """Close after a failure, keeping every commit; returns the repository's path."""
        with contextlib.suppress(Exception):
            return self.close(attrs, complete=False)
        return self.path


def check_replaceable(path: str | os.PathLike[str], key: str = "output") -> None:
    """Refuse to replace a Zarr store at ``path`` unless it holds a run simkit wrote.

    Raises:
        ScenarioError: naming the path, what may be replaced, and what to do.
    """
    with contextlib.suppress(Exception):
        repo = open_repository(path)
        found = root(repo.readonly_session(branch=BRANCH).store).attrs
        if schema.ATTR_STREAMS in found:
            return
    raise ScenarioError(f"expected a Zarr run simkit wrote to replace with --overwrite, given "
                        f"{location(path)!r}, which is not one; remove it yourself or choose "
                        "another output", key=key)


async def _write_all(group: AsyncGroup, writes: Mapping[str, tuple[int, np.ndarray]]) -> None:
    """Write each ``writes[path] = (start, value)`` at ``start`` along the first axis of the
    array at ``path``, growing it to hold the value; all arrays at once."""
    async def one(path: str, start: int, value: np.ndarray) -> None:
        target = await group.getitem(path)
        assert isinstance(target, AsyncArray)
        end = start + value.shape[0]
        if target.shape[0] != end:
            await target.resize((end, *target.shape[1:]))
        if _one_capture_chunks(target, value):
            await asyncio.gather(*(_put_chunk(target, start + j, value[j])
                                   for j in range(value.shape[0])))
        else:
            await target.setitem(slice(start, end), value)

    await asyncio.gather(*(one(path, start, value) for path, (start, value) in writes.items()))


def _one_capture_chunks(target: AsyncArray[Any], value: np.ndarray) -> bool:
    """Whether each capture of ``value`` is a whole chunk of ``target`` stored as its raw bytes
    (one capture a chunk, no filters or compressors, little-endian data): then it is put in
    the store as it is, without Zarr's codec pipeline (a quarter of the write's time)."""
    return (value.ndim > 1 and tuple(target.chunks) == (1, *target.shape[1:])
            and not target.filters and not target.compressors
            and sys.byteorder == "little" and value.dtype.byteorder in ("=", "<", "|")
            and value.dtype == target.dtype)


async def _put_chunk(target: AsyncArray[Any], index: int, capture: np.ndarray) -> None:
    """Put one capture as the chunk ``index`` of ``target`` (see ``_one_capture_chunks``)."""
    key = target.metadata.encode_chunk_key((index,) + (0,) * (capture.ndim))
    data = np.ascontiguousarray(capture).view(np.uint8).reshape(-1)
    await (target.store_path / key).set(default_buffer_prototype().buffer.from_array_like(data))


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (for the free space there)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _is_space_error(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (28, 27, 122):
        return True
    text = str(error)
    return any(word in text for word in _SPACE_WORDS)


def _output_taken(where: str) -> ScenarioError:
    """Another run created ``where`` after this one was planned (two runs on one new path)."""
    return ScenarioError(f"expected a new output (or --overwrite), given {where!r}, which "
                         "another run created meanwhile", key="output")


def truncate(path: str | os.PathLike[str], keep: Mapping[str, int],
             attrs: Mapping[str, object] | None = None) -> None:
    """Cut the streams of the Zarr run at ``path`` back to their first ``keep[name]`` captures
    and set ``attrs`` on its root, in one commit (a resume's cut to its checkpoint): a crash
    meanwhile leaves the run as it was."""
    where = location(path)
    lock = None if is_s3(where) else exclusive(Path(where))
    try:
        session = open_repository(where).writable_session(BRANCH)
        group = root(session.store, "r+")
        along = ((schema.STEP_DIM,), (schema.CHECKSUM_DIM,))
        for name, n in keep.items():
            stream = group[name]
            assert isinstance(stream, zarr.Group)
            for _, found in stream.arrays():
                if dims(found)[:1] in along and found.shape[0] > n:
                    found.resize((n, *found.shape[1:]))
        if attrs:
            group.attrs.update({key: json_value(value) for key, value in attrs.items()})
        if session.has_uncommitted_changes:
            session.commit("cut back to " + ", ".join(f"{k} {n}" for k, n in keep.items()))
    finally:
        release(lock)
