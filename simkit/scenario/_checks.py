"""Checks of a scenario against its solver and the machine: output path, memory, initial state,
device mesh."""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from simkit.errors import ScenarioError
from simkit.io import check_replaceable, is_zarr
from simkit.scenario._model import Scenario
from simkit.solver import AbstractSolver, SolverModel

#: Bytes of one path component: the temporary name beside the output adds up to about 90 bytes
#: (host, process, sequence) and a file name may have 255.
MAX_NAME_BYTES = 160
MAX_PATH_BYTES = 4000


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _check_memory(solver: AbstractSolver, dtype: str) -> None:
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    itemsize = 4 if dtype == "float32" else 8
    state = sum(math.prod(sizes[d] for d in f.dims) for f in solver.fields()) * itemsize
    # A step holds a few copies of the state (stages, the loop's carry, a host capture).
    needed, available = 4 * state, _available_memory()
    if needed > available:
        raise ScenarioError(f"expected a grid that fits in memory ({available / 2**30:.1f} GiB "
                            f"available), given one needing about {needed / 2**30:.1f} GiB",
                            key="params")


def _check_output_text(text: str) -> None:
    """Refuse paths that the C libraries would read differently from Python (a NUL ends a C
    string, so ``victim\\0.nc`` would write ``victim``), or that cannot name a file."""
    if not text.strip():
        raise ScenarioError(f"expected a file path, given {text!r}", key="output")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ScenarioError(f"expected a path without control characters (NUL, newline, ...), "
                            f"given {text!r}", key="output")
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        raise ScenarioError(f"expected a path of characters the file system can encode, given "
                            f"{text!r}", key="output") from None
    name = os.path.basename(text)
    if text.endswith(("/", os.sep)) or name in ("", ".", ".."):
        raise ScenarioError(f"expected a file path, given the directory {text!r}", key="output")
    longest = max(len(os.fsencode(part)) for part in Path(text).parts)
    if len(encoded) > MAX_PATH_BYTES or longest > MAX_NAME_BYTES:
        raise ScenarioError(f"expected a path of at most {MAX_PATH_BYTES} bytes with names of at "
                            f"most {MAX_NAME_BYTES}, given one of {len(encoded)} bytes with a name "
                            f"of {longest}", key="output")


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_not_input(path: str | os.PathLike[str],
                    inputs: Mapping[str, str | os.PathLike[str]], *,
                    given: str | os.PathLike[str] | None = None) -> None:
    """Refuse an output ``path`` that is one of a run's ``inputs`` (what it is -> its path):
    writing the output would replace it. A path that does not exist is none of them.

    Args:
        given: the output as it was given, for the message (default: ``path``).

    Raises:
        ScenarioError: at key ``output``, naming what the path is.
    """
    for what, other in inputs.items():
        with contextlib.suppress(OSError):
            if os.path.samefile(path, other):
                shown = str(given if given is not None else path)
                raise ScenarioError(f"expected an output other than the run's inputs, given "
                                    f"{shown!r}, which is the {what}", key="output")


def _check_output(path: Path, overwrite: bool, inputs: Mapping[str, str]) -> None:
    """Refuse an output that exists and is not a regular file, is one of the run's own inputs
    (``inputs``: what it is -> path), exists without ``overwrite``, or is not a file simkit
    wrote (only those are replaced); probe that it is writable."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
        if os.path.lexists(path):
            raise ScenarioError(f"expected a new file or a regular one, given {str(path)!r}, a "
                                "symbolic link to nothing", key="output") from None
    except OSError as error:
        raise ScenarioError(f"expected a writable location, given {str(path)!r} "
                            f"({error.strerror})", key="output") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode) and not is_zarr(path):
            raise ScenarioError(f"expected a file path, given the directory {str(path)!r}",
                                key="output")
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), "not a regular file")
            raise ScenarioError(f"expected a regular file or a new path, given {str(path)!r}, "
                                f"which is {kind}", key="output")
        check_not_input(path, inputs)
        if not overwrite:
            raise ScenarioError(f"expected a new file (or --overwrite), given {str(path)!r} "
                                "which exists", key="output")
        check_replaceable(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        # A real probe: permission bits say nothing for root or read-only file systems.
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise ScenarioError(f"expected a writable location, given {str(path)!r} (cannot write in "
                            f"{str(parent)!r})", key="output") from None


def _check_initial(solver: AbstractSolver, initial: SolverModel, seed: int) -> None:
    """Build the initial state once, so a bad initial condition (a ``.npy`` of the wrong shape or
    type, say) is reported as bad input by ``validate`` and before any file is written."""
    try:
        with warnings.catch_warnings():
            # Casting complex values to float drops their imaginary part: an error here.
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            state = solver.initial_state(initial, np.random.default_rng(seed))
    except ScenarioError:
        raise
    except (ValueError, TypeError, OSError, EOFError, np.exceptions.ComplexWarning) as error:
        text = " ".join(str(error).split())
        raise ScenarioError(f"expected an initial condition {solver.name} can build, given one "
                            f"that fails: {type(error).__name__}: {text}", key="initial") from None
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    for spec in solver.fields():
        value = state.get(spec.name) if isinstance(state, Mapping) else None
        shape = tuple(sizes[d] for d in spec.dims)
        if not isinstance(value, np.ndarray) or value.shape != shape \
                or value.dtype.kind not in "fiu":
            given = (f"{value.dtype} array of shape {list(value.shape)}"
                     if isinstance(value, np.ndarray) else type(value).__name__)
            raise ScenarioError(f"expected initial field {spec.name!r} as a real array of shape "
                                f"{list(shape)}, given a {given}", key="initial")


def _mesh(scenario: Scenario, solver: AbstractSolver) -> tuple[tuple[str, int], ...]:
    """The device mesh of ``devices`` / ``mesh``, checked against the backend and the solver's
    dimensions (which it may split, and whether each size divides evenly)."""
    if scenario.devices is None and scenario.mesh is None:
        return ()
    key = "mesh" if scenario.mesh is not None else "devices"
    if scenario.backend != "jax":
        raise ScenarioError(f"expected backend jax for a run split over devices, given "
                            f"{scenario.backend!r}", key=key)
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    dims = list(dict.fromkeys(d for f in solver.fields() for d in f.dims))
    allowed = [d for d in (solver.split_dims if solver.split_dims is not None else dims)
               if d in dims]
    if scenario.mesh is None:
        if not allowed:
            raise ScenarioError(f"solver {solver.name} cannot be split over devices (it names "
                                f"no splittable dimension), given devices: {scenario.devices}",
                                key="devices")
        assert scenario.devices is not None  # checked above: one of them is given
        mesh = {allowed[0]: scenario.devices}
    else:
        mesh = dict(scenario.mesh)
    for dim, count in mesh.items():
        if dim not in allowed:
            raise ScenarioError(f"solver {solver.name} can be split along "
                                f"{', '.join(allowed) or 'no dimension'}, given {dim!r}",
                                key=f"mesh.{dim}")
        if count < 1 or sizes[dim] % count:
            raise ScenarioError(f"expected a device count dividing the {sizes[dim]} points of "
                                f"{dim!r}, given {count}", key=f"mesh.{dim}")
    total = math.prod(mesh.values())
    if scenario.devices is not None and scenario.mesh is not None and total != scenario.devices:
        raise ScenarioError(f"expected devices equal to the mesh's {total} devices, given "
                            f"{scenario.devices}", key="devices")
    return tuple((dim, count) for dim, count in mesh.items() if count > 1)
