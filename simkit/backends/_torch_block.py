"""The eager block loop's operations on PyTorch: buffers on the state's device, captures copied
into them by device kernels, no host sync per step (only edge and level conditions are read on
the host, once per step that watches them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from simkit.backends._block import EagerBlockOps


class TorchBlockOps(EagerBlockOps):
    def __init__(self, device: torch.device, scalars: Any) -> None:
        super().__init__(scalars)
        self.device = device

    def buffer(self, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
        return torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)

    def store(self, buffer: torch.Tensor, index: int, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            buffer[index].copy_(value.detach())
        elif isinstance(value, np.ndarray):  # host flags
            buffer[index].copy_(torch.from_numpy(value))
        else:
            buffer[index] = value  # a host number: one fill kernel, no sync

    def all_finite(self, values: Mapping[str, Any]) -> Any:
        flags = [torch.isfinite(v).all() for v in values.values()
                 if isinstance(v, torch.Tensor) and v.is_floating_point()]
        return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool,
                                                                 device=self.device)

    def both(self, a: Any, b: Any) -> Any:
        return b if a is True else a & b

    def flags(self, value: Any) -> np.ndarray:
        return value.detach().cpu().numpy().astype(bool)
