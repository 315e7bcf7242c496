"""Finding solvers by name through the ``simkit.solvers`` entry-point group, or, when the user
allows it, by importing ``module:Class``."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from pydantic import BaseModel

from simkit.errors import ScenarioError, did_you_mean
from simkit.solver._base import AbstractSolver

ENTRY_POINT_GROUP = "simkit.solvers"
#: Set to 1 to let scenarios name solvers as ``module:Class`` (imports and runs that module).
ALLOW_IMPORT_ENV = "SIMKIT_ALLOW_IMPORT"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*$")
_CLASS_ATTRS = ("name", "version", "description", "time_units", "Params", "Initial")


#: The solvers' entry points as last read: the ``sys.path`` they were read from, the
#: modification times of its directories that held packages then, and the entry points.
_REGISTERED: list[tuple[tuple[str, ...], dict[str, int | None], tuple[EntryPoint, ...]]] = []


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


def _holds_packages(path: str) -> bool:
    try:
        return any(name.endswith((".dist-info", ".egg-info")) for name in os.listdir(path or "."))
    except OSError:
        return False


def registered() -> tuple[EntryPoint, ...]:
    """The entry points of ``ENTRY_POINT_GROUP``, read again only when ``sys.path`` or one of its
    directories that held packages changed (reading every installed package's metadata takes
    tens of milliseconds, each run): installing or removing a package there changes the
    directory's modification time. A directory that held no package (the folder a script runs
    in, where its runs write their files) is not watched."""
    path = tuple(sys.path)
    if _REGISTERED:
        read_from, times, found = _REGISTERED[0]
        if read_from == path and all(_mtime(p) == t for p, t in times.items()):
            return found
    times = {p: _mtime(p) for p in path if _holds_packages(p)}
    found = tuple(entry_points(group=ENTRY_POINT_GROUP))
    _REGISTERED[:] = [(path, times, found)]
    return found


def available_solvers() -> list[str]:
    """Names of the installed solvers, sorted."""
    return sorted({ep.name for ep in registered()})


def import_allowed(allow_import: bool | None = None) -> bool:
    """Whether ``module:Class`` solvers may be imported: ``allow_import`` when given, else the
    ``SIMKIT_ALLOW_IMPORT`` environment variable (1, true or yes)."""
    if allow_import is not None:
        return allow_import
    return os.environ.get(ALLOW_IMPORT_ENV, "").strip().lower() in ("1", "true", "yes")


def _import_path(path: str, search: Sequence[str | os.PathLike], key: str = "solver",
                 what: str = "'module:Class'") -> object:
    module_name, _, attr = path.partition(":")
    # Modules beside the scenario file come first, without the user setting PYTHONPATH; the
    # search path is restored afterwards so nothing else resolves differently.
    added = [str(Path(d).resolve()) for d in search]
    added = [d for d in dict.fromkeys(added) if d not in sys.path]
    sys.path[:0] = added
    try:
        importlib.invalidate_caches()
        target: object = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        return target
    except Exception as error:  # noqa: BLE001 - user code may raise anything while importing
        text = " ".join(str(error).split())
        raise ScenarioError(f"expected an importable {what}, given {path!r} "
                            f"({type(error).__name__}: {text})", key=key) from None
    finally:
        for directory in added:
            if directory in sys.path:
                sys.path.remove(directory)


def _check_class(cls: object, name: str) -> type[AbstractSolver]:
    if not (isinstance(cls, type) and issubclass(cls, AbstractSolver)):
        raise ScenarioError(f"expected a subclass of simkit.solver.AbstractSolver, given "
                            f"{name!r}", key="solver")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ScenarioError(f"expected a concrete solver class, given {name!r}, which is "
                            f"abstract (no {missing})", key="solver")
    missing = [a for a in _CLASS_ATTRS if not hasattr(cls, a)]
    if missing:
        raise ScenarioError(f"expected a solver class that sets {', '.join(_CLASS_ATTRS)}, given "
                            f"{name!r} without {', '.join(missing)}", key="solver")
    for attr in ("Params", "Initial"):
        model = getattr(cls, attr)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ScenarioError(f"expected {attr} of {name!r} to be a SolverModel class, given "
                                f"{model!r}", key="solver")
    return cls


def load_solver(name: str, *, allow_import: bool | None = None,
                search: Sequence[str | os.PathLike] = ()) -> type[AbstractSolver]:
    """The solver class registered under ``name``, or named by ``module:Class``.

    Registered names only load installed code. ``module:Class`` imports (and so runs) that module,
    which a scenario from elsewhere must not do unasked: it needs ``allow_import`` (or the
    ``SIMKIT_ALLOW_IMPORT`` environment variable).

    Args:
        name: a registered solver name, or ``module:Class``.
        allow_import: allow ``module:Class``; None reads ``SIMKIT_ALLOW_IMPORT``.
        search: directories searched first for the module (e.g. the scenario file's).

    Raises:
        ScenarioError: when no solver has that name (listing the installed ones), when an import
            is not allowed, or when what it names is not a concrete solver class.
    """
    if ":" in name:
        if not _IMPORT_PATH.match(name):
            raise ScenarioError(f"expected a registered solver name or 'module:Class' (dotted "
                                f"Python names), given {name!r}", key="solver")
        if not import_allowed(allow_import):
            raise ScenarioError(
                f"expected a registered solver name ({', '.join(available_solvers())}), given "
                f"{name!r}, which imports and runs module {name.partition(':')[0]!r}; allow that "
                f"with --allow-import (allow_import=True in Python, or {ALLOW_IMPORT_ENV}=1)",
                key="solver")
        return _check_class(_import_path(name, search), name)
    found = [ep for ep in registered() if ep.name == name]
    if not found:
        names = available_solvers()
        hint = did_you_mean(name, names)
        raise ScenarioError(
            f"unknown solver{hint}; expected one of {', '.join(names)}, given {name!r}",
            key="solver")
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, AbstractSolver)):
        raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not an AbstractSolver")
    return cls


def load_function(path: object, *, key: str, allow_import: bool | None = None,
                  search: Sequence[str | os.PathLike] = ()) -> object:
    """The function named by ``module:function`` (a diagnostic or probe a scenario adds).

    Importing runs the module, so it needs the same opt-in as a ``module:Class`` solver; the
    module is looked up first in ``search`` (the scenario file's directory).

    Raises:
        ScenarioError: naming ``key``: a malformed path, an import not allowed or failing, or
            something that is not callable.
    """
    if not isinstance(path, str) or not _IMPORT_PATH.match(path):
        raise ScenarioError(f"expected 'module:function' (dotted Python names), given {path!r}",
                            key=key)
    if not import_allowed(allow_import):
        raise ScenarioError(f"expected no import unless allowed, given {path!r}, which imports "
                            f"and runs module {path.partition(':')[0]!r}; allow that with "
                            f"--allow-import (allow_import=True in Python, or "
                            f"{ALLOW_IMPORT_ENV}=1)", key=key)
    found = _import_path(path, search, key, "'module:function'")
    if not callable(found) or isinstance(found, type):
        raise ScenarioError(f"expected a function of the state, given {path!r}, a "
                            f"{type(found).__name__}", key=key)
    return found
