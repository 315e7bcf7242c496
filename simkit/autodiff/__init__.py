"""Differentiable runs (DESIGN D10): a run as a function of its parameters and initial fields that
JAX and torch autograd differentiate, gradients of objectives of it at O(sqrt n) memory or a
binomial schedule's N states, and adjoints dL/du_k written as streams of the run file."""

from simkit.autodiff._api import GradResult, grad, run_function, value_and_grad
from simkit.autodiff._checkpoint import Checkpointing
from simkit.autodiff._function import GRAD_BACKENDS, DifferentiableRun
from simkit.autodiff._objective import Misfit, misfit
from simkit.autodiff._scenario import (
    ObjectiveSpec,
    check_scenario,
    resume_gradients,
    run_scenario,
)

__all__ = [
    "GRAD_BACKENDS",
    "Checkpointing",
    "DifferentiableRun",
    "GradResult",
    "Misfit",
    "ObjectiveSpec",
    "check_scenario",
    "grad",
    "misfit",
    "resume_gradients",
    "run_function",
    "run_scenario",
    "value_and_grad",
]
