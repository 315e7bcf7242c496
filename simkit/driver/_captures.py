"""Captures handed to a caller as the run commits them to its file (``simkit.iterate``,
``simkit.run(on_capture=...)``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from simkit.io import schema


@dataclasses.dataclass(frozen=True)
class Capture:
    """One capture, as the run committed it to its file.

    Args:
        stream: the stream's name.
        step: the step index.
        time: the simulated time.
        values: host copies (NumPy) of what the stream keeps, by name.
        dims: each value's dimensions, by name (as in the file, without ``step``).
    """

    stream: str
    step: int
    time: float
    values: dict[str, np.ndarray]
    dims: dict[str, tuple[str, ...]]

    def to_xarray(self) -> Any:
        """The capture as an ``xarray.Dataset`` with scalar ``step`` and ``time`` coordinates."""
        import xarray as xr

        return xr.Dataset({name: (self.dims[name], value) for name, value in self.values.items()},
                          coords={schema.STEP: self.step, schema.TIME: self.time},
                          attrs={"stream": self.stream})


def commit_callback(plan: Any, deliver: Callable[[Capture], None]) -> Callable[..., None]:
    """The writer's commit callback (see ``BackgroundWriter``) that hands ``deliver`` every
    committed capture as a ``Capture`` of host copies (the writer's arrays are reused)."""
    dims = {spec.name: tuple(spec.dims) for spec in plan.solver.fields()}
    dims.update({probe.name: tuple(probe.dims) for stage in plan.solver.stages()
                 for probe in stage.probes})
    dims.update({d.name: tuple(d.dims) for d in plan.solver.diagnostics()})

    def on_commit(stream: str, steps: list, times: list, arrays: Mapping[str, np.ndarray],
                  stacked: bool) -> None:
        kept = {name: value for name, value in arrays.items() if name in dims}
        for i, (step, time) in enumerate(zip(steps, times, strict=True)):
            values = {name: np.array(value[i] if stacked else value, copy=True)
                      for name, value in kept.items()}
            deliver(Capture(stream, int(step), float(time), values,
                            {name: dims[name] for name in values}))

    return on_commit
