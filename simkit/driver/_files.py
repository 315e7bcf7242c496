"""What a run's file says about the run, built in one place for runs, ensembles and recordings:
its provenance attributes (what ran, where, when, with which versions), its layout (coordinates,
variables, streams), the attributes that close it after a failure, and what a run returns; the
writer of a run's file."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simkit._version import __version__
from simkit.backends import AbstractBackend
from simkit.driver._buffers import HostBuffers
from simkit.driver._run import state_slots
from simkit.io import BackgroundWriter, open_writer, schema
from simkit.scenario import RunPlan

#: Called on the writer thread with each block of captures committed to disk: ``(stream, steps,
#: times, arrays, stacked)`` (see ``simkit.io.BackgroundWriter``).
OnCommitted = Callable[[str, list[int], list[float], Mapping[str, np.ndarray], bool], None]
#: The packages whose versions every run file records.
RUN_PACKAGES = ("numpy", "array-api-compat", "xarray", "netCDF4", "pydantic")
#: The packages of each array library, recorded beside ``RUN_PACKAGES`` when it ran.
LIBRARY_PACKAGES = {"numpy": (), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the file, and the final state as host arrays.

    Returned by ``simkit.run`` and ``simkit.resume`` (and by ``simkit.iterate`` as its
    generator's return value).

    Attributes:
        path: the run's file (after ``--overwrite``, the replaced file's path).
        state: the final state's fields, by name, as NumPy arrays on the host.
        step: the step the run ended at (earlier than the scenario's length after a
            ``stop_when``).
        time: the simulated time at that step.
    """

    path: Path
    state: dict[str, np.ndarray]
    step: int
    time: float


def now() -> str:
    """The time now as files record it (UTC, ISO 8601, to the second)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions(library: str, packages: Sequence[str] = RUN_PACKAGES) -> str:
    """The versions of simkit, ``packages`` and ``library``'s own packages, as JSON."""
    found = {"simkit": __version__}
    for package in (*packages, *LIBRARY_PACKAGES.get(library, ())):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "unknown"
    return json.dumps(found, sort_keys=True)


@dataclass(frozen=True)
class Provenance:
    """The root attributes recording what ran, where and when it started (``attrs``)."""

    title: str
    solver: str
    solver_version: str
    backend: str
    device: str
    dtype: str
    scenario: str
    scenario_file: str
    source: str | None = None
    compiled: str | None = None
    seed: int | None = None
    dt: float | None = None
    packages: tuple[str, ...] = RUN_PACKAGES
    started: str = field(default_factory=now)

    def attrs(self) -> dict[str, object]:
        """The attributes, in the order files list them (those not given left out)."""
        given: list[tuple[str, object | None]] = [
            (schema.ATTR_TITLE, self.title), (schema.ATTR_SOURCE, self.source),
            (schema.ATTR_SOLVER, self.solver), (schema.ATTR_SOLVER_VERSION, self.solver_version),
            (schema.ATTR_BACKEND, self.backend), (schema.ATTR_DEVICE, self.device),
            (schema.ATTR_COMPILED, self.compiled), (schema.ATTR_DTYPE, self.dtype),
            (schema.ATTR_SEED, self.seed), (schema.ATTR_DT, self.dt),
            (schema.ATTR_SCENARIO, self.scenario),
            (schema.ATTR_SCENARIO_FILE, self.scenario_file),
            (schema.ATTR_VERSIONS, versions(self.backend, self.packages)),
            (schema.ATTR_STARTED, self.started)]
        return {name: value for name, value in given if value is not None}


def failed(error: BaseException, status: str = schema.STATUS_FAILED) -> dict[str, str]:
    """The attributes that close the file of a run stopped by ``error``."""
    message = " ".join(f"{type(error).__name__}: {error}".split())
    return {schema.ATTR_FINISHED: now(), schema.ATTR_STATUS: status,
            schema.ATTR_ERROR: message}


class LayoutBuilder:
    """Lays a run's file out: its coordinates, the variables its streams keep, its streams."""

    def __init__(self, coordinates: Iterable[schema.CoordinateSpec], time_units: str) -> None:
        self.coordinates = {c.name: c for c in coordinates}
        self.variables: dict[str, schema.VariableSpec] = {}
        self.streams: list[schema.StreamSpec] = []
        self.time_units = time_units

    def coordinate(self, spec: schema.CoordinateSpec) -> None:
        """Add (or replace) a coordinate."""
        self.coordinates[spec.name] = spec

    def variable(self, spec: schema.VariableSpec) -> schema.VariableSpec:
        """Add a variable; the first one given under a name is the one kept (and returned)."""
        return self.variables.setdefault(spec.name, spec)

    def stream(self, name: str, fields: Sequence[str], diagnostics: Sequence[str],
               stage: str | None, state_slots: tuple[str, ...] = ()) -> None:
        """Add a stream keeping the variables named (added before)."""
        self.streams.append(schema.StreamSpec(
            name, tuple(self.variables[f] for f in fields),
            tuple(self.variables[d] for d in diagnostics), stage, state_slots))

    def layout(self, fields: Sequence[str]) -> schema.RunLayout:
        """The layout, whose final state holds the variables ``fields``."""
        return schema.RunLayout(coordinates=tuple(self.coordinates.values()),
                                fields=tuple(self.variables[f] for f in fields),
                                streams=tuple(self.streams), time_units=self.time_units)


def provenance(plan: RunPlan, backend: AbstractBackend) -> dict[str, object]:
    """The root attributes recording what ran, where and when it started."""
    sc = plan.scenario
    return Provenance(
        title=f"simkit run of {plan.solver.name}", solver=plan.solver.name,
        solver_version=plan.solver.version, backend=backend.name, device=backend.device,
        compiled=backend.compiled_with or "no", dtype=sc.dtype, seed=sc.seed, dt=plan.dt,
        scenario=plan.text,
        scenario_file=str(Path(plan.source).resolve()) if plan.source else "").attrs()


def run_layout(plan: RunPlan, dtype: str) -> schema.RunLayout:
    """The layout of a run's file: the solver's coordinates, fields, probes and diagnostics,
    the plan's streams (checkpoints keep the schedules' state)."""
    solver = plan.solver
    specs = list(solver.fields()) + [p for stage in solver.stages() for p in stage.probes]
    names = [c.name for c in solver.coordinates()]
    kinds = [("field", f) for f in specs] + [("diagnostic", d) for d in solver.diagnostics()]
    for kind, spec in kinds:
        unknown = [dim for dim in spec.dims if dim not in names]
        if unknown:
            raise ValueError(f"solver {solver.name}: {kind} {spec.name!r}: expected dimensions "
                             f"among the solver's coordinates ({', '.join(names)}), given "
                             f"{spec.dims!r}")
    builder = LayoutBuilder((schema.CoordinateSpec(c.name, np.asarray(c.values), c.units,
                                                   c.long_name)
                             for c in solver.coordinates()), solver.time_units)
    for f in specs:
        builder.variable(schema.VariableSpec(f.name, f.dims, f.units, f.long_name, dtype))
    for d in solver.diagnostics():
        builder.variable(schema.VariableSpec(d.name, d.dims, d.units, d.long_name, "float64"))
    kept, slots = plan.checkpoints, state_slots(plan)
    for s in plan.streams:
        builder.stream(s.name, s.fields, s.diagnostics, s.stage,
                       slots if s.name in kept else ())
    return builder.layout(plan.field_names)


def run_writer(plan: RunPlan, attrs: dict[str, object], buffers: HostBuffers, *,
               append: bool = False, on_committed: OnCommitted | None = None
               ) -> BackgroundWriter:
    """The writer of a run of ``plan``: its file created with ``attrs`` (or opened to append to
    on a resume), written on a thread of its own that gives ``buffers`` back once written."""
    file = open_writer(plan.output, run_layout(plan, plan.scenario.dtype), attrs,
                       overwrite=plan.overwrite, append=append)
    return BackgroundWriter(file,
                            on_written=lambda stream, step, arrays: buffers.give_back(arrays),
                            on_committed=on_committed)
