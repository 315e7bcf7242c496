"""Recording any Python loop: the schedules, host copies, writer, checksums and crash safety of a
run, for values the loop passes (NumPy, JAX or torch arrays, or Python numbers).

    with simkit.record("out.nc", outputs={"snap": {"every": 10, "fields": ["u"]}}) as rec:
        for i in range(n):
            u = update(u)
            rec.step(i, time=i * dt, u=u)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from simkit.recorder._recorder import Recorder
from simkit.recorder._streams import RECORD_STREAM_KEYS, RecordStream, parse_stream


def record(path: str | os.PathLike[str], outputs: Mapping[str, Any], *,
           coords: Mapping[str, Any] | None = None,
           dims: Mapping[str, tuple[str, ...]] | None = None,
           units: Mapping[str, str] | None = None,
           long_names: Mapping[str, str] | None = None,
           attrs: Mapping[str, Any] | None = None, time_units: str = "1",
           overwrite: bool = False) -> Recorder:
    """Record values of any loop into one run file, on the schedules of ``outputs``.

    Args:
        path: the NetCDF file to write (made at the first capture).
        outputs: streams as in a scenario: ``{name: {<schedule>, fields: [...], diagnostics:
            [...], summaries: {...}, stage: ...}}``; the names are those the loop passes to
            ``step`` (fields keep their dtype, diagnostics are stored as float64, ``when`` and
            ``while`` read the value they name).
        coords: coordinate values by dimension name, or ``(values, units, long_name)``.
        dims: the dimension names of each value (default ``<name>_dim0``, ...).
        units: CF units by value name (default ``"1"``).
        long_names: CF long names by value name (default the name).
        attrs: extra root attributes.
        time_units: units of the ``time`` the loop passes (default ``"1"``: time is the step).
        overwrite: replace an existing file once the recording finishes.

    Returns:
        A ``Recorder``; use it as a context manager, or call ``close()``.
    """
    return Recorder(path, outputs, coords=coords, dims=dims, units=units, long_names=long_names,
                    attrs=attrs, time_units=time_units, overwrite=overwrite)


__all__ = ["RECORD_STREAM_KEYS", "RecordStream", "Recorder", "parse_stream", "record"]
