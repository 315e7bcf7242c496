"""Stop signals (SIGTERM, SIGHUP, SIGINT) received by the ``simkit`` command, as a flag.

A signal raised as an exception in the middle of library code can be swallowed: Python prints
"Exception ignored in ..." for an exception raised inside a callback (JAX's garbage-collector
callback, a weakref finalizer) and goes on. While a run is under way (``deferred``) the command's
handler therefore only notes the signal here, and the run loop stops at its next block boundary,
writing its file as interrupted. Elsewhere the handler raises ``KeyboardInterrupt`` as before.

Pure Python, imported by the command line before anything heavy.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_received: list[str] = []  # the names of the stop signals received, first first
_deferring = 0  # how many regions of this process take stop signals as a flag


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A region in which a stop signal only sets the flag (the run loop checks it)."""
    global _deferring
    with _lock:
        _deferring += 1
    try:
        yield
    finally:
        with _lock:
            _deferring -= 1


def note(name: str) -> bool:
    """Note a stop signal; returns whether it is to be taken as a flag (a run is under way)
    rather than raised."""
    _received.append(name)  # list.append is atomic: safe in a signal handler
    return _deferring > 0


def received() -> str | None:
    """The first stop signal noted and not yet taken, if any."""
    return _received[0] if _received else None


def check() -> None:
    """Stop here if a stop signal was noted (a place where raising cannot be swallowed).

    Raises:
        KeyboardInterrupt: naming the signal.
    """
    name = received()
    if name:
        raise KeyboardInterrupt(name)


def take() -> str | None:
    """The first stop signal noted, forgetting them all (a run stopped for it)."""
    name = received()
    _received.clear()
    return name


def clear() -> None:
    """Forget every stop signal noted (a new command starts)."""
    _received.clear()
