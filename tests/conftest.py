"""Shared fixtures: a backend fixture that skips a missing backend locally but fails in CI."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=int(os.environ.get("SIMKIT_EXAMPLES", "200")),
                          deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

BACKENDS = ("numpy", "jax", "torch")
REQUIRE_BACKENDS = os.environ.get("SIMKIT_REQUIRE_BACKENDS") == "1"
# Strict dtype promotion in tests: JAX raises on implicit promotions inside solver code.
os.environ.setdefault("JAX_NUMPY_DTYPE_PROMOTION", "strict")
# The tests' own solvers are named `fixture_solvers:Name`, an import a user must allow; the
# refusal itself is tested with this variable removed (tests/test_input_errors.py).
os.environ.setdefault("SIMKIT_ALLOW_IMPORT", "1")
# torch inductor writes its precompiled headers under the temporary folder whatever
# TORCHINDUCTOR_CACHE_DIR says (below): compiled runs of the tests go without them.
os.environ.setdefault("TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS", "0")


# Libraries' own caches that they keep on purpose under the temporary folder, as they name them
# in the environment; each session gives them a folder of its own and removes it at the end.
_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "torchinductor", "DASK_TEMPORARY_DIRECTORY": "dask",
           "SIMKIT_COMPILATION_CACHE": "jax"}


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory) -> Path:
    """The temporary folder of this session (of each worker under pytest-xdist).

    TMPDIR points here for the tests and every process they start (CLI runs, notebook kernels),
    and ``tempfile`` of this process too; nothing may be left in it after a test
    (``_no_leaked_files``). Files a test keeps belong under its ``tmp_path``.
    """
    tmp_path_factory.getbasetemp()  # pytest's own folders stay where they were chosen
    root = tmp_path_factory.mktemp("session", numbered=True)
    folder, caches = root / "tmp", root / "caches"
    folder.mkdir()
    saved = {key: os.environ.get(key) for key in ("TMPDIR", *_CACHES)}
    saved_tempdir = tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    for key, name in _CACHES.items():
        os.environ.setdefault(key, str(caches / name))
    if "dask.config" in sys.modules:  # read its environment when imported: tell it now
        sys.modules["dask.config"].set({"temporary-directory": os.environ[
            "DASK_TEMPORARY_DIRECTORY"]})
    yield folder
    tempfile.tempdir = saved_tempdir
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    left = sorted(p.name for p in folder.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    assert not left, f"left in the temporary folder at the end of the session: {', '.join(left)}"


#: The project's own folder: no test writes there (a run's relative output lands in the test's
#: folder only while the test stays in it).
_PROJECT = Path(__file__).resolve().parent.parent


def _project_entries() -> set[str]:
    return {name for name in os.listdir(_PROJECT) if not name.startswith(".")}


@pytest.fixture(autouse=True)
def _no_leaked_files(session_tmpdir: Path):
    """Fail a test that leaves anything in the temporary folder (then remove it), or writes into
    the project's folder."""
    before = _project_entries()
    yield
    written = sorted(_project_entries() - before)
    if written:
        pytest.fail(f"the test wrote {', '.join(written)} into the project's folder, expected "
                    "nothing there (write under tmp_path)", pytrace=False)
    left = sorted(session_tmpdir.iterdir())
    for path in left:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if left:
        pytest.fail(f"the test left {len(left)} entries in the temporary folder, expected none "
                    f"(write under tmp_path): {', '.join(p.name for p in left)}", pytrace=False)


#: The backends and other optional libraries that `make setup` installs (the Makefile's extras):
#: a test that needs one takes it from ``require_backend``, never ``pytest.importorskip``, so that
#: CI (``SIMKIT_REQUIRE_BACKENDS=1``) fails where one is missing instead of skipping
#: (tests/test_required_backends.py holds the test files to it).
REQUIRED = (*BACKENDS, "numba", "dask.distributed", "tensorboardX")


def require_backend(name: str) -> ModuleType:
    """The module ``name`` (one of ``REQUIRED``), imported; a missing one skips the test (or the
    test module, called at its top), or fails it when CI asks for every backend."""
    if name not in REQUIRED:
        raise ValueError(f"require_backend: expected one of {', '.join(REQUIRED)}, given {name!r}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if REQUIRE_BACKENDS:
            pytest.fail(f"{name} is not installed ({error}) but SIMKIT_REQUIRE_BACKENDS=1",
                        pytrace=False)
        pytest.skip(f"{name} is not installed", allow_module_level=True)


def has_backend(name: str) -> bool:
    """Whether ``name`` (one of ``REQUIRED``) is installed, for a test that checks more where it
    is; a missing one fails the test when CI asks for every backend."""
    try:
        require_backend(name)
    except pytest.skip.Exception:
        return False
    return True


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return request.param


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside a fresh directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def heat_scenario(**overrides) -> dict:
    """A small heat scenario as data."""
    data = {
        "solver": "heat2d",
        "params": {"diffusivity": 1.0, "shape": [24, 20], "spacing": 1.0},
        "initial": {"kind": "noise", "amplitude": 1.0},
        "steps": 12,
        "seed": 3,
        "outputs": {"snap": {"every": 3, "fields": ["u"]},
                    "early": {"at": [2, 5, 8], "fields": ["u"]},
                    "diag": {"every": 1, "diagnostics": ["energy", "heat", "max_abs"]}},
        "output": "out.nc",
    }
    for key, value in overrides.items():
        if key in ("params", "initial") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def lorenz_scenario(**overrides) -> dict:
    data = {
        "solver": "lorenz63",
        "params": {"trajectories": 5},
        "initial": {"spread": 0.5},
        "steps": 200,
        "dt": 0.01,
        "seed": 1,
        "outputs": {"orbits": {"every": 50, "fields": "all"}},
        "output": "lorenz.nc",
    }
    data.update(overrides)
    return data


def killed_after(script: str, args: list[str], lines: int) -> list[int]:
    """Run ``python -c script *args``, read the step numbers it prints (one per line, each
    printed once what it stands for is on disk) until ``lines`` have come, then SIGKILL it;
    return those numbers (the process is checked to have died of the signal)."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    said = []
    assert proc.stdout is not None
    for line in proc.stdout:
        said.append(int(line))
        if len(said) == lines:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return said


def assert_bitwise(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()
