"""What a user waits for before and around the work: ``import simkit``, a tiny run in a fresh
process (the first time, and again with JAX's compiled programs in the persistent cache), and a
checkpointed gradient against its forward run on JAX and torch.

Every timing is a median over fresh processes (or repeats) measured in this one run, beside its
reference (a bare interpreter, the library's own import, the forward run)."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cases import _heat, _target

BACKENDS = ("numpy", "jax", "torch")
TINY = """solver: heat2d
params: {shape: [64, 64]}
steps: 10
outputs:
  diagnostics: {every: 1, diagnostics: [energy, max_abs]}
  snapshots: {every: 5, fields: [u]}
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _seconds(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one fresh process (CPU time is the steadier figure on a
    machine shared with other work); a failure is an error, not a time."""
    start, start_cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    took, cpu = time.perf_counter() - start, _children_cpu() - start_cpu
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])}... failed: {done.stderr.strip()[-500:]}")
    return took, cpu


def _median(args: list[str], env: dict[str, str], repeats: int) -> tuple[float, float]:
    """Medians of wall-clock and CPU seconds over ``repeats`` fresh processes."""
    found = [_seconds(args, env) for _ in range(repeats)]
    return statistics.median(w for w, _ in found), statistics.median(c for _, c in found)


def import_time(quick: bool = False) -> dict:
    """``import simkit`` in a fresh process against a bare interpreter, and which libraries it
    loads (none of NumPy, JAX, torch, xarray, netCDF4 is needed to import it)."""
    repeats = 5 if quick else 11
    env = dict(os.environ)
    bare, bare_cpu = _median([sys.executable, "-c", "pass"], env, repeats)
    simkit, simkit_cpu = _median([sys.executable, "-c", "import simkit"], env, repeats)
    heavy = ("numpy", "jax", "torch", "xarray", "netCDF4", "pydantic", "yaml")
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, simkit; print(*[m for m in {heavy!r} "
                               f"if m in sys.modules])"],
        env=env, capture_output=True, text=True, check=True).stdout.split()
    out: dict = {"bare python s": bare, "import simkit s": simkit,
                 "import simkit - bare s": simkit - bare, "bare python cpu s": bare_cpu,
                 "import simkit cpu s": simkit_cpu,
                 "libraries loaded by import simkit": ", ".join(loaded) or "none"}
    _target(out, "import simkit s", simkit, 0.3)
    return out


def tiny_run(quick: bool = False) -> dict:
    """``simkit run`` of heat2d 64^2, 10 steps, in a fresh process on each backend: the first
    time (JAX's persistent compilation cache empty) and the second time (filled), against the
    backend library's own import and JAX with the cache turned off."""
    repeats = 3 if quick else 5
    folder = Path(tempfile.mkdtemp())
    scenario = folder / "tiny.yaml"
    scenario.write_text(TINY)
    cache = folder / "cache"
    env = {**os.environ, "SIMKIT_COMPILATION_CACHE": str(cache)}
    out: dict = {}
    for backend in BACKENDS:
        args = [sys.executable, "-m", "simkit", "run", str(scenario), "--backend", backend,
                "-o", str(folder / f"{backend}.nc"), "--overwrite", "-q"]
        figures = {"import": _median([sys.executable, "-c", f"import {backend}"], env, repeats),
                   "first": _seconds(args, env), "second": _median(args, env, repeats)}
        if backend == "jax":
            off = {**env, "SIMKIT_COMPILATION_CACHE": "off"}
            figures["second, cache off"] = _median(args, off, repeats)
            out["jax cache entries"] = len(list(cache.iterdir()))
        for name, (wall, cpu) in figures.items():
            out[f"{backend} {name} s"], out[f"{backend} {name} cpu s"] = wall, cpu
        _target(out, f"{backend} second run s", figures["second"][0], 1.5)
    return out


def _cpu_and_wall(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Medians of wall-clock and of this process's CPU seconds, run round-robin after a
    warm-up: CPU time is the steadier figure on a machine shared with other work."""
    for fn in fns.values():
        fn()
    wall: dict = {name: [] for name in fns}
    cpu: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return ({k: statistics.median(v) for k, v in wall.items()},
            {k: statistics.median(v) for k, v in cpu.items()})


def _jax_pair(scenario: dict) -> tuple:
    import jax
    import jax.numpy as jnp

    from simkit.autodiff import run_function

    run = run_function(scenario, backend="jax", checkpoint="sqrt")
    p0, f0 = run.initial_params(), run.initial_fields()

    def loss(p, f):
        return jnp.sum(run(p, f)[0]["u"] ** 2)

    forward = jax.jit(loss)
    gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return (lambda: jax.block_until_ready(forward(p0, f0)),
            lambda: jax.block_until_ready(gradient(p0, f0)))


def _torch_pair(scenario: dict) -> tuple:
    import torch

    from simkit.autodiff import run_function

    run = run_function(scenario, backend="torch", checkpoint="sqrt")
    p0, f0 = run.initial_params(), run.initial_fields()

    def forward():
        with torch.no_grad():
            return torch.sum(run(p0, f0)[0]["u"] ** 2)

    def gradient():
        p = {k: v.clone().requires_grad_(True) for k, v in p0.items()}
        f = {k: v.clone().requires_grad_(True) for k, v in f0.items()}
        loss = torch.sum(run(p, f)[0]["u"] ** 2)
        return torch.autograd.grad(loss, [*p.values(), *f.values()])

    return forward, gradient


def gradient_vs_forward(quick: bool = False) -> dict:
    """Gradient of a heat2d run (sqrt checkpointing) against the same run forward: JAX at 256^2
    and 10^4 steps, torch at 128^2 and 2500 (its eager steps take minutes at the larger size on
    a CPU); wall-clock and CPU-time medians.

    What limits it (XLA CPU profile, 128^2): the gradient's own forward pass costs one forward
    run, recomputing a segment while keeping each step's Laplacian about 2.9 (the four shifted
    neighbours are written out as arrays, having two users, and the stencil is computed twice;
    the stacked buffer is zeroed per segment) and going back through it about 1.7 (the wrapped
    columns' and the parameter's reductions take no fused producers, the kept Laplacian is
    copied out of the stack). Torch (eager, autograd): the checkpointed forward records a graph
    it drops (1.4 forward runs), then recomputation and backward through four rolls."""
    sizes = {"jax": (64, 400), "torch": (64, 400)} if quick else \
        {"jax": (256, 10_000), "torch": (128, 2_500)}
    repeats = 3
    out: dict = {}
    for library, pair in (("jax", _jax_pair), ("torch", _torch_pair)):
        n, steps = sizes[library]
        scenario = _heat(n, steps, library, {}, f"{tempfile.mkdtemp()}/g.nc")
        forward, gradient = pair(scenario)
        wall, cpu = _cpu_and_wall({"forward": forward, "gradient": gradient}, repeats)
        out[f"{library} grid, steps"] = f"{n}x{n}, {steps}"
        out[f"{library} forward s"] = wall["forward"]
        out[f"{library} gradient s"] = wall["gradient"]
        out[f"{library} forward cpu s"] = cpu["forward"]
        out[f"{library} gradient cpu s"] = cpu["gradient"]
        out[f"{library} gradient / forward (wall)"] = wall["gradient"] / wall["forward"]
        _target(out, f"{library} gradient / forward (cpu time)",
                cpu["gradient"] / cpu["forward"] if cpu["forward"] > 0 else np.nan, 4.0)
    return out


BENCHMARKS = [import_time, tiny_run, gradient_vs_forward]
