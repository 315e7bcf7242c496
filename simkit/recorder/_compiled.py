"""Recording from inside compiled code (``jax.jit``, ``lax.scan``, ``torch.compile``): how a
``Recorder``'s calls are told apart when their values are traced, and where they go then."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from simkit.errors import ScenarioError

if TYPE_CHECKING:
    from simkit.recorder._recorder import Recorder


def traced(*values: Any) -> bool:
    """Whether any of ``values`` (a mapping's values count) is traced by JAX, or the call is
    being compiled by ``torch.compile``; no import of either library is made here."""
    jax = sys.modules.get("jax")
    if jax is not None:
        tracer = jax.core.Tracer
        for value in values:
            items = value.values() if isinstance(value, Mapping) else (value,)
            if any(isinstance(v, tracer) for v in items):
                return True
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def _refuse(what: str) -> ScenarioError:
    return ScenarioError(f"expected host values for {what}, given traced ones (recording "
                         "inside compiled code is not available in this version)", key=what)


def step(rec: Recorder, step: Any, time: Any, values: Mapping[str, Any]) -> None:
    """``rec.step`` called with traced values."""
    raise _refuse("step")


def probe(rec: Recorder, name: str, value: Any) -> None:
    """``rec.probe`` called with a traced value."""
    raise _refuse("probe")


def scan(rec: Recorder, body: Callable[..., Any], carry: Any, xs: Any = None,
         length: int | None = None) -> Any:
    """``rec.scan``: ``lax.scan`` whose body may call ``rec.step``."""
    raise _refuse("scan")
