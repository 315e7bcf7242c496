"""What a fresh process pays before a run: ``import simkit`` loads no numerical library, and JAX's
compiled programs are kept in a persistent cache where the environment says (or nowhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import simkit
import simkit.live
from simkit.backends._jax_cache import CACHE_ENV, cache_folder

HEAVY = ("numpy", "jax", "torch", "xarray", "netCDF4", "pydantic", "yaml", "dask", "pandas")

# A tiny heat2d run on JAX in a fresh process; prints where JAX's cache went and the final state.
TINY_RUN = """
import json, sys
import jax, simkit
result = simkit.run({"solver": "heat2d", "backend": "jax", "params": {"shape": [16, 16]},
                     "steps": 5, "dt": 0.1, "output": sys.argv[1],
                     "outputs": {"d": {"every": 1, "diagnostics": ["energy"]}}}, overwrite=True)
print(json.dumps({"cache": jax.config.jax_compilation_cache_dir,
                  "u": result.state["u"].ravel().tolist()}))
"""


def _python(code: str, *args: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def test_import_simkit_loads_no_numerical_library():
    code = (f"import json, sys, simkit; print(json.dumps(sorted(m for m in {HEAVY!r} "
            f"if m in sys.modules)))")
    assert _python(code, env=_env()) == []


def test_star_import_keeps_the_builtin_open():
    namespace: dict = {}
    exec("from simkit import *", namespace)  # noqa: S102 - the import form under test
    assert "open" not in namespace
    assert set(namespace) - {"__builtins__"} == set(simkit.__all__)
    assert {"run", "iterate", "stop", "Stream", "grad"} <= set(namespace)
    assert simkit.open is simkit.live.open
    assert "open" in dir(simkit)


@pytest.mark.parametrize(("environ", "expected"), [
    ({CACHE_ENV: "/somewhere/cache"}, Path("/somewhere/cache")),
    ({CACHE_ENV: " ~/jaxcache "}, Path.home() / "jaxcache"),
    ({"XDG_CACHE_HOME": "/xdg"}, Path("/xdg/simkit/jax")),
    ({CACHE_ENV: "", "XDG_CACHE_HOME": "/xdg"}, Path("/xdg/simkit/jax")),
    ({}, Path.home() / ".cache" / "simkit" / "jax"),
    ({CACHE_ENV: "off", "XDG_CACHE_HOME": "/xdg"}, None),
    ({CACHE_ENV: "0"}, None),
    ({CACHE_ENV: "False"}, None),
    ({CACHE_ENV: "none"}, None),
])
def test_cache_folder_from_the_environment(environ, expected):
    assert cache_folder(environ) == expected


def test_jax_programs_are_cached_where_configured_and_reused(tmp_path):
    cache = tmp_path / "cache"
    env = _env(**{CACHE_ENV: str(cache), "JAX_COMPILATION_CACHE_DIR": None})
    first = _python(TINY_RUN, str(tmp_path / "a.nc"), env=env)
    assert first["cache"] == str(cache)
    entries = sorted(path.name for path in cache.iterdir())
    assert any(name.startswith("jit_run-") for name in entries), entries
    # The compiled programs (JAX may keep other files beside them).
    stamps = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()
              if path.name.endswith("-cache")}
    assert len(stamps) >= 2, entries
    second = _python(TINY_RUN, str(tmp_path / "b.nc"), env=env)
    # The second process found every program in the cache: nothing new written, the same state.
    assert sorted(path.name for path in cache.iterdir()) == entries
    assert {name: (cache / name).stat().st_mtime_ns for name in stamps} == stamps
    assert second["u"] == first["u"]


def test_jax_cache_turned_off(tmp_path):
    env = _env(**{CACHE_ENV: "off", "JAX_COMPILATION_CACHE_DIR": None,
                  "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")})
    assert _python(TINY_RUN, str(tmp_path / "a.nc"), env=env)["cache"] is None
    assert not (tmp_path / "xdg").exists()
    assert not (tmp_path / "home").exists()


def test_a_cache_configured_for_jax_itself_is_left_alone(tmp_path):
    own = tmp_path / "own"
    env = _env(**{CACHE_ENV: str(tmp_path / "simkit"), "JAX_COMPILATION_CACHE_DIR": str(own)})
    assert _python(TINY_RUN, str(tmp_path / "a.nc"), env=env)["cache"] == str(own)
    assert not (tmp_path / "simkit").exists()
