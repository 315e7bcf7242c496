"""simkit: staged physics solvers on NumPy, JAX and PyTorch, with scheduled captures of the state
written next to the final result in one NetCDF file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# HDF5 reads this once, when the library loads (netCDF4's first import): with its file locks a
# file open for writing is refused to every reader ("NetCDF: HDF error"), so nobody could look at
# a running run, and a reader holding a file open would make a later writer fail. simkit keeps
# its writers apart with a lock of its own (simkit.io.exclusive) and readers see only
# whole captures (simkit.open). An explicit setting in the environment wins.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

from simkit._version import __version__ as __version__

if TYPE_CHECKING:
    from simkit.api import resume as resume
    from simkit.api import run as run
    from simkit.autodiff import grad as grad
    from simkit.autodiff import misfit as misfit
    from simkit.autodiff import value_and_grad as value_and_grad
    from simkit.driver import Capture as Capture
    from simkit.driver import RunResult as RunResult
    from simkit.live import iterate as iterate
    from simkit.live import open as open
    from simkit.live import stop as stop
    from simkit.recorder import Recorder as Recorder
    from simkit.recorder import record as record
    from simkit.scenario import Scenario as Scenario
    from simkit.schedule import AnyOf as AnyOf
    from simkit.schedule import At as At
    from simkit.schedule import Every as Every
    from simkit.schedule import First as First
    from simkit.schedule import Last as Last
    from simkit.schedule import LogSpaced as LogSpaced
    from simkit.schedule import SimTime as SimTime
    from simkit.schedule import Stream as Stream
    from simkit.schedule import WallTime as WallTime
    from simkit.schedule import When as When
    from simkit.schedule import While as While
    from simkit.schedule import Window as Window

_LAZY = {
    "run": "simkit.api",
    "iterate": "simkit.live",
    "open": "simkit.live",
    "stop": "simkit.live",
    "Capture": "simkit.driver",
    "resume": "simkit.api",
    "record": "simkit.recorder",
    "Recorder": "simkit.recorder",
    "RunResult": "simkit.driver",
    "Scenario": "simkit.scenario",
    "plan_run": "simkit.scenario",
    "parse_schedule": "simkit.schedule",
    "Stream": "simkit.schedule",
    "Every": "simkit.schedule",
    "At": "simkit.schedule",
    "LogSpaced": "simkit.schedule",
    "Window": "simkit.schedule",
    "SimTime": "simkit.schedule",
    "First": "simkit.schedule",
    "Last": "simkit.schedule",
    "WallTime": "simkit.schedule",
    "When": "simkit.schedule",
    "While": "simkit.schedule",
    "AnyOf": "simkit.schedule",
    "AbstractSolver": "simkit.solver",
    "FieldSpec": "simkit.solver",
    "Stage": "simkit.solver",
    "Diagnostic": "simkit.solver",
    "Coordinate": "simkit.solver",
    "SolverModel": "simkit.solver",
    "ScenarioError": "simkit.errors",
    "SimkitError": "simkit.errors",
    "grad": "simkit.autodiff",
    "value_and_grad": "simkit.autodiff",
    "misfit": "simkit.autodiff",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import simkit` (and `simkit --help`) stays light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# ``open`` stays an attribute (``simkit.open(path)``) but out of ``from simkit import *``, which
# would shadow the builtin.
__all__ = sorted(set(_LAZY) - {"open"})
