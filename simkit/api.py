"""The Python entry point: one call runs a scenario and returns the file and the final state."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from simkit.driver import ProgressFn, RunResult, execute
from simkit.scenario import Scenario, plan_run


def run(
    scenario: str | os.PathLike | Mapping[str, Any] | Scenario,
    *,
    sets: Sequence[str] = (),
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> RunResult:
    """Run a scenario and write its NetCDF file.

    Args:
        scenario: a scenario file, a mapping of scenario data, or a ``Scenario``.
        sets: ``KEY.PATH=VALUE`` overrides, as ``--set`` on the command line.
        overwrite: replace an existing output file (only once the run has finished).
        progress: called between segments with ``(step, time, captures_written, steps)``.
        **overrides: scenario keys to replace, merged deeply, e.g. ``backend="jax"`` or
            ``params={"diffusivity": 0.5}``.

    Returns:
        ``RunResult`` with the output ``path``, the final ``state`` (host arrays), ``step`` and
        ``time``.

    Raises:
        simkit.errors.ScenarioError: bad input; nothing was written.
    """
    plan = plan_run(scenario, sets=sets, overrides=overrides, overwrite=overwrite)
    return execute(plan, progress=progress)
