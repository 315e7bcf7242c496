"""The PyTorch backend: an inference-mode loop with no host sync inside, optionally
``torch.compile``-d."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from simkit._types import StepFn
from simkit.backends._base import AbstractBackend, check_options, no_gpu


class TorchBackend(AbstractBackend):
    name = "torch"

    def __init__(self, device: str = "cpu", dtype: str = "float64",
                 compile: bool | None = None) -> None:  # noqa: A002
        """``compile=None`` compiles on GPU only: on CPU, compiling costs more than it saves for
        the short runs typical there."""
        check_options(self.name, device, dtype)
        has_gpu = torch.cuda.is_available()
        if device == "gpu" and not has_gpu:
            raise no_gpu(self.name)
        self._device = torch.device("cuda" if has_gpu and device in ("gpu", "auto") else "cpu")
        self.dtype = getattr(torch, dtype)
        self.compile = compile if compile is not None else self._device.type == "cuda"
        self._compiled: dict[int, StepFn] = {}

    @property
    def device(self) -> str:
        return str(self._device)

    def asarray(self, host: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.asarray(host), dtype=self.dtype, device=self._device)

    def _step(self, step_fn: StepFn) -> StepFn:
        if not self.compile:
            return step_fn
        compiled = self._compiled.get(id(step_fn))
        if compiled is None:
            compiled = self._compiled[id(step_fn)] = torch.compile(step_fn, dynamic=False)
        return compiled

    def advance(self, step_fn: StepFn, fields: Mapping[str, torch.Tensor], n: int, dt: float
                ) -> dict[str, torch.Tensor]:
        step = self._step(step_fn)
        # dt as a 0-d tensor: a compiled step then never specialises on its value.
        dt_arg = torch.tensor(dt, dtype=torch.float64, device=self._device) if self.compile else dt
        out = dict(fields)
        with torch.inference_mode():
            for _ in range(n):
                out = step(out, dt_arg)
        return out

    def to_host(self, arrays: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {name: value.detach().to("cpu", copy=True).numpy() for name, value in arrays.items()}
