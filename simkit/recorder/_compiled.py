"""Recording from inside compiled code (``jax.jit``, ``lax.scan``, ``torch.compile``): how a
``Recorder``'s calls are told apart when their values are traced, and where they go then
(``_jax_record`` for JAX, ``_torch_record`` for ``torch.compile``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from simkit.errors import ScenarioError

if TYPE_CHECKING:
    from simkit.recorder._recorder import Recorder


def _jax_traced(*values: Any) -> bool:
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    tracer = jax.core.Tracer
    for value in values:
        items = value.values() if isinstance(value, Mapping) else (value,)
        if any(isinstance(v, tracer) for v in items):
            return True
    return False


def _torch_compiling() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def traced(*values: Any) -> bool:
    """Whether any of ``values`` (a mapping's values count) is traced by JAX, or the call is
    being compiled by ``torch.compile``; no import of either library is made here."""
    return _jax_traced(*values) or _torch_compiling()


def step(rec: Recorder, step: Any, time: Any, values: Mapping[str, Any]) -> None:
    """``rec.step`` called with traced values (or while ``torch.compile`` traces)."""
    if _jax_traced(step, time, values):
        from simkit.recorder import _jax_record

        return _jax_record.step(rec, step, time, values)
    from simkit.recorder._torch_record import host_step  # one graph break: the host call

    host_step(rec, step, time, values)


def probe(rec: Recorder, name: str, value: Any) -> None:
    """``rec.probe`` called with a traced value: refused (stages are recorded on the host)."""
    raise ScenarioError(f"expected a host value for probe {name!r}, given a traced one (probes "
                        "and stages are recorded on the host only: pass the value to "
                        "rec.step)", key="probe")


def scan(rec: Recorder, body: Callable[..., Any], carry: Any, xs: Any = None,
         length: int | None = None) -> Any:
    """``rec.scan``: ``lax.scan`` whose body may call ``rec.step``."""
    from simkit.recorder import _jax_record

    return _jax_record.scan(rec, body, carry, xs, length)
