"""A run's layout in a Zarr v3 group tree, as the NetCDF file lays it out: the root holds the
coordinates, the provenance and (once the run ends) the final state; each stream is a group with
the coordinates again, ``step``, ``time`` and ``simkit_crc32`` along growing dimensions, and its
variables along ``step``. Dimension names are Zarr v3's ``dimension_names``, attributes are CF's,
so ``xarray.open_zarr``/``open_datatree(engine="zarr")`` read it as they read the NetCDF file."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import zarr

from simkit._version import __version__
from simkit.io import schema
from simkit.io.zarr_store import ZArray

#: Bytes a chunk of captures aims at (a capture larger than this is a chunk of its own).
CHUNK_BYTES = 1 << 20
#: Captures per chunk of the one-number-per-capture arrays (step, time, checksum, scalars).
SCALAR_CHUNK = 4096


def json_value(value: object) -> Any:
    """An attribute's value as JSON holds it (NumPy scalars and arrays as Python's)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def now() -> str:
    """The time now, as the files' time stamps give it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def add_history(attrs: dict[str, Any], action: str, when: object) -> None:
    """Append a CF ``history`` line to ``attrs``: a time stamp, then what was done."""
    earlier = str(attrs.get(schema.ATTR_HISTORY, ""))
    line = f"{when or now()}: simkit {__version__} {action}"
    attrs[schema.ATTR_HISTORY] = f"{earlier}\n{line}" if earlier else line


def _source(attrs: Mapping[str, object]) -> str:
    if schema.ATTR_SOURCE in attrs:
        return str(attrs[schema.ATTR_SOURCE])
    return (f"simkit {__version__}, solver {attrs.get(schema.ATTR_SOLVER, '?')} version "
            f"{attrs.get(schema.ATTR_SOLVER_VERSION, '?')}, backend "
            f"{attrs.get(schema.ATTR_BACKEND, '?')}")


def root_attrs(layout: schema.RunLayout, attrs: Mapping[str, object]) -> dict[str, Any]:
    """A new run's root attributes: conventions, source, ``attrs``, history, running."""
    found: dict[str, Any] = {schema.ATTR_CONVENTIONS: schema.CONVENTIONS,
                                schema.ATTR_SOURCE: _source(attrs)}
    found.update({key: json_value(value) for key, value in attrs.items()})
    scenario = attrs.get(schema.ATTR_SCENARIO_FILE) or "a scenario"
    add_history(found, f"run of {attrs.get(schema.ATTR_SOLVER, '?')} from {scenario}",
                attrs.get(schema.ATTR_STARTED))
    found[schema.ATTR_STATUS] = schema.STATUS_RUNNING
    found.setdefault(schema.ATTR_COMMITTED, -1)
    found[schema.ATTR_STREAMS] = " ".join(s.name for s in layout.streams)
    return found


def _array(group: zarr.Group, name: str, dims: tuple[str, ...], shape: tuple[int, ...],
           chunks: tuple[int, ...], dtype: str, attrs: Mapping[str, object]) -> ZArray:
    fill: object = np.nan if np.dtype(dtype).kind == "f" else 0
    array = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                               dimension_names=dims, compressors=None, fill_value=fill,
                               attributes={k: json_value(v) for k, v in attrs.items()})
    return array


def _coordinates(group: zarr.Group, layout: schema.RunLayout) -> None:
    for coord in layout.coordinates:
        values = np.asarray(coord.values)
        array = _array(group, coord.name, (coord.name,), values.shape, values.shape or (1,),
                       str(values.dtype), {"units": coord.units, "long_name": coord.long_name})
        array[...] = values


def capture_chunk(var: schema.VariableSpec, sizes: Mapping[str, int]) -> int:
    """Captures per chunk of a stream's variable ``var``."""
    per_capture = int(np.prod([sizes[d] for d in var.dims], dtype=np.int64)) \
        * np.dtype(var.dtype).itemsize
    return max(1, min(SCALAR_CHUNK, CHUNK_BYTES // max(per_capture, 1)))


def define(root: zarr.Group, layout: schema.RunLayout, attrs: Mapping[str, object]) -> None:
    """Create a new run's root attributes, coordinates and stream groups under ``root``."""
    root.attrs.update(root_attrs(layout, attrs))
    _coordinates(root, layout)
    sizes = {c.name: len(c.values) for c in layout.coordinates}
    for stream in layout.streams:
        group = root.create_group(stream.name)
        _coordinates(group, layout)
        step = (schema.STEP_DIM,)
        _array(group, schema.STEP, step, (0,), (SCALAR_CHUNK,), "int64", schema.STEP_ATTRS)
        _array(group, schema.TIME, step, (0,), (SCALAR_CHUNK,), "float64",
               {"standard_name": "time", "axis": "T", "long_name": schema.TIME_LONG_NAME,
                "units": layout.time_units})
        _array(group, schema.CHECKSUM, (schema.CHECKSUM_DIM,), (0,), (SCALAR_CHUNK,), "uint32",
               schema.CHECKSUM_ATTRS)
        for var in stream.variables:
            shape = tuple(sizes[d] for d in var.dims)
            _array(group, var.name, step + var.dims, (0, *shape),
                   (capture_chunk(var, sizes), *shape), var.dtype,
                   {"units": var.units, "long_name": var.long_name,
                    "coordinates": schema.TIME})
        extra: dict[str, Any] = {
            schema.ATTR_STREAM_FIELDS: " ".join(v.name for v in stream.fields),
            schema.ATTR_STREAM_DIAGNOSTICS: " ".join(v.name for v in stream.diagnostics),
            "coordinates": schema.CHECKSUM}
        if stream.stage is not None:
            extra[schema.ATTR_STREAM_STAGE] = stream.stage
        if stream.state_slots:
            slots = len(stream.state_slots)
            _array(group, schema.SCHEDULE_STATE, step + (schema.SCHEDULE_SLOT_DIM,), (0, slots),
                   (SCALAR_CHUNK, slots), "float64",
                   {"long_name": schema.SCHEDULE_STATE_LONG_NAME, "units": "1",
                    schema.ATTR_SCHEDULE_SLOTS: " ".join(stream.state_slots)})
            extra["coordinates"] = f"{schema.CHECKSUM} {schema.SCHEDULE_STATE}"
        group.attrs.update(extra)


def create_final(root: zarr.Group, layout: schema.RunLayout) -> None:
    """The root ``step``, ``time`` and fields of the final state, unless there already."""
    if schema.STEP in root.array_keys():
        return
    sizes = {c.name: len(c.values) for c in layout.coordinates}
    _array(root, schema.STEP, (), (), (), "int64", schema.STEP_ATTRS)
    _array(root, schema.TIME, (), (), (), "float64",
           {"long_name": schema.TIME_LONG_NAME, "units": layout.time_units})
    held = set(root.array_keys())
    for var in layout.fields:
        if var.name not in held:
            shape = tuple(sizes[d] for d in var.dims)
            _array(root, var.name, var.dims, shape, shape, var.dtype,
                   {"units": var.units, "long_name": var.long_name,
                    "coordinates": f"{schema.STEP} {schema.TIME}"})
