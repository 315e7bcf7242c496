"""JAX's persistent compilation cache for simkit's runs: a second run of the same program in a
fresh process loads the compiled executables instead of compiling them again."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import jax

#: The folder of the cache, or ``off`` (also ``0``, ``false``, ``no``, ``none``) for none.
#: Unset: ``$XDG_CACHE_HOME/simkit/jax``, else ``~/.cache/simkit/jax``.
CACHE_ENV = "SIMKIT_COMPILATION_CACHE"
_OFF = frozenset({"0", "off", "false", "no", "none"})
_configured = False


def cache_folder(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where the environment puts the cache; ``None`` when it turns the cache off."""
    text = environ.get(CACHE_ENV, "").strip()
    if text.lower() in _OFF:
        return None
    if text:
        return Path(text).expanduser()
    base = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "simkit" / "jax"


def configure_compilation_cache() -> None:
    """Point JAX's persistent cache at ``cache_folder()`` once per process, caching every
    program however small or quick to compile (a tiny run's programs compile in well under
    JAX's default threshold of a second, and they are what a second run waits for). Nothing is
    evicted (JAX's own default): the folder may be removed at any time. (JAX's size limit is not
    set: its eviction reads an access-time file beside each program and fails on programs
    written without one, by a process that set no limit.)

    A cache the user configured for JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) is left as it is; so is JAX once it has looked for its cache (a program
    compiled before the first backend was made)."""
    global _configured
    if _configured:
        return
    _configured = True
    if jax.config.jax_compilation_cache_dir is not None:
        return
    folder = cache_folder()
    if folder is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
