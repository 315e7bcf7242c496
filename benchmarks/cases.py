"""The benchmarks of ``run.py``; each returns a dict of measured figures and target checks."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import simkit


class Skip(Exception):
    """A benchmark that cannot run here (a peer not installed)."""


def median_seconds(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, run round-robin so machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def table(outcome: dict) -> list[str]:
    lines = []
    for key, value in outcome.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"{key:<40} {value}")
    return lines


def _target(outcome: dict, name: str, measured: float, limit: float, below: bool = True) -> None:
    met = measured <= limit if below else measured >= limit
    outcome[f"target {name}"] = f"{measured:.3g} {'<=' if below else '>='} {limit:g}: " + \
        ("met" if met else "NOT met")


def _heat(n: int, steps: int, backend: str, outputs: dict, path: str) -> dict:
    return {"solver": "heat2d", "backend": backend, "params": {"shape": [n, n]},
            "initial": {"kind": "noise"}, "steps": steps, "outputs": outputs, "output": path,
            "check_finite": 0}


def _run(scenario: dict) -> None:
    simkit.run(scenario, overwrite=True)


# ---------------------------------------------------------------- a. framework overhead


def framework_overhead(quick: bool = False) -> dict:
    """heat2d 512^2 without captures: simkit against hand-written loops of the same stencil."""
    n, steps, repeats = (256, 2000, 3) if quick else (512, 10_000, 5)
    out: dict = {"grid": n, "steps": steps}
    tmp = tempfile.mkdtemp()
    dt_d = 0.8 * 0.25  # the solver's default dt * D / h^2

    import jax
    import jax.numpy as jnp

    u0 = np.random.default_rng(0).standard_normal((n, n))

    def jax_step(u):
        return u + dt_d * (jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1)
                           + jnp.roll(u, -1, 1) - 4 * u)

    loop = jax.jit(lambda u, k: jax.lax.fori_loop(0, k, lambda i, v: jax_step(v), u))
    ju = jnp.asarray(u0)
    start = time.perf_counter()
    loop(ju, steps).block_until_ready()
    out["jax hand-written compile+run s"] = time.perf_counter() - start
    scenario = _heat(n, steps, "jax", {}, f"{tmp}/jax.nc")
    start = time.perf_counter()
    _run(scenario)
    first = time.perf_counter() - start
    medians = interleaved({"hand": lambda: loop(ju, steps).block_until_ready(),
                           "ours": lambda: _run(scenario)}, repeats, warmup=0)
    hand, ours = medians["hand"], medians["ours"]
    out["jax hand-written ms/step"] = hand / steps * 1e3
    out["jax simkit ms/step"] = ours / steps * 1e3
    out["jax simkit compile s (first run - median)"] = first - ours
    _target(out, "jax simkit / hand-written", ours / hand, 1.05)

    import torch

    def torch_loop():
        u = torch.tensor(u0)
        with torch.inference_mode():
            for _ in range(steps):
                lap = (torch.roll(u, 1, 0) + torch.roll(u, -1, 0) + torch.roll(u, 1, 1)
                       + torch.roll(u, -1, 1) - 4 * u)
                u.add_(lap, alpha=dt_d)
        return u

    t_steps = steps // 5
    _versus(out, "torch", torch_loop,
            lambda: _run(_heat(n, steps, "torch", {}, f"{tmp}/t.nc")), steps, max(1, repeats // 2))

    def numpy_loop():
        u = u0.copy()
        lap = np.empty_like(u)
        for _ in range(t_steps):
            np.multiply(u, -4.0, out=lap)
            lap[1:] += u[:-1]
            lap[:1] += u[-1:]
            lap[:-1] += u[1:]
            lap[-1:] += u[:1]
            lap[:, 1:] += u[:, :-1]
            lap[:, :1] += u[:, -1:]
            lap[:, :-1] += u[:, 1:]
            lap[:, -1:] += u[:, :1]
            lap *= dt_d
            u += lap
        return u

    _versus(out, "numpy", numpy_loop,
            lambda: _run(_heat(n, t_steps, "numpy", {}, f"{tmp}/n.nc")), t_steps,
            max(1, repeats // 2))
    return out


def _versus(out: dict, label: str, hand, ours, steps: int, repeats: int) -> None:
    """A hand-written loop against simkit on the same problem, interleaved."""
    medians = interleaved({"hand": hand, "ours": ours}, repeats)
    out[f"{label} hand-written (in place) ms/step"] = medians["hand"] / steps * 1e3
    out[f"{label} simkit ms/step"] = medians["ours"] / steps * 1e3
    out[f"{label} simkit / hand-written"] = medians["ours"] / medians["hand"]


# ---------------------------------------------------------------- b. capture overhead


def capture_overhead(quick: bool = False) -> dict:
    """heat2d 512^2: captures none / every 1000 / 100 / 10 / 1, written to the NetCDF file."""
    n, steps, repeats = (256, 2000, 3) if quick else (512, 10_000, 3)
    out: dict = {"grid": n, "steps": steps}
    tmp = tempfile.mkdtemp()
    backends = ["jax", "torch", "numpy"]
    for backend in backends:
        b_steps = steps if backend == "jax" else steps // 5
        runs = {}
        for every in (None, 1000, 100, 10):
            if every is not None and every > b_steps:
                continue
            outputs = {} if every is None else {"s": {"every": every, "fields": ["u"]}}
            scenario = _heat(n, b_steps, backend, outputs, f"{tmp}/{backend}_{every}.nc")
            runs[every] = lambda s=scenario: _run(s)
        times = interleaved(runs, repeats)
        if backend == "jax":  # every step: a tenth of the steps, so the suite stays short
            dense_steps = b_steps // 10
            base = _heat(n, dense_steps, backend, {}, f"{tmp}/dense_none.nc")
            dense = _heat(n, dense_steps, backend, {"s": {"every": 1, "fields": ["u"]}},
                          f"{tmp}/dense_1.nc")
            dense_times = interleaved({"none": lambda b=base: _run(b), 1: lambda d=dense: _run(d)},
                                      repeats)
            times[1] = dense_times[1]
            out["jax every 1: steps"] = dense_steps
            out["jax every 1: none s"] = dense_times["none"]
        for every, seconds in times.items():
            out[f"{backend} every {every or 'none'} s"] = seconds
        for every in (1000, 100):
            if every in times:
                out[f"{backend} every {every} / none"] = times[every] / times[None]
        if 100 in times:
            _target(out, f"{backend} every 100 / none", times[100] / times[None], 1.05)
        for every in (10, 1):
            if every in times:
                span = b_steps if every == 10 else b_steps // 10
                compute = times[None] if every == 10 else out["jax every 1: none s"]
                alone = _write_alone(n, span // every + 1, f"{tmp}/alone_{every}.nc")
                out[f"{backend} writing {span // every + 1} captures alone s"] = alone
                bound = max(compute, alone)
                _target(out, f"{backend} every {every} / max(compute, write)",
                        times[every] / bound, 1.1)
    return out


def _hand_jax_diagnostics(n: int, steps: int) -> dict:
    """The same heat stencil and the same three reductions every step, in a hand-written
    ``lax.scan`` that stores them: what the diagnostics cost the hardware, framework aside."""
    import jax
    import jax.numpy as jnp

    u0 = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)))
    coef = 0.2

    def step(u, _):
        lap = (jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1) + jnp.roll(u, -1, 1)
               - 4 * u)
        u = u + coef * lap
        return u, (0.5 * jnp.sum(u * u), jnp.sum(u), jnp.max(jnp.abs(u)))

    def plain(u, _):
        return step(u, None)[0], None

    with_diags = jax.jit(lambda u: jax.lax.scan(step, u, None, length=steps))
    without = jax.jit(lambda u: jax.lax.scan(plain, u, None, length=steps))
    return {"diagnostics": lambda: jax.block_until_ready(with_diags(u0)),
            "none": lambda: jax.block_until_ready(without(u0))}


def diagnostics_every_step(quick: bool = False) -> dict:
    """heat2d: 3 scalar diagnostics every step against no captures, on every backend (blocks)."""
    sizes, steps, repeats = ((256,), 2000, 3) if quick else ((256, 512), 10_000, 3)
    out: dict = {"steps": steps}
    tmp = tempfile.mkdtemp()
    diags = {"d": {"every": 1, "diagnostics": ["energy", "heat", "max_abs"]}}
    for n in sizes:
        for backend in ("jax", "torch", "numpy"):
            b_steps = steps if backend == "jax" else steps // 2
            base = _heat(n, b_steps, backend, {}, f"{tmp}/{backend}_none.nc")
            dense = _heat(n, b_steps, backend, diags, f"{tmp}/{backend}_diag.nc")
            times = interleaved({"none": lambda b=base: _run(b), "diag": lambda d=dense: _run(d)},
                                repeats)
            key = f"{n}^2 {backend} ({b_steps} steps)"
            out[f"{key} none s"] = times["none"]
            out[f"{key} 3 diagnostics every step s"] = times["diag"]
            _target(out, f"{key} diagnostics / none", times["diag"] / times["none"], 1.10)
        hand = interleaved(_hand_jax_diagnostics(n, steps), repeats)
        out[f"{n}^2 hand-written jax scan: diagnostics / none"] = \
            hand["diagnostics"] / hand["none"]
    return out


def _write_alone(n: int, captures: int, path: str) -> float:
    from simkit.io import BackgroundWriter, NetCDFWriter, schema

    layout = schema.RunLayout(
        coordinates=(schema.CoordinateSpec("y", np.arange(n, dtype=float), "m", "y"),
                     schema.CoordinateSpec("x", np.arange(n, dtype=float), "m", "x")),
        fields=(schema.VariableSpec("u", ("y", "x"), "K", "u"),),
        streams=(schema.StreamSpec("s", (schema.VariableSpec("u", ("y", "x"), "K", "u"),), ()),),
        time_units="s")
    data = np.random.default_rng(1).standard_normal((n, n))

    def write():
        Path(path).unlink(missing_ok=True)
        writer = BackgroundWriter(NetCDFWriter(path, layout, {}))
        for i in range(captures):
            writer.capture("s", i, float(i), {"u": data})
        writer.close()

    seconds, _ = median_seconds(write, 3)
    return seconds


# ---------------------------------------------------------------- c. peers


def peer_pypde(quick: bool = False) -> dict:
    """py-pde (numba) against simkit JAX on the same heat problem and capture interval."""
    try:
        import pde
    except ImportError as error:
        raise Skip(f"py-pde not installed ({error}); pip install py-pde") from None
    n, steps, every = (256, 500, 100) if quick else (512, 2000, 100)
    dt = 0.2
    grid = pde.CartesianGrid([[0, n], [0, n]], [n, n], periodic=True)
    state = pde.ScalarField.random_normal(grid)
    eq = pde.DiffusionPDE(diffusivity=1.0)
    storage = pde.MemoryStorage()
    eq.solve(state, t_range=dt * 10, dt=dt, solver="euler", backend="numba", tracker=None)

    def pypde():
        eq.solve(state, t_range=dt * steps, dt=dt, solver="euler", backend="numba",
                 tracker=[storage.tracker(interrupts=dt * every)])

    theirs, _ = median_seconds(pypde, 2, warmup=0)
    tmp = tempfile.mkdtemp()
    scenario = _heat(n, steps, "jax", {"s": {"every": every, "fields": ["u"]}}, f"{tmp}/j.nc")
    ours, _ = median_seconds(lambda: _run(scenario), 3)
    out = {"grid": n, "steps": steps, "py-pde ms/step": theirs / steps * 1e3,
           "simkit jax ms/step (with file)": ours / steps * 1e3}
    _target(out, "simkit jax speed-up over py-pde", theirs / ours, 10.0, below=False)
    return out


def peer_diffrax(quick: bool = False) -> dict:
    """Lorenz-63, 1000 trajectories, fixed-step RK4, saves every 100 steps: diffrax vs simkit."""
    try:
        import diffrax
    except ImportError as error:
        raise Skip(f"diffrax not installed ({error}); pip install diffrax") from None
    import jax
    import jax.numpy as jnp

    batch, steps, every, dt = (1000, 10_000, 100, 0.001) if quick else (1000, 100_000, 100, 0.001)

    class RK4(diffrax.AbstractERK):
        """Classic RK4 as a diffrax tableau: the same method as simkit's lorenz63."""

        tableau = diffrax.ButcherTableau(
            c=np.array([0.5, 0.5, 1.0]), b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
            b_error=np.zeros(4),
            a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])))
        interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

        def order(self, terms):
            return 4

    rng = np.random.default_rng(0)
    y0 = jnp.asarray(np.stack([1 + 0.1 * rng.standard_normal(batch) for _ in range(3)]))

    def field(t, y, args):
        x, yy, z = y
        return jnp.stack([10.0 * (yy - x), x * (28.0 - z) - yy, x * yy - 8.0 / 3.0 * z])

    ts = jnp.arange(0, steps + 1, every) * dt

    @jax.jit
    def solve(y0):
        one = lambda y: diffrax.diffeqsolve(  # noqa: E731
            diffrax.ODETerm(field), RK4(), 0.0, steps * dt, dt, y,
            saveat=diffrax.SaveAt(ts=ts), max_steps=steps + 10).ys
        return jax.vmap(one, in_axes=1, out_axes=1)(y0)

    start = time.perf_counter()
    solve(y0).block_until_ready()
    compile_s = time.perf_counter() - start
    theirs, _ = median_seconds(lambda: solve(y0).block_until_ready(), 2, warmup=0)
    tmp = tempfile.mkdtemp()
    scenario = {"solver": "lorenz63", "backend": "jax", "params": {"trajectories": batch},
                "initial": {"spread": 0.1}, "steps": steps, "dt": dt, "check_finite": 0,
                "outputs": {"s": {"every": every, "fields": "all"}}, "output": f"{tmp}/l.nc"}
    ours, _ = median_seconds(lambda: _run(scenario), 3)
    out = {"trajectories": batch, "steps": steps, "diffrax s": theirs,
           "diffrax compile s": compile_s, "simkit jax s (with file)": ours}
    _target(out, "simkit speed-up over diffrax", theirs / ours, 5.0, below=False)
    return out


# ---------------------------------------------------------------- d. memory


def memory_vs_captures(quick: bool = False) -> dict:
    """Peak RSS of a heat2d 256^2 run with 10 captures against one with 10,000 captures."""
    steps = 2000 if quick else 10_000
    out: dict = {"steps": steps}
    tmp = tempfile.mkdtemp()
    peaks = {}
    for captures in (10, steps):
        every = steps // captures
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent at exec.
        code = ("import simkit\n"
                f"simkit.run({_heat(256, steps, 'numpy', {'s': {'every': every}}, f'{tmp}/m.nc')!r}"
                ", overwrite=True)\n"
                "print(next(line.split()[1] for line in open('/proc/self/status')"
                " if line.startswith('VmHWM')))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True)
        peaks[captures] = int(proc.stdout.strip()) / 1024
        out[f"peak MiB with {captures} captures"] = peaks[captures]
    _target(out, "extra peak MiB for 10,000 captures", peaks[steps] - peaks[10], 100.0)
    return out


# ---------------------------------------------------------------- e. bandwidth


def bandwidth(quick: bool = False) -> dict:
    """heat2d 2048^2 on JAX: effective bandwidth against a STREAM-style copy in the same run."""
    n, steps = (1024, 100) if quick else (2048, 200)
    a = np.random.default_rng(0).random(4 * n * n)
    b = np.empty_like(a)
    copy_s, _ = median_seconds(lambda: np.copyto(b, a), 5)
    stream = 2 * a.nbytes / copy_s
    tmp = tempfile.mkdtemp()
    scenario = _heat(n, steps, "jax", {}, f"{tmp}/bw.nc")
    seconds, _ = median_seconds(lambda: _run(scenario), 3)
    per_step = seconds / steps
    effective = 2 * n * n * 8 / per_step  # read u, write u
    out = {"grid": n, "STREAM copy GB/s": stream / 1e9, "heat ms/step": per_step * 1e3,
           "heat effective GB/s": effective / 1e9}
    _target(out, "heat / STREAM bandwidth", effective / stream, 0.6, below=False)
    return out


# ---------------------------------------------------------------- N-body


def nbody_pairs(quick: bool = False) -> dict:
    """Direct-sum N-body, N = 4096, JAX: pair interactions per second."""
    n, steps = (2048, 3) if quick else (4096, 5)
    tmp = tempfile.mkdtemp()
    scenario = {"solver": "nbody", "backend": "jax", "params": {"bodies": n}, "steps": steps,
                "outputs": {}, "output": f"{tmp}/nb.nc", "check_finite": 0}
    seconds, _ = median_seconds(lambda: _run(scenario), 3)
    pairs = 2 * n * n * steps / seconds  # two force evaluations (kicks) per step
    out = {"bodies": n, "s/step": seconds / steps, "pairs/s": pairs}
    _target(out, "pair interactions per second", pairs, 1e9, below=False)
    return out


# ---------------------------------------------------------------- stage kernels


def _hand_numpy_heat(u0: np.ndarray, steps: int, dt_d: float) -> np.ndarray:
    """heat2d FTCS as one would write it by hand in NumPy: in place, one scratch array."""
    u = u0.copy()
    lap = np.empty_like(u)
    for _ in range(steps):
        np.multiply(u, -4.0, out=lap)
        lap[1:] += u[:-1]
        lap[:1] += u[-1:]
        lap[:-1] += u[1:]
        lap[-1:] += u[:1]
        lap[:, 1:] += u[:, :-1]
        lap[:, :1] += u[:, -1:]
        lap[:, :-1] += u[:, 1:]
        lap[:, -1:] += u[:, :1]
        lap *= dt_d
        u += lap
    return u


def heat_kernels(quick: bool = False) -> dict:
    """heat2d 512^2 and 2048^2, ms/step (runs of 2k minus runs of k steps): simkit jax and numpy
    with the stages' kernels and without (``SIMKIT_KERNELS=0``: the Array API specification), against a
    hand-written in-place NumPy loop, and JAX against a STREAM-style copy in the same run."""
    import os

    import simkit.driver

    repeats = 3 if quick else 5
    # steps per run: long enough that a run's setup is small beside its steps
    steps = {(512, "jax"): 1000 if quick else 4000, (512, "numpy"): 100 if quick else 400,
             (2048, "jax"): 40 if quick else 150, (2048, "numpy"): 8 if quick else 30}
    tmp = tempfile.mkdtemp()
    out: dict = {"repeats": repeats}
    a = np.random.default_rng(0).random(2048 * 2048)  # 32 MiB: past the caches
    b = np.empty_like(a)
    copy_s, _ = median_seconds(lambda: np.copyto(b, a), 20)
    stream = 2 * a.nbytes / copy_s
    out["STREAM copy GB/s"] = stream / 1e9
    for n in (512, 2048):
        per_step: dict[str, float] = {}
        for backend in ("jax", "numpy"):
            k = steps[n, backend]
            for label, flag in (("kernels", "1"), ("specification", "0")):
                # The driver keeps built steps per solver and parameters: forget them so the
                # flag takes effect, then one warm-up run (JAX compiles) before the timed ones.
                simkit.driver._STEPS.clear()
                os.environ["SIMKIT_KERNELS"] = flag
                try:
                    # Runs of k and 2k steps: their difference is k steps without what a run
                    # costs once (initial state, file, final write), which would swamp the
                    # few steps of a 2048^2 NumPy run.
                    short, long = (_heat(n, m, backend, {}, f"{tmp}/{backend}{n}{flag}{m}.nc")
                                   for m in (k, 2 * k))
                    medians = interleaved({"short": lambda s=short: _run(s),
                                           "long": lambda s=long: _run(s)}, repeats)
                finally:
                    os.environ.pop("SIMKIT_KERNELS", None)
                    simkit.driver._STEPS.clear()
                per_step[f"{backend} {label}"] = (medians["long"] - medians["short"]) / k
        k = steps[n, "numpy"]
        u0 = np.random.default_rng(0).standard_normal((n, n))
        seconds, _ = median_seconds(lambda u=u0, k=k: _hand_numpy_heat(u, k, 0.2), repeats)
        per_step["numpy hand-written in place"] = seconds / k
        for name, value in per_step.items():
            out[f"{n}^2 {name} ms/step"] = value * 1e3
        out[f"{n}^2 jax kernels / specification"] = per_step["jax kernels"] / per_step[
            "jax specification"]
        out[f"{n}^2 numpy kernels / specification"] = per_step["numpy kernels"] / per_step[
            "numpy specification"]
        ratio = per_step["numpy kernels"] / per_step["numpy hand-written in place"]
        out[f"{n}^2 numpy kernels / hand-written"] = ratio
        out[f"{n}^2 numpy specification / hand-written"] = per_step["numpy specification"] / \
            per_step["numpy hand-written in place"]
        effective = 2 * n * n * 8 / per_step["jax kernels"]  # read u, write u
        out[f"{n}^2 jax kernels effective GB/s"] = effective / 1e9
        _target(out, f"{n}^2 numpy kernels / hand-written", ratio, 1.2)
        if n == 2048:
            _target(out, f"{n}^2 jax kernels / STREAM copy", effective / stream, 0.5,
                    below=False)
    return out


BENCHMARKS = [framework_overhead, capture_overhead, diagnostics_every_step, peer_pypde, peer_diffrax,
              memory_vs_captures, bandwidth, nbody_pairs, heat_kernels]
