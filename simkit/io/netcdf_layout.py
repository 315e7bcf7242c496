"""A run file's NetCDF layout: the groups, dimensions, variables and attributes a run's streams
and final state take, created by ``NetCDFWriter`` (and, for adjoint streams, by the gradients'
writer)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import netCDF4
import numpy as np

from simkit._version import __version__
from simkit.io import schema


def create_variables(group: netCDF4.Dataset, variables: tuple[schema.VariableSpec, ...],
                     leading: tuple[str, ...]) -> None:
    """Define ``variables`` in ``group``, along the dimensions ``leading`` first."""
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
                        ) -> list[tuple[netCDF4.Variable[Any], np.ndarray]]:
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


def time_attrs(time_units: str) -> dict[str, str]:
    """The attributes of a stream's ``time`` coordinate."""
    return {"standard_name": "time", "axis": "T", "long_name": schema.TIME_LONG_NAME,
            "units": time_units}


def create_capture_axis(group: netCDF4.Dataset, time_units: str
                        ) -> tuple[netCDF4.Variable[Any], netCDF4.Variable[Any],
                                   netCDF4.Variable[Any]]:
    """A stream's unlimited ``step`` dimension with its ``step``, ``time`` and checksum
    variables (the checksum along a dimension of its own: see ``schema.CHECKSUM_DIM``)."""
    group.createDimension(schema.STEP_DIM, None)
    step = group.createVariable(schema.STEP, "i8", (schema.STEP_DIM,))
    step.setncatts(schema.STEP_ATTRS)
    time = group.createVariable(schema.TIME, "f8", (schema.STEP_DIM,))
    time.setncatts(time_attrs(time_units))
    group.createDimension(schema.CHECKSUM_DIM, None)
    crc = group.createVariable(schema.CHECKSUM, "u4", (schema.CHECKSUM_DIM,))
    crc.setncatts(schema.CHECKSUM_ATTRS)
    return step, time, crc


def define(ds: netCDF4.Dataset, layout: schema.RunLayout, attrs: Mapping[str, object]) -> None:
    """Create a new run file's root attributes, coordinates and stream groups in ``ds``."""
    ds.setncattr(schema.ATTR_CONVENTIONS, schema.CONVENTIONS)
    ds.setncattr(schema.ATTR_SOURCE, _source(attrs))
    for key, value in attrs.items():
        ds.setncattr(key, value)
    scenario = attrs.get(schema.ATTR_SCENARIO_FILE) or "a scenario"
    add_history(ds, f"run of {attrs.get(schema.ATTR_SOLVER, '?')} from {scenario}",
                attrs.get(schema.ATTR_STARTED))
    ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
    if schema.ATTR_COMMITTED not in attrs:
        ds.setncattr(schema.ATTR_COMMITTED, np.int64(-1))
    ds.setncattr(schema.ATTR_STREAMS, " ".join(s.name for s in layout.streams))
    coordinates = _create_coordinates(ds, layout)
    for stream in layout.streams:
        group = ds.createGroup(stream.name)
        coordinates += _create_coordinates(group, layout)
        create_capture_axis(group, layout.time_units)
        create_variables(group, stream.variables, (schema.STEP_DIM,))
        group.setncattr(schema.ATTR_STREAM_FIELDS, " ".join(v.name for v in stream.fields))
        group.setncattr(schema.ATTR_STREAM_DIAGNOSTICS,
                        " ".join(v.name for v in stream.diagnostics))
        # xarray reads a group's `coordinates` too: the checksum stays out of data_vars.
        group.setncattr("coordinates", schema.CHECKSUM)
        _define_stream_extras(group, stream)
    ds.sync()  # out of define mode once, for all groups
    for nc, values in coordinates:
        nc[:] = values


def create_final(ds: netCDF4.Dataset, layout: schema.RunLayout) -> None:
    """The root ``step``, ``time`` and fields of the final state, unless there already."""
    if schema.STEP in ds.variables:
        return
    ds.createVariable(schema.STEP, "i8", ()).setncatts(schema.STEP_ATTRS)
    time_var = ds.createVariable(schema.TIME, "f8", (),
                                 fill_value=netCDF4.default_fillvals["f8"])
    # No standard_name: CF wants a reference date with it, and a date would make xarray decode
    # the simulated time into calendar dates.
    time_var.setncatts({"long_name": schema.TIME_LONG_NAME, "units": layout.time_units})
    create_variables(ds, tuple(f for f in layout.fields if f.name not in ds.variables), ())


def resume_attrs(ds: netCDF4.Dataset, attrs: Mapping[str, object]) -> None:
    """Mark a run file that is continued: ``attrs`` set, running, no error, a history line."""
    for key, value in attrs.items():
        ds.setncattr(key, value)
    ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
    if schema.ATTR_ERROR in ds.ncattrs():  # what stopped it is past
        ds.delncattr(schema.ATTR_ERROR)
    add_history(ds, "resume", attrs.get(schema.ATTR_RESUMED))


def now() -> str:
    """The time now, as the files' time stamps give it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _source(attrs: Mapping[str, object]) -> str:
    if schema.ATTR_SOURCE in attrs:
        return str(attrs[schema.ATTR_SOURCE])
    solver = attrs.get(schema.ATTR_SOLVER, "?")
    return (f"simkit {__version__}, solver {solver} version "
            f"{attrs.get(schema.ATTR_SOLVER_VERSION, '?')}, backend "
            f"{attrs.get(schema.ATTR_BACKEND, '?')}")


def add_history(ds: netCDF4.Dataset, action: str, when: object) -> None:
    """Append a CF ``history`` line: a time stamp, then what was done."""
    earlier = ds.getncattr(schema.ATTR_HISTORY) if schema.ATTR_HISTORY in ds.ncattrs() else ""
    line = f"{when or now()}: simkit {__version__} {action}"
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
