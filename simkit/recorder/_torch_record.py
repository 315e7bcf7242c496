"""``rec.step`` inside a ``torch.compile``d function: the host call is left out of the graph
(``torch._dynamo.disable``: one graph break per call, no recompilation per step), and runs the
recorder's own ``step`` on the tensors, which copies to the host only what is due.

Imported only while ``torch.compile`` traces (torch is loaded then)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from simkit.recorder._recorder import Recorder


def _number(value: Any) -> Any:
    """A 0-d integer tensor step as the host number ``Recorder.step`` takes."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and \
            not value.is_floating_point() and not value.is_complex():
        return int(value)
    return value


@torch._dynamo.disable  # type: ignore[untyped-decorator]
def host_step(rec: Recorder, step: Any, time: Any, values: Mapping[str, Any]) -> None:
    """``rec.step`` while ``torch.compile`` traces: a call the graph leaves to the host."""
    rec.step(_number(step), time=time, **values)
