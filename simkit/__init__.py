"""simkit: staged physics solvers on NumPy, JAX and PyTorch, with scheduled captures of the state
written next to the final result in one NetCDF file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simkit._version import __version__ as __version__

if TYPE_CHECKING:
    from simkit.api import resume as resume
    from simkit.api import run as run
    from simkit.driver import RunResult as RunResult
    from simkit.scenario import Scenario as Scenario

_LAZY = {
    "run": "simkit.api",
    "resume": "simkit.api",
    "RunResult": "simkit.driver",
    "Scenario": "simkit.scenario",
    "plan_run": "simkit.scenario",
    "parse_schedule": "simkit.schedule",
    "AbstractSolver": "simkit.solver",
    "FieldSpec": "simkit.solver",
    "Stage": "simkit.solver",
    "Diagnostic": "simkit.solver",
    "Coordinate": "simkit.solver",
    "SolverModel": "simkit.solver",
    "ScenarioError": "simkit.errors",
    "SimkitError": "simkit.errors",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import simkit` (and `simkit --help`) stays light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simkit' has no attribute {name!r}")


__all__ = sorted(_LAZY)
