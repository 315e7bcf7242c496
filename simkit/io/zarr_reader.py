"""Reading a Zarr run back (``RunReader``) from the last commit of its Icechunk repository: one
consistent snapshot, read without locks while a run may go on committing. Every capture in a
commit is whole; the checksums are still checked, as for NetCDF files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, overload

import numpy as np
import zarr

from simkit.io import schema
from simkit.io._protocol import (
    Checkpoint,
    FinalState,
    LiveSummary,
    StreamCaptures,
    StreamSummary,
    VariableInfo,
)
from simkit.io._storage import capture_checksum, whole_prefix
from simkit.io.zarr_paths import location
from simkit.io.zarr_store import BRANCH, ZArray, array, dims, open_repository, read, root

if TYPE_CHECKING:
    import icechunk
    import xarray as xr

_BOOKKEEPING = (schema.STEP, schema.TIME, schema.CHECKSUM)


class ZarrReader:
    """A Zarr run's last commit, open for reading between ``__enter__`` and ``__exit__``.

    Args:
        path: a local path ending in ``.zarr`` or an ``s3://`` URL.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.location = location(path)
        self.path = Path(self.location)
        self._root: zarr.Group | None = None
        self._store: icechunk.IcechunkStore | None = None

    def __enter__(self) -> ZarrReader:
        session = open_repository(self.location).readonly_session(branch=BRANCH)
        self._store = session.store
        self._root = root(self._store)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._root = self._store = None

    @property
    def store(self) -> icechunk.IcechunkStore:
        """The snapshot's store (for xarray)."""
        if self._store is None:
            raise RuntimeError(f"{self.location} is not open: read it inside `with`")
        return self._store

    @property
    def root(self) -> zarr.Group:
        """The root group of the snapshot."""
        if self._root is None:
            raise RuntimeError(f"{self.location} is not open: read it inside `with`")
        return self._root

    def _group(self, group: str | None) -> zarr.Group:
        found = self.root if group is None else self.root[group]
        assert isinstance(found, zarr.Group)
        return found

    def _array(self, name: str, group: str | None = None) -> ZArray:
        return array(self._group(group), name)

    def attrs(self) -> dict[str, object]:
        return dict(self.root.attrs)

    def stream_attrs(self, stream: str) -> dict[str, object]:
        return dict(self._group(stream).attrs)

    def status(self) -> str | None:
        found = self.root.attrs.get(schema.ATTR_STATUS)
        return None if found is None else str(found)

    def committed_step(self) -> int | None:
        found = self.root.attrs.get(schema.ATTR_COMMITTED)
        return None if found is None else int(str(found))

    def streams(self) -> tuple[str, ...]:
        return tuple(str(self.root.attrs.get(schema.ATTR_STREAMS, "")).split())

    def missing_parts(self) -> str | None:
        found = self.root.attrs
        for attr in (schema.ATTR_STREAMS, schema.ATTR_SCENARIO):
            if attr not in found:
                return f"the attribute {attr!r}"
        groups = set(self.root.group_keys())
        for name in self.streams():
            if name not in groups:
                return f"the group {name!r} its streams name"
            arrays = set(self._group(name).array_keys())
            for var in _BOOKKEEPING:
                if var not in arrays:
                    return f"the variable {name}/{var} along {schema.STEP_DIM!r}"
        return None

    def grid(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for _, held in self.root.arrays():
            for dim, size in zip(dims(held), held.shape, strict=True):
                sizes[dim] = size
        return sizes

    def lengths(self) -> dict[str, int]:
        return {name: self._array(schema.STEP, name).shape[0] for name in self.streams()}

    def whole_counts(self, streams: Iterable[str] | None = None) -> dict[str, int]:
        names = self.streams() if streams is None else tuple(streams)
        return {name: _whole_count(self._group(name)) for name in names}

    def steps(self, counts: Mapping[str, int | None]) -> dict[str, list[int]]:
        return {name: [int(s) for s in read(self._array(schema.STEP, name), slice(n))]
                for name, n in counts.items()}

    def captures(self, stream: str, count: int | None = None,
                 names: Sequence[str] | None = None) -> StreamCaptures:
        group = self._group(stream)
        if count is None:
            count = _whole_count(group)
        if names is None:
            names = _captured(group)
        return StreamCaptures((read(array(group, schema.STEP), slice(count))),
                              (read(array(group, schema.TIME), slice(count))),
                              {name: (read(array(group, name), slice(count))) for name in names})

    def variables(self, group: str | None = None) -> tuple[VariableInfo, ...]:
        found = []
        for name, held in self._group(group).arrays():
            units = held.attrs.get("units")
            found.append(VariableInfo(name, dims(held), None if units is None else str(units)))
        return tuple(found)

    def value(self, name: str, group: str | None = None) -> np.ndarray | None:
        # Never None: a Zarr run has no scalar written as missing (its final state is absent
        # until the run ends, where a NetCDF file holds fill values).
        return read(self._array(name, group))

    def latest_checkpoint(self, field_names: Sequence[str], counts: Mapping[str, int],
                          upto: int | None = None) -> Checkpoint | None:
        best: Checkpoint | None = None
        for name, n in counts.items():
            group = self._group(name)
            held = set(group.array_keys())
            if (n == 0 or schema.ATTR_STREAM_STAGE in group.attrs
                    or not all(f in held for f in field_names)):
                continue
            steps = (read(array(group, schema.STEP), slice(n)))
            if upto is not None:
                n = int(np.searchsorted(steps, upto, side="right"))
                if n == 0:
                    continue
            step = int(steps[n - 1])
            if best is None or step > best.step:
                fields = {f: (read(array(group, f), n - 1)) for f in field_names}
                best = Checkpoint(name, step, float(read(array(group, schema.TIME), n - 1)), fields,
                                  _schedule_state(group, n - 1))
        return best

    def final_state(self, names: Sequence[str]) -> FinalState | None:
        if schema.STEP not in self.root.array_keys():
            return None
        state = {name: read(self._array(name)).copy() for name in names}
        return FinalState(int(read(self._array(schema.STEP))),
                          float(read(self._array(schema.TIME))), state)

    def live_summary(self) -> LiveSummary:
        counts = self.whole_counts()
        streams = {name: _stream_summary(self._group(name), count)
                   for name, count in counts.items()}
        return {"attrs": self.attrs(), "streams": streams}

    @overload
    def to_xarray(self, group: None = None) -> xr.DataTree: ...

    @overload
    def to_xarray(self, group: str) -> xr.Dataset: ...

    def to_xarray(self, group: str | None = None) -> xr.DataTree | xr.Dataset:
        import xarray as xr

        counts = self.whole_counts()
        names = self.streams() if group is None else (group,)
        parts = {name: _stream_dataset(self.store, name, counts[name]) for name in names}
        if group is not None:
            return parts[group]
        base: xr.Dataset = xr.open_zarr(self.store, consolidated=False, chunks=None).load()
        tree: xr.DataTree = xr.DataTree.from_dict({"/": base,
                                                   **{f"/{k}": v for k, v in parts.items()}})
        return tree


@contextlib.contextmanager
def open_whole_tree(path: str | os.PathLike[str], counts: Mapping[str, int]
                    ) -> Iterator[xr.DataTree]:
    """The Zarr run at ``path`` (its last commit) as a lazily read ``xarray.DataTree``, each
    stream group ``name`` in ``counts`` cut to its first ``counts[name]`` captures."""
    import xarray as xr

    store = open_repository(path).readonly_session(branch=BRANCH).store
    # xarray takes a Zarr store where its annotations name only paths and its own stores.
    tree = xr.open_datatree(store, engine="zarr", consolidated=False,  # type: ignore[arg-type]
                            chunks=None)
    try:
        parts = {"/": tree.to_dataset(inherit=False)}
        for name, node in tree.children.items():
            part = node.to_dataset(inherit=False)
            if name in counts:
                part = part.isel({schema.STEP_DIM: slice(0, counts[name])})
            parts[f"/{name}"] = part
        whole: xr.DataTree = xr.DataTree.from_dict(parts)
        yield whole
    finally:
        tree.close()


def _captured(group: zarr.Group) -> list[str]:
    return [name for name, held in group.arrays()
            if dims(held)[:1] == (schema.STEP_DIM,) and name not in _BOOKKEEPING]


def _stream_dataset(store: icechunk.IcechunkStore, name: str, count: int) -> xr.Dataset:
    import xarray as xr

    data = xr.open_zarr(store, group=name, consolidated=False, chunks=None)
    loaded: xr.Dataset = data.isel({schema.STEP_DIM: slice(0, count)}).load()
    return loaded


def _stream_summary(group: zarr.Group, count: int) -> StreamSummary:
    entry: StreamSummary = {"captures": count, "step": None, "time": None, "scalars": {}}
    if count:
        entry["step"] = int(read(array(group, schema.STEP), count - 1))
        entry["time"] = float(read(array(group, schema.TIME), count - 1))
        for name, held in group.arrays():
            if dims(held) == (schema.STEP_DIM,) and name not in _BOOKKEEPING:
                entry["scalars"][name] = float(read(held, count - 1))
    return entry


def _record_ok(group: zarr.Group, i: int, names: tuple[str, ...]) -> bool:
    arrays = {name: (read(array(group, name), i)) for name in names}
    crcs = array(group, schema.CHECKSUM)
    if crcs.shape[0] <= i:
        return False
    return int(read(crcs, i)) == capture_checksum(int(read(array(group, schema.STEP), i)),
                                            float(read(array(group, schema.TIME), i)), arrays, names)


def _whole_count(group: zarr.Group) -> int:
    """How many leading captures of a stream's ``group`` are whole (a commit holds whole
    captures only; this is the NetCDF reader's check, kept for a store changed by other
    tools)."""
    names = _checksum_order(group)
    return whole_prefix(read(array(group, schema.STEP)), lambda i: _record_ok(group, i, names))


def _checksum_order(group: zarr.Group) -> tuple[str, ...]:
    """The variables a capture's checksum covers, in the writer's order: fields, diagnostics,
    then the schedules' state."""
    names = tuple(str(group.attrs.get(schema.ATTR_STREAM_FIELDS, "")).split()
                  + str(group.attrs.get(schema.ATTR_STREAM_DIAGNOSTICS, "")).split())
    if schema.SCHEDULE_STATE in group.array_keys():
        names += (schema.SCHEDULE_STATE,)
    return names


def _schedule_state(group: zarr.Group, i: int) -> dict[str, float] | None:
    if schema.SCHEDULE_STATE not in group.array_keys():
        return None
    state = array(group, schema.SCHEDULE_STATE)
    slots = str(state.attrs[schema.ATTR_SCHEDULE_SLOTS]).split()
    values = read(state, i).tolist()
    return dict(zip(slots, values, strict=True))
