"""The project's own error types and the exit code each maps to on the command line.

Every error a user can cause carries one line that names where, what was expected and what was given.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_DISK_FULL = 4


class SimkitError(Exception):
    """Base of every error simkit raises on purpose."""

    exit_code = EXIT_FAILURE


class ScenarioError(SimkitError, ValueError):
    """Bad input: a scenario, an override, an output path or a missing backend.

    Args:
        message: what was expected and what was given.
        source: the file the input came from, if any.
        key: the dotted key path, e.g. ``params.diffusivity``.
        line: 1-based line in ``source`` where the key stands, if known.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.key = key
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.source:
            where = self.source + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.key}: " if self.key else ""
        # One line, whatever a hostile key or value holds: control characters are escaped.
        return "".join(c if c.isprintable() else repr(c)[1:-1]
                       for c in f"{where}{key}{self.message}")

    def located(self, source: str, line: int | None = None) -> ScenarioError:
        """The same error, said of a file (and line)."""
        return ScenarioError(self.message, source=source, key=self.key, line=line or self.line)


class NonFiniteError(SimkitError, FloatingPointError):
    """The state turned NaN or infinite."""

    exit_code = EXIT_NON_FINITE


class DiskFullError(SimkitError, OSError):
    """The output disk ran out of space."""

    exit_code = EXIT_DISK_FULL


class RunComplete(ScenarioError):
    """``resume`` of a run that already finished: there is nothing left to run."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C, SIGTERM or SIGHUP after a clean stop (queued captures written,
    the file closed and marked interrupted).

    Args:
        reason: the signal's name, e.g. ``SIGTERM``.
        path: the file holding the run so far (``simkit resume`` continues it), or None when
            nothing was written.
    """

    def __init__(self, reason: str, path: Path | None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(reason)


def did_you_mean(given: object, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' when ``given`` is close to one of ``choices``, else ''."""
    match = difflib.get_close_matches(str(given), list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""
