"""The dataset schema, defined once: group, dimension, variable and attribute names of a run file.

A run file is NetCDF4. The root group holds the final state, the grid coordinates and the
provenance; each output stream is a group of its own with a ``step`` dimension and ``step`` and
``time`` coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

CONVENTIONS = "CF-1.10"
FORMAT: Final = "NETCDF4"

STEP_DIM = "step"
STEP = "step"
TIME = "time"

CHECKSUM = "simkit_crc32"
CHECKSUM_LONG_NAME = "CRC32 of the capture (step, time, variables in file order)"
CHECKSUM_ATTRS = {"long_name": CHECKSUM_LONG_NAME, "units": "1"}
#: The checksum's own dimension, one entry per capture as ``step``: along ``step`` xarray would
#: attach it to every captured variable (and print it in plot titles). Older files have the
#: checksum along ``step``; readers take either.
CHECKSUM_DIM = "simkit_capture"

STEP_ATTRS = {"long_name": "number of steps taken", "units": "1"}
TIME_LONG_NAME = "simulated time"

# Root attributes (provenance).
ATTR_TITLE = "title"
ATTR_CONVENTIONS = "Conventions"
ATTR_HISTORY = "history"  # CF: one time-stamped line per run, resume and export
ATTR_SOURCE = "source"  # CF: simkit version, solver and backend unless given
ATTR_INSTITUTION = "institution"  # CF: written only when given
ATTR_SOLVER = "simkit_solver"
ATTR_SOLVER_VERSION = "simkit_solver_version"
ATTR_BACKEND = "simkit_backend"
ATTR_DEVICE = "simkit_device"
ATTR_COMPILED = "simkit_compiled"  # what compiled the run's steps (jax.jit, torch.compile), or no
ATTR_DTYPE = "simkit_dtype"
ATTR_SEED = "simkit_seed"
ATTR_DT = "simkit_dt"
ATTR_SCENARIO = "simkit_scenario"
ATTR_SCENARIO_FILE = "simkit_scenario_file"
ATTR_VERSIONS = "simkit_versions"
ATTR_STARTED = "simkit_started_at"
ATTR_FINISHED = "simkit_finished_at"
ATTR_STATUS = "simkit_status"
#: On a run that failed with an error: its type and message, one line.
ATTR_ERROR = "simkit_error"
ATTR_RESUMED = "simkit_resumed_at"
#: Every capture due at a step up to this one is on disk (-1: none yet). Set only after the
#: captures it covers were fsync'ed, so it lags them: a resume starts from a checkpoint no later
#: than it, since a crash in the middle of a flush can keep a later checkpoint while losing
#: another stream's captures before it.
ATTR_COMMITTED = "simkit_committed_step"
ATTR_STREAMS = "simkit_streams"
ATTR_EXPORTED_STREAM = "simkit_stream"  # the stream a flat export holds
ATTR_STREAM_FIELDS = "simkit_fields"
ATTR_STREAM_DIAGNOSTICS = "simkit_diagnostics"
#: On a stream group that captures after a stage: that stage (its captures are mid-step states,
#: never checkpoints).
ATTR_STREAM_STAGE = "simkit_stage"

#: In streams whose captures are checkpoints (end of step, every field): the schedules' own
#: state at each capture, one number per slot; the slots' names are in ATTR_SCHEDULE_SLOTS.
SCHEDULE_STATE = "simkit_schedule_state"
SCHEDULE_SLOT_DIM = "simkit_schedule_slot"
ATTR_SCHEDULE_SLOTS = "simkit_slots"
SCHEDULE_STATE_LONG_NAME = "state of the run's schedules (cooldowns, deadlines) at the capture"

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_INTERRUPTED = "interrupted"  # stopped by Ctrl-C, SIGTERM or SIGHUP; resumable
STATUS_NON_FINITE = "non-finite"  # stopped on a NaN or infinity; the last good state is final
STATUS_FAILED = "failed"  # stopped by an error (ATTR_ERROR says which); resumable once fixed

# Gradients (see ``simkit.io.write_gradients``).
ATTR_GRADIENT_STREAMS = "simkit_gradient_streams"
ATTR_OBJECTIVE = "simkit_objective"
ATTR_CHECKPOINT = "simkit_checkpoint"
#: How many of the run's own checkpoints the backward pass started its segments from (0: it ran
#: the steps forward again itself).
ATTR_REUSED = "simkit_checkpoints_reused"
ATTR_ADJOINT_OF = "simkit_adjoint_of"
#: Root attribute of a run with an objective: ``awaited`` from the file's creation while its
#: forward run goes on (a file stopped then is not a plain run, whatever its scenario says),
#: ``pending`` once its forward run is whole and until its gradients are written (the status
#: says ``running``, or how the gradients stopped; ``simkit resume`` computes them), ``written``
#: with status ``complete`` after.
ATTR_GRADIENTS = "simkit_gradients"
GRADIENTS_AWAITED, GRADIENTS_PENDING, GRADIENTS_WRITTEN = "awaited", "pending", "written"
#: Root variable of the objective's value.
OBJECTIVE = "objective"
#: Prefix of the root variables holding dL/d(parameter) and dL/d(initial field).
GRADIENT_PREFIX = "gradient_"

PROVENANCE_ATTRS = (
    ATTR_SOLVER, ATTR_SOLVER_VERSION, ATTR_BACKEND, ATTR_DEVICE, ATTR_COMPILED, ATTR_DTYPE,
    ATTR_SEED, ATTR_DT, ATTR_VERSIONS, ATTR_STARTED, ATTR_RESUMED, ATTR_FINISHED, ATTR_STATUS,
    ATTR_ERROR, ATTR_SCENARIO_FILE,
)


@dataclass(frozen=True)
class VariableSpec:
    """A variable of the file: name, dimensions (without ``step``), CF units and long name."""

    name: str
    dims: tuple[str, ...]
    units: str
    long_name: str
    dtype: str = "float64"


@dataclass(frozen=True)
class CoordinateSpec:
    """A grid coordinate with its values."""

    name: str
    values: np.ndarray
    units: str
    long_name: str


@dataclass(frozen=True)
class StreamSpec:
    """One output stream: its name and the fields and diagnostics each capture holds, the stage
    it captures after (None: the end of the step), and the names of the schedule-state slots its
    captures hold (only checkpoints hold them)."""

    name: str
    fields: tuple[VariableSpec, ...]
    diagnostics: tuple[VariableSpec, ...]
    stage: str | None = None
    state_slots: tuple[str, ...] = ()

    @property
    def variables(self) -> tuple[VariableSpec, ...]:
        return self.fields + self.diagnostics


@dataclass(frozen=True)
class RunLayout:
    """Everything the file holds, known before the first step."""

    coordinates: tuple[CoordinateSpec, ...]
    fields: tuple[VariableSpec, ...]
    streams: tuple[StreamSpec, ...]
    time_units: str
