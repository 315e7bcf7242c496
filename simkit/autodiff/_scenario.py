"""The scenario form of a differentiable run: an ``objective:`` block (and ``gradients:``
streams) that ``simkit run`` turns into a run file with the gradients added.

```yaml
objective:
  misfit: {path: runs/truth.nc, stream: snapshots, fields: [u]}
  wrt: [diffusivity, u]
  checkpoint: sqrt          # or all, or {binomial: N}
  backend: jax              # optional: the scenario's when it differentiates
gradients:
  adjoint: {every: 100, fields: [u]}
```
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simkit.autodiff._api import GradResult, prepare, value_and_grad
from simkit.autodiff._objective import misfit
from simkit.errors import ScenarioError
from simkit.scenario import locate, plan_run, read_scenario_file, validate_model


class MisfitSpec(BaseModel):
    """``objective.misfit``: the observations compared with this run's captures."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    path: str = Field(description="a simkit file holding the observations")
    stream: str = Field(description="its stream, compared with this run's stream of that name")
    fields: list[str] | None = Field(None, description="the variables compared (default: all)")
    steps: list[int] | None = Field(None, description="only these observed steps")


class ObjectiveSpec(BaseModel):
    """The ``objective`` block of a scenario."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    misfit: MisfitSpec
    wrt: list[str] = Field(min_length=1, description="parameters and initial fields")
    checkpoint: Any = Field("sqrt", description="sqrt, all or {binomial: N} (N states stored)")
    backend: Literal["jax", "torch"] | None = None


def run_scenario(scenario: Any, *, sets: Sequence[str] = (), overwrite: bool = False,
                 allow_import: bool | None = None, progress: Any = None,
                 **overrides: Any) -> GradResult:
    """Run a scenario with an ``objective`` block: its file, with the objective, gradients and
    ``gradients`` streams added (what ``simkit run`` does for such a scenario).

    Raises:
        ScenarioError: for a scenario without an objective, and any bad input of the block,
            naming the scenario file, line and key.
    """
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=overwrite,
                    allow_import=allow_import)
    try:
        spec, objective = _objective(plan)
        # The scenario's overrides go in as settings: `backend` and `output` are also names
        # of value_and_grad's own (the gradient's backend, the file it writes).
        settings = [*sets, *(f"{key}={json.dumps(value)}" for key, value in overrides.items()
                             if key != "output")]
        with _said_of_the_block():
            return value_and_grad(scenario, objective, spec.wrt, checkpoint=spec.checkpoint,
                                  backend=spec.backend, gradients=plan.scenario.gradients,
                                  output=plan.output, overwrite=overwrite, sets=settings,
                                  allow_import=allow_import, progress=progress)
    except ScenarioError as error:
        raise _located(error, scenario, sets) from None


def resume_gradients(plan: Any, point: Any, progress: Any = None) -> GradResult:
    """Finish the run of a scenario with an ``objective`` that stopped (``simkit.resume`` passes
    it as ``gradients``): its forward run from ``point`` (a ``simkit.driver.ResumePoint``; None
    when the forward run is whole), then the objective and gradients added to its file, which
    only then says ``complete``."""
    spec, objective = _objective(plan)
    with _said_of_the_block():
        # The plan was made as the user allowed (its solver imported): planned again alike.
        return value_and_grad(plan.scenario, objective, spec.wrt, checkpoint=spec.checkpoint,
                              backend=spec.backend, gradients=plan.scenario.gradients,
                              output=plan.output, overwrite=True, allow_import=True,
                              progress=progress,
                              resume="gradients" if point is None else point)


def check_scenario(scenario: Any, *, sets: Sequence[str] = (), allow_import: bool | None = None,
                   **overrides: Any) -> str:
    """Check a scenario with an ``objective`` block as ``run_scenario`` would before computing
    anything (the block, the observations it names against the run's streams, ``wrt``, the
    checkpointing and the ``gradients`` streams); what ``simkit validate`` runs.

    Returns:
        One line saying what would be differentiated.

    Raises:
        ScenarioError: as ``run_scenario``, naming the scenario file, line and key.
    """
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=True,
                    allow_import=allow_import)
    try:
        spec, objective = _objective(plan)
        with _said_of_the_block():
            run, _, _, adjoint = prepare(plan, objective, spec.wrt, spec.checkpoint,
                                         spec.backend, plan.scenario.gradients)
    except ScenarioError as error:
        raise _located(error, scenario, sets) from None
    streams = ", ".join(adjoint) or "none"
    return (f"objective {objective.name} with respect to {', '.join(spec.wrt)} on "
            f"{run.library}, checkpoint {run.checkpointing}, adjoint streams: "
            f"{streams}")


def _objective(plan: Any) -> tuple[ObjectiveSpec, Any]:
    """The scenario's objective block and the misfit it names (its observations read)."""
    if plan.scenario.objective is None:
        raise ScenarioError("expected an objective block to differentiate the run, given "
                            "none", key="objective")
    spec: ObjectiveSpec = validate_model(ObjectiveSpec, plan.scenario.objective, ("objective",))
    try:
        objective = misfit(spec.misfit.path, spec.misfit.stream, spec.misfit.fields,
                           spec.misfit.steps)
    except ScenarioError as error:
        raise ScenarioError(error.message, key=f"objective.{error.key}") from None
    return spec, objective


@contextlib.contextmanager
def _said_of_the_block() -> Iterator[None]:
    """Errors about ``wrt``, ``checkpoint`` and the misfit named as keys of the objective
    block."""
    try:
        yield
    except ScenarioError as error:
        if error.source or not (error.key in ("wrt", "checkpoint")
                                or str(error.key).startswith("misfit.")):
            raise
        raise ScenarioError(error.message, key=f"objective.{error.key}") from None


def _located(error: ScenarioError, scenario: Any, sets: Sequence[str]) -> ScenarioError:
    """``error`` said of the scenario file and the line of its key (or the ``--set`` that gave
    it), when it came from one."""
    if error.source or not isinstance(scenario, (str, os.PathLike)):
        return error
    _, _, lines = read_scenario_file(scenario)
    return locate(error, str(scenario), lines, sets)
