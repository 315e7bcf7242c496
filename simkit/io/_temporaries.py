"""Names of the files a run writes beside its output before it is in place, and the removal of
those left behind by processes that died (a SIGKILL during file creation leaves one; a killed
``simkit tensorboard`` leaves a directory of event files)."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
from pathlib import Path

logger = logging.getLogger(__name__)

_SUFFIXES = (".recover.tmp", ".tmp")
_sequence = itertools.count()


def _host() -> str:
    # Another machine's process ids say nothing here (shared file systems): the host is part of
    # the name so that only this machine's dead processes are cleaned up.
    return socket.gethostname().replace("/", "_") or "localhost"


def temporary_path(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this host, process and call."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{next(_sequence)}.tmp")


def temporaries(path: Path) -> list[Path]:
    """The temporary run files beside ``path`` (of any host and process), newest first."""
    prefix = f".{path.name}."
    try:
        found = [e for e in path.parent.iterdir() if e.name.endswith(".tmp")
                 and not e.name.endswith(".recover.tmp") and _owner(e.name, prefix) is not None]
    except OSError:
        return []
    return sorted(found, key=lambda e: e.stat().st_mtime if e.exists() else 0.0, reverse=True)


def partial_path(path: Path) -> Path:
    """Where an unfinished run that was meant to replace ``path`` is kept (``X.partial.nc``);
    a process-specific name when that is taken already."""
    candidate = path.with_name(f"{path.stem}.partial{path.suffix}")
    if candidate.exists():
        candidate = path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")
    return candidate


def _owner(name: str, prefix: str) -> tuple[str, int] | None:
    """(host, pid) of a temporary name of ours, or None when the name is not one."""
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
    if suffix is None or not name.startswith(prefix):
        return None
    parts = name[len(prefix):-len(suffix)].rsplit(".", 2)
    if len(parts) == 1 and parts[0].isdigit():  # older form: .X.nc.PID.tmp, written here
        return _host(), int(parts[0])
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1])
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files beside ``path`` whose process (on this host) is gone.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    prefix = f".{path.name}."
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        owner = _owner(entry.name, prefix)
        if owner is None or owner[0] != host or _alive(owner[1]):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():  # a directory of event files
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
        logger.info("removed %s, left by process %d that no longer runs", entry, owner[1])
    return removed
