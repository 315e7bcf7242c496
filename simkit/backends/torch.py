"""The PyTorch backend: an inference-mode loop with no host sync per step, optionally
``torch.compile``-d."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from simkit._types import StepFn, WatchFn
from simkit.backends._base import AbstractBackend, check_options, no_gpu, weakly
from simkit.backends._torch_block import TorchBlockOps

#: With a watched condition, the loop looks at the device's stop flag once per this many steps.
WATCH_SYNC_EVERY = 32


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
        # Compiled steps, kept as long as the step function lives (see weakly).
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._pinned: dict[tuple, torch.Tensor] = {}

    @property
    def device(self) -> str:
        return str(self._device)

    def asarray(self, host: np.ndarray, cast: bool = True) -> torch.Tensor:
        return torch.tensor(np.asarray(host), dtype=self.dtype if cast else None,
                            device=self._device)

    def scalars(self, dt: float, step: int, time: float) -> tuple[torch.Tensor, ...]:
        return (torch.tensor(dt, dtype=self.dtype, device=self._device),
                torch.tensor(step, dtype=torch.int64, device=self._device),
                torch.tensor(time, dtype=torch.float64, device=self._device))

    def _loop_scalars(self, dt: float, step0: int, time0: float) -> Callable[[int], tuple]:
        """The scalars of step ``i`` of a loop: made on the device from the loop's first ones, so
        there is no host-to-device copy per step; ``time0 + i * dt`` rounds as the host's does."""
        dt_0, step_0, time_0 = self.scalars(dt, step0, time0)
        return lambda i: (dt_0, step_0 + i, time_0 + i * dt)

    def _compiled_fn(self, fn: StepFn, fields: Mapping[str, torch.Tensor], scalars: tuple
                     ) -> Any:
        if not self.compile:
            return fn
        compiled = self._compiled.get(fn)
        if compiled is None:
            # One eager step first, on copies (a stage may update in place), builds what stages
            # make once per device and dtype (Constants.like): the compiled graph then only reads
            # them, where building them from NumPy inside the graph fails.
            fn({name: value.clone() for name, value in fields.items()}, *scalars)
            compiled = self._compiled[fn] = torch.compile(weakly(fn), dynamic=False)
        return compiled

    def advance(self, step_fn: StepFn, fields: Mapping[str, torch.Tensor], n: int, dt: float,
                step0: int, time0: float, watch: WatchFn | None = None,
                enabled: np.ndarray | None = None) -> tuple[dict[str, torch.Tensor], int, Any]:
        out = dict(fields)
        with torch.inference_mode():
            scalars = self._loop_scalars(dt, step0, time0)
            step = self._compiled_fn(step_fn, out, scalars(0)) if n else step_fn
            if watch is None:
                for i in range(n):
                    out = step(out, *scalars(i))
                return out, n, None
            # Steps after the condition fires are computed but discarded (torch.where), so the
            # device decides when to stop; the host looks at the flag every WATCH_SYNC_EVERY steps.
            mask = torch.as_tensor(np.asarray(enabled, dtype=bool), device=self._device)
            prev = watch(out)
            stopped = torch.zeros((), dtype=torch.bool, device=self._device)
            fired = torch.zeros_like(prev)
            taken = torch.zeros((), dtype=torch.int64, device=self._device)
            for i in range(n):
                new = step(out, *scalars(i))
                out = {k: torch.where(stopped, out[k], new[k]) for k in out}
                now = watch(out)
                fire = now & ~prev & mask & ~stopped
                fired = fired | fire
                taken = taken + (~stopped).to(torch.int64)
                stopped = stopped | fire.any()
                prev = now
                if i % WATCH_SYNC_EVERY == WATCH_SYNC_EVERY - 1 and bool(stopped):
                    break
            return out, int(taken), fired.cpu().numpy()

    def block_ops(self) -> TorchBlockOps:
        return TorchBlockOps(self._device, self.scalars)

    def run_block(self, runner: Any, fields: Mapping[str, torch.Tensor], plan: Any) -> Any:
        with torch.inference_mode():
            return super().run_block(runner, fields, plan)

    def call(self, fn: Any, *args: Any) -> Any:
        with torch.inference_mode():
            return fn(*args)

    def synchronize(self, arrays: Any) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def to_host(self, arrays: Mapping[str, torch.Tensor],
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        out = out or {}
        if self._device.type == "cuda":
            return self._to_host_pinned(arrays, out)
        host = {}
        for name, value in arrays.items():
            buffer = out.get(name)
            if buffer is None:
                host[name] = value.detach().to("cpu", copy=True).numpy()
            else:
                torch.from_numpy(buffer).copy_(value.detach())
                host[name] = buffer
        return host

    def _to_host_pinned(self, arrays: Mapping[str, torch.Tensor],
                        out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # All copies start at once (non_blocking into pinned staging memory, reused between
        # captures); one wait for the stream, then plain host copies into the caller's buffers.
        staged = {}
        for name, value in arrays.items():
            key = (name, tuple(value.shape), value.dtype)
            pinned = self._pinned.get(key)
            if pinned is None:
                pinned = self._pinned[key] = torch.empty(value.shape, dtype=value.dtype,
                                                         pin_memory=True)
            pinned.copy_(value.detach(), non_blocking=True)
            staged[name] = pinned
        torch.cuda.current_stream(self._device).synchronize()
        host = {}
        for name, pinned in staged.items():
            buffer = out.get(name)
            host[name] = pinned.numpy().copy() if buffer is None else buffer
            if buffer is not None:
                np.copyto(buffer, pinned.numpy())
        return host
