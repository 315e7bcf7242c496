"""The driver, the only glue: solver + backend + schedules + output file.

``execute`` (``_execute``) runs a plan into its file: a ``Run`` (``_run``, holding its schedules'
state) advanced by the loop (``_loop``) in compiled blocks (``_blocks``: planned by ``_plan``,
committed by ``_commit``), captures between blocks on the host path (``_captures``), a
non-finite state located by replay (``_replay``); ``_ensemble`` runs many plans as one through
the same block loop along a member axis. ``_files`` builds what a run's file says about the run
(provenance, layout), for recordings too.
"""

from simkit.driver._captures import Capture
from simkit.driver._commit import commit_captures
from simkit.driver._endings import complete
from simkit.driver._ensemble import check_vectorizable, execute_ensemble
from simkit.driver._execute import CaptureFn, check_processes, execute
from simkit.driver._files import (
    RUN_PACKAGES,
    LayoutBuilder,
    Provenance,
    RunResult,
    failed,
    now,
    provenance,
    run_layout,
    versions,
)
from simkit.driver._loop import ProgressFn
from simkit.driver._run import (
    ResumePoint,
    state_slots,
)

__all__ = ["RUN_PACKAGES", "Capture", "CaptureFn", "LayoutBuilder", "ProgressFn", "Provenance",
           "ResumePoint", "RunResult", "check_processes", "check_vectorizable", "commit_captures", "complete", "execute", "execute_ensemble",
           "failed", "now", "provenance", "run_layout", "state_slots", "versions"]
