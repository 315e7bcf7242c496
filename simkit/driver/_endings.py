"""How a run's file is closed, the same for a run, each ensemble member and a recording:
complete with its final state, non-finite with its last good state, or interrupted by a stop
signal or request (resumable)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from simkit import _stop
from simkit.driver._files import failed, now
from simkit.io import BackgroundWriter, schema


def complete(writer: BackgroundWriter, step: int, time: float,
             state: Mapping[str, np.ndarray] | None,
             closing: Mapping[str, object] | None = None) -> Path:
    """Write the final ``state`` (None: none to write) and close the file: ``complete``, or
    as ``closing`` says (its attributes added)."""
    if state is not None:
        writer.final(step, time, state)
    return writer.close({schema.ATTR_FINISHED: now(), **(closing or {})})


def non_finite(writer: BackgroundWriter, step: int, time: float,
               state: Mapping[str, np.ndarray], error: BaseException) -> Path:
    """Keep the last good ``state`` as the final state and close the file ``non-finite``."""
    writer.final(step, time, state)
    return writer.abort(failed(error, schema.STATUS_NON_FINITE))


def interrupted(writers: Iterable[BackgroundWriter]) -> list[Path]:
    """Close the files of a run stopped by a signal or request as ``interrupted`` (a second
    signal cannot break this off), the stop taken as dealt with; returns the files kept."""
    with _stop.deferred():
        kept = [writer.abort({schema.ATTR_FINISHED: now(),
                              schema.ATTR_STATUS: schema.STATUS_INTERRUPTED})
                for writer in writers]
    _stop.take()
    return kept
