"""The solver protocol: what a staged, backend-neutral solver declares."""

from simkit.solver._base import (
    KERNELS_ENV,
    SEED_KEY,
    STEP_KEY,
    TIME_KEY,
    AbstractSolver,
    Carry,
    Coordinate,
    Diagnostic,
    FieldSpec,
    SolverModel,
    Stage,
    make_step,
    whole_step_kernels,
)
from simkit.solver._constants import Constants
from simkit.solver._loops import repeat
from simkit.solver._random import counter_uniform, hash32
from simkit.solver._registry import (
    ALLOW_IMPORT_ENV,
    ENTRY_POINT_GROUP,
    available_solvers,
    import_allowed,
    load_solver,
)
from simkit.solver._scratch import ScratchPool
from simkit.solver._simple import SimpleSolver
from simkit.solver._traced import with_params

__all__ = [
    "KERNELS_ENV",
    "AbstractSolver",
    "Carry",
    "Constants",
    "Coordinate",
    "Diagnostic",
    "FieldSpec",
    "ScratchPool",
    "SimpleSolver",
    "SolverModel",
    "Stage",
    "make_step",
    "whole_step_kernels",
    "repeat",
    "counter_uniform",
    "hash32",
    "SEED_KEY",
    "STEP_KEY",
    "TIME_KEY",
    "ALLOW_IMPORT_ENV",
    "ENTRY_POINT_GROUP",
    "import_allowed",
    "available_solvers",
    "load_solver",
    "with_params",
]
