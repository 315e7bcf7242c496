"""Finding solvers by name through the ``simkit.solvers`` entry-point group."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from simkit.errors import ScenarioError, did_you_mean
from simkit.solver._base import AbstractSolver

ENTRY_POINT_GROUP = "simkit.solvers"


def available_solvers() -> list[str]:
    """Names of the installed solvers, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _import_path(path: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as error:
        raise ScenarioError(f"expected an importable 'module:Class', given {path!r} ({error})",
                            key="solver") from None


def load_solver(name: str) -> type[AbstractSolver]:
    """The solver class registered under ``name``, or named by ``module:Class``.

    Raises:
        ScenarioError: when no solver has that name, listing the installed ones.
    """
    if ":" in name:
        cls = _import_path(name)
        if not (isinstance(cls, type) and issubclass(cls, AbstractSolver)):
            raise ScenarioError(f"expected a subclass of simkit.solver.AbstractSolver, given "
                                f"{name!r}", key="solver")
        return cls
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        names = available_solvers()
        hint = did_you_mean(name, names)
        raise ScenarioError(
            f"unknown solver{hint}; expected one of {', '.join(names)}, given {name!r}",
            key="solver")
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, AbstractSolver)):
        raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not an AbstractSolver")
    return cls
