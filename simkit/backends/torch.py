"""The PyTorch backend: an inference-mode block loop with no host sync per step, its functions
``torch.compile``-d (by default on GPU, or with ``compile: true``)."""

from __future__ import annotations

import dataclasses
import os
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree

from simkit.backends._base import AbstractBackend, check_options, no_gpu, weakly
from simkit.backends._block import BlockProgram
from simkit.backends._torch_block import TorchBlockOps
from simkit.errors import ScenarioError

#: Names the ``torch.compile`` backend that lowers the captured graphs (default ``inductor``,
#: which generates C++ or Triton kernels; ``aot_eager`` traces the same graphs and runs them with
#: PyTorch's own kernels, for a machine without a C++ compiler).
COMPILER_ENV = "SIMKIT_TORCH_COMPILER"
DEFAULT_COMPILER = "inductor"

# Dynamo traces through the memoised type look-ups of array_api_compat (pure functions of a
# type) and says so once per look-up: a screen of warnings on every compiled run, none of them
# about the run.
warnings.filterwarnings("ignore", category=UserWarning,
                        message=r"Dynamo detected a call to a `functools\.lru_cache`-wrapped "
                                r"function at '_helpers\.py:")


def compiler() -> str:
    """The ``torch.compile`` backend the environment names (``COMPILER_ENV``).

    Raises:
        ScenarioError: for a name ``torch.compile`` does not know.
    """
    import torch._dynamo

    name = os.environ.get(COMPILER_ENV, "").strip() or DEFAULT_COMPILER
    if name not in torch._dynamo.list_backends(exclude_tags=()):
        usual = sorted({"aot_eager", "eager", *torch._dynamo.list_backends()})
        raise ScenarioError(f"expected a torch.compile backend ({', '.join(usual)}), given "
                            f"{name!r}", key=COMPILER_ENV)
    return name


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
        # Compiled functions, kept as long as the function lives (see weakly).
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._pinned: dict[tuple, torch.Tensor] = {}

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def compiled_with(self) -> str | None:
        return f"torch.compile ({compiler()})" if self.compile else None

    def asarray(self, host: np.ndarray, cast: bool = True) -> torch.Tensor:
        return torch.tensor(np.asarray(host), dtype=self.dtype if cast else None,
                            device=self._device)

    def scalars(self, dt: float, step: int, time: float) -> tuple[torch.Tensor, ...]:
        return (torch.scalar_tensor(dt, dtype=self.dtype, device=self._device),
                torch.scalar_tensor(step, dtype=torch.int64, device=self._device),
                torch.scalar_tensor(time, dtype=torch.float64, device=self._device))

    def compiled(self, fn: Callable) -> Callable:
        """``fn`` ``torch.compile``-d (once per function, kept as long as it lives); ``fn``
        itself without ``compile``."""
        if not self.compile:
            return fn
        found = self._compiled.get(fn)
        if found is None:
            found = self._compiled[fn] = _Compiled(fn)
        return found

    def block_runner(self, program: BlockProgram) -> BlockProgram:
        """The program with every function the block loop calls compiled: the step (and the
        step that keeps stage states), the conditions and the diagnostics. Each is one graph,
        its shapes fixed (one compilation per function and run set-up; the step's scalars are
        0-d tensors, so their values never recompile)."""
        if not self.compile:
            return program

        def maybe(fn: Callable | None) -> Callable | None:
            return None if fn is None else self.compiled(fn)

        return dataclasses.replace(
            program, step=self.compiled(program.step), staged=maybe(program.staged),
            watch=maybe(program.watch), levels=maybe(program.levels),
            diagnostics={name: self.compiled(fn) for name, fn in program.diagnostics.items()})

    def block_ops(self) -> TorchBlockOps:
        return TorchBlockOps(self._device, self.scalars)

    def run_block(self, runner: Any, fields: Mapping[str, torch.Tensor], plan: Any) -> Any:
        with torch.inference_mode():
            # Every step then sees inference tensors: a compiled step given an ordinary tensor
            # first (the initial state) would compile again for the steps after it.
            fields = {name: value if value.is_inference() else value.clone()
                      for name, value in fields.items()}
            return super().run_block(runner, fields, plan)

    def call(self, fn: Any, *args: Any) -> Any:
        with torch.inference_mode():
            return fn(*args)

    def call_step(self, step_fn: Any, fields: Mapping[str, torch.Tensor], dt: float, step: int,
                  time: float) -> Any:
        # The loop's own compiled step, so that a replay retakes the steps the loop took.
        return self.call(self.compiled(step_fn), dict(fields), *self.scalars(dt, step, time))

    def grad_ops(self) -> Any:
        from simkit.backends._torch_grad import TorchGradOps

        return TorchGradOps(self)

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


class _Compiled:
    """``torch.compile`` of a function, its first call preceded by one eager call that builds
    what stages make once per device and dtype (``Constants.like``): the compiled graph then
    only reads them, where building them from NumPy inside the graph fails. That call takes the
    path the tracer takes (the stages' Array API functions, not the torch kernels that write
    into scratch tensors): it records autograd, on copies of the arguments (a stage may update
    in place). Holds its function weakly (see ``weakly``)."""

    def __init__(self, fn: Callable) -> None:
        self._fn = weakref.ref(fn)
        self._compiled = torch.compile(weakly(fn), backend=compiler(), dynamic=False)
        self._warm = False

    def __call__(self, *args: Any) -> Any:
        if not self._warm:
            with torch.inference_mode(False), torch.enable_grad():
                self._fn()(*_pytree.tree_map_only(torch.Tensor, _tracked_copy, args))
            self._warm = True
        return self._compiled(*args)


def _tracked_copy(value: torch.Tensor) -> torch.Tensor:
    """A copy of ``value`` that autograd tracks (floats), not a leaf: a stage may write into
    the arrays it is given, as into any other tensor computed from a tracked input."""
    copy = value.detach().clone()
    if not (copy.is_floating_point() or copy.is_complex()):
        return copy
    return copy.requires_grad_().clone()
