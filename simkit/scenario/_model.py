"""The scenario as written (``Scenario``), the plan it becomes (``RunPlan``, ``StreamPlan``), and
pydantic validation errors said as one ``ScenarioError`` line."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from simkit.errors import ScenarioError, did_you_mean
from simkit.scenario._python import condition_mapping, streams_as_mappings
from simkit.schedule import MAX_STEP, AbstractSchedule, When
from simkit.solver import AbstractSolver, SolverModel

#: Seeds are hashed as 32-bit words by the counter-based generators: larger ones would collide.
MAX_SEED = 2**32 - 1


class Scenario(BaseModel):
    """A run, as written in a scenario file (solver-specific parts still raw).

    ``simkit.scenario.plan_run`` reads a file or mapping into one and checks it against its
    solver; ``simkit.run`` accepts one wherever it accepts a file. Every key is
    listed with its type and default in the reference's scenario format page and by
    ``simkit schema``; ``params`` and ``initial`` are validated by the solver's own models.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    solver: str = Field(description="solver name (see `simkit list`)")
    params: dict[str, Any] = Field(default_factory=dict, description="solver parameters")
    initial: dict[str, Any] = Field(default_factory=dict, description="initial condition")
    backend: Literal["numpy", "jax", "torch"] = "numpy"
    device: Literal["cpu", "gpu", "auto"] = "cpu"
    dtype: Literal["float32", "float64"] = "float64"
    compile: bool | None = Field(None, description="compile the loop (default: backend decides)")
    devices: int | None = Field(None, ge=1, description="devices the state is split over (jax); "
                                "along the solver's first splittable dimension unless `mesh` "
                                "says how")
    mesh: dict[str, int] | None = Field(None, description="devices per grid dimension (jax), "
                                        "e.g. {y: 2, x: 2}: the state is split along these")
    steps: int | None = Field(None, ge=0, le=MAX_STEP, description="number of steps")
    until: float | None = Field(None, gt=0, description="simulated end time")
    dt: float | None = Field(None, gt=0, description="time step (default: solver's stable one)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    stop_when: dict[str, Any] | None = Field(
        None, description="end the run early when a diagnostic crosses a value, e.g. "
        "{diagnostic: change, below: 1e-6} (steps or until stays the limit)")
    check_finite: int = Field(1000, ge=0, description="steps between on-device finiteness "
                              "checks (also at every capture); 0: never")
    flush_seconds: float = Field(2.0, gt=0, le=3600, description="durability lag: a capture is "
                                 "on disk at most about this many seconds after it is computed")
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    diagnostics: dict[str, Any] = Field(
        default_factory=dict, description="diagnostics added by reference (needs "
        "--allow-import): {name: module:function} or {name: {function, units, long_name, dims}}")
    probes: dict[str, Any] = Field(
        default_factory=dict, description="probes added by reference (needs --allow-import), "
        "computed right after a stage: {name: {stage, function, units, long_name, dims}}")
    objective: dict[str, Any] | None = Field(
        None, description="differentiate the run (`simkit run` adds the gradients to the file): "
        "{misfit: {path, stream, fields}, wrt: [names], checkpoint: sqrt|all, backend: jax|torch}")
    gradients: dict[str, dict[str, Any]] | None = Field(
        None, description="adjoint streams dL/du_k of the objective: {name: {<schedule>, fields}}")
    output: str | None = Field(None, description="output file (default: runs/<scenario>.nc, "
                               "or .zarr with format: zarr)")
    format: Literal["netcdf", "zarr"] | None = Field(
        None, description="output format: netcdf (one file), or zarr (an Icechunk repository, "
        "local or s3://; needs simkit[zarr]); default: told by the output's name")

    @field_validator("outputs", "gradients", mode="before")
    @classmethod
    def _streams(cls, value: Any, info: ValidationInfo) -> Any:
        # A simkit.Stream (or a schedule) given from Python: the mapping a file would hold.
        return streams_as_mappings(value, str(info.field_name))

    @field_validator("stop_when", mode="before")
    @classmethod
    def _condition(cls, value: Any) -> Any:
        return condition_mapping(value, "stop_when")

    @model_validator(mode="after")
    def _one_length(self) -> Scenario:
        if (self.steps is None) == (self.until is None):
            given = "both" if self.steps is not None else "neither"
            raise ValueError(f"expected exactly one of 'steps' or 'until', given {given}")
        return self


TOP_LEVEL_KEYS = tuple(Scenario.model_fields)


@dataclass(frozen=True)
class StreamPlan:
    """One output stream, resolved: schedule and the names it keeps."""

    name: str
    schedule: AbstractSchedule
    fields: tuple[str, ...]
    diagnostics: tuple[str, ...]
    stage: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """A validated scenario, ready for the driver."""

    scenario: Scenario
    solver: AbstractSolver
    initial: SolverModel
    dt: float
    streams: tuple[StreamPlan, ...]
    output: Path
    overwrite: bool
    text: str
    source: str | None
    stop_when: When | None = None
    #: Devices per dimension the state is split along, ``(("y", 2), ("x", 2))``; empty: one
    #: device.
    mesh: tuple[tuple[str, int], ...] = ()

    # Facts derived from the solver, computed once per plan (a frozen dataclass keeps a cached
    # property in its ``__dict__``; ``dataclasses.replace`` makes a plan that computes its own).

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        """The solver's fields, in its order: the state a step advances and a checkpoint holds."""
        return tuple(f.name for f in self.solver.fields())

    @cached_property
    def probe_names(self) -> tuple[str, ...]:
        """The probes of every stage (declared and added), in stage order."""
        return tuple(p.name for stage in self.solver.stages() for p in stage.probes)

    @cached_property
    def diagnostic_names(self) -> tuple[str, ...]:
        """The solver's diagnostics (declared, added and generated summaries)."""
        return tuple(d.name for d in self.solver.diagnostics())

    @cached_property
    def sizes(self) -> Mapping[str, int]:
        """Points along each coordinate of the grid, by coordinate name."""
        return {c.name: len(c.values) for c in self.solver.coordinates()}

    @cached_property
    def dims(self) -> Mapping[str, tuple[str, ...]]:
        """The dimensions of every field, probe and diagnostic, by name."""
        found = {f.name: tuple(f.dims) for f in self.solver.fields()}
        found.update({p.name: tuple(p.dims) for stage in self.solver.stages()
                      for p in stage.probes})
        found.update({d.name: tuple(d.dims) for d in self.solver.diagnostics()})
        return found

    @cached_property
    def shapes(self) -> Mapping[str, tuple[int, ...]]:
        """The shape of one capture of every field, probe and diagnostic, by name."""
        sizes = self.sizes
        return {name: tuple(sizes[d] for d in dims) for name, dims in self.dims.items()}

    @cached_property
    def checkpoints(self) -> frozenset[str]:
        """The streams whose captures are checkpoints (see ``is_checkpoint``), by name."""
        return frozenset(s.name for s in self.streams if self.is_checkpoint(s))

    def is_checkpoint(self, stream: StreamPlan) -> bool:
        """Whether the captures of ``stream`` are checkpoints: full states at the end of a step
        (a stream that captures after a stage holds mid-step states, which a resume must not
        use)."""
        return stream.stage is None and set(self.field_names) <= set(stream.fields)


class SimkitWarning(UserWarning):
    """A setting that is legal but probably not what was meant."""


def unknown(what: str, given: Any, valid: Sequence[str], key: str | None, *, some: bool = False,
            more: str = "") -> ScenarioError:
    """The error for ``given``, a ``what`` (key, stage, field, ...) that is not one of ``valid``:
    the closest valid name as a hint, ``some`` of them expected where a list may hold several,
    ``more`` said after it."""
    return ScenarioError(f"unknown {what}{did_you_mean(str(given), valid)}; expected "
                         f"{'some' if some else 'one'} of {', '.join(valid)}, given {given!r}"
                         f"{more}", key=key)


def _describe_expected(message: str) -> str:
    sized = re.match(r"^(\w+) should have (.*?)(?: after validation)?, not \d+$", message)
    if sized:
        return f"a {sized.group(1).lower()} with {sized.group(2)}"
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message[:1].lower() + message[1:]


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, ...]:
    """The keys of the (nested) model that ``loc`` leads to from ``model``."""
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = getattr(field, "annotation", None)
        found = [t for t in (inner, *getattr(inner, "__args__", ()))
                 if isinstance(t, type) and issubclass(t, BaseModel)]
        if not found:
            break
        model = found[0]
    return tuple(model.model_fields)


def _pydantic_error(error: ValidationError, prefix: tuple[Any, ...], model: type[BaseModel]
                    ) -> ScenarioError:
    first = error.errors()[0]
    loc = tuple(prefix) + tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or None
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        name = str(first["loc"][-1])
        fields = _fields_at(model, tuple(first["loc"][:-1]))
        return unknown("key", name, fields, key, more=more)
    if first["type"] == "missing":
        return ScenarioError(f"expected a value for this required key, given nothing{more}",
                             key=key)
    message = _describe_expected(first["msg"])
    if message.startswith("expected"):
        return ScenarioError(message + more, key=key)
    return ScenarioError(f"expected {message}, given {first['input']!r}{more}", key=key)


def validate_model(model: type[BaseModel], data: Any, prefix: tuple[Any, ...] = ()) -> Any:
    """``model`` validated from ``data``, or a ScenarioError naming the first bad key."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        key = ".".join(map(str, prefix)) or None
        raise ScenarioError(f"expected a mapping of keys to values, given {data!r}", key=key)
    try:
        return model.model_validate(dict(data))
    except ValidationError as error:
        raise _pydantic_error(error, prefix, model) from None
