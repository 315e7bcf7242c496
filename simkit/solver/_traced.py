"""A solver rebuilt around parameter values that are arrays (traced by JAX, tracked by torch
autograd), which the validated parameter models would refuse.

Stages close over their parameters when built, so a solver whose parameters are data (the
members of a vectorized ensemble, the inputs of a differentiable run) is a new instance made
from unvalidated parameters: the values were validated once, as numbers, when the run was
planned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simkit.solver._base import AbstractSolver


def with_params(solver: AbstractSolver, values: Mapping[str, Any]) -> AbstractSolver:
    """A solver of ``solver``'s class with its parameters, ``values`` replacing some of them.

    ``values`` may hold arrays (JAX tracers, torch tensors that require grad): the parameter
    model is built without validation (``model_construct``), so only names are checked.

    Raises:
        ValueError: naming a key of ``values`` that is not a parameter of the solver.
    """
    cls = type(solver)
    names = list(cls.Params.model_fields)
    unknown = [name for name in values if name not in names]
    if unknown:
        raise ValueError(f"params: expected names among {', '.join(names)}, given "
                         f"{unknown[0]!r}")
    params = cls.Params.model_construct(**{**solver.params.model_dump(), **values})
    return cls(params)
