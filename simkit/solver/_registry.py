"""Finding solvers by name through the ``simkit.solvers`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from simkit.errors import ScenarioError, did_you_mean
from simkit.solver._base import AbstractSolver

ENTRY_POINT_GROUP = "simkit.solvers"


def available_solvers() -> list[str]:
    """Names of the installed solvers, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_solver(name: str) -> type[AbstractSolver]:
    """The solver class registered under ``name``.

    Raises:
        ScenarioError: when no solver has that name, listing the installed ones.
    """
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
