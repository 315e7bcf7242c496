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
    if not np.isfinite(measured) or measured <= 0:
        # A ratio of times or a rate is positive: a difference of medians lost in the noise
        # (runs too short for the machine) measured nothing, so nothing is met.
        outcome[f"target {name}"] = f"{measured:.3g}: not measured (within the machine's noise)"
        return
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
        return _hand_numpy_heat(u0, t_steps, dt_d)

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
    """The same three reductions every step in hand-written ``lax.scan`` loops that store them,
    against the same loops without: what the diagnostics cost the hardware, framework aside.
    Two steps: a ``jnp.roll`` stencil, and simkit's own heat2d step (its JAX kernels)."""
    import jax
    import jax.numpy as jnp

    from simkit.scenario import plan_run
    from simkit.solver import make_step

    u0 = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)))
    coef = 0.2
    plan = plan_run({"solver": "heat2d", "params": {"shape": [n, n]}, "steps": steps,
                     "backend": "jax", "output": f"{tempfile.mkdtemp()}/unused.nc"})
    kernel, dt = make_step(plan.solver, 0), jnp.asarray(plan.dt)

    def rolled(u, i):
        lap = (jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1) + jnp.roll(u, -1, 1)
               - 4 * u)
        return u + coef * lap

    def simkit_step(u, i):
        return kernel({"u": u}, dt, i, i * dt)["u"]

    def scans(step):
        def with_diags(u, i):
            u = step(u, i)
            return u, (0.5 * jnp.sum(u * u), jnp.sum(u), jnp.max(jnp.abs(u)))

        index = jnp.arange(steps)
        diags = jax.jit(lambda u: jax.lax.scan(with_diags, u, index))
        plain = jax.jit(lambda u: jax.lax.scan(lambda u, i: (step(u, i), None), u, index))
        return (lambda: jax.block_until_ready(diags(u0)),
                lambda: jax.block_until_ready(plain(u0)))

    (roll_diags, roll_none), (kernel_diags, kernel_none) = scans(rolled), scans(simkit_step)
    return {"diagnostics": roll_diags, "none": roll_none,
            "kernel diagnostics": kernel_diags, "kernel none": kernel_none}


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
        u0 = np.random.default_rng(0).standard_normal((n, n))
        for name, loop in (("numpy", _hand_numpy_heat), ("torch", _hand_torch_heat)):
            by_hand = interleaved({
                "diagnostics": lambda f=loop, u=u0: f(u, steps // 2, 0.2, diagnostics=True),
                "none": lambda f=loop, u=u0: f(u, steps // 2, 0.2)}, repeats)
            out[f"{n}^2 hand-written {name} loop, in place: diagnostics / none"] = \
                by_hand["diagnostics"] / by_hand["none"]
        hand = interleaved(_hand_jax_diagnostics(n, steps), repeats)
        out[f"{n}^2 hand-written jax scan, roll stencil: diagnostics / none"] = \
            hand["diagnostics"] / hand["none"]
        out[f"{n}^2 hand-written jax scan, simkit's heat2d step: diagnostics / none"] = \
            hand["kernel diagnostics"] / hand["kernel none"]
    return out


def summaries_every_step(quick: bool = False) -> dict:
    """heat2d 256^2: summaries of u every step (mean, std, max, a 32-bin histogram; quantiles
    apart, they sort the field) against 3 scalar diagnostics every step, on every backend."""
    steps, repeats = (400, 2) if quick else (2000, 3)
    out: dict = {"steps": steps}
    tmp = tempfile.mkdtemp()
    streams = {
        "diagnostics": {"d": {"every": 1, "diagnostics": ["energy", "heat", "max_abs"]}},
        "summaries": {"s": {"every": 1, "summaries": {"u": [
            "mean", "std", "max", {"histogram": {"bins": 32, "range": [-1, 1]}}]}}},
        "quantiles": {"q": {"every": 1, "summaries": {"u": [{"quantiles": [0.1, 0.5, 0.9]}]}}},
    }
    for backend in ("jax", "numpy", "torch"):
        runs = {name: _heat(256, steps, backend, outputs, f"{tmp}/{backend}_{name}.nc")
                for name, outputs in streams.items()}
        times = interleaved({name: (lambda r=r: _run(r)) for name, r in runs.items()}, repeats)
        for name, seconds in times.items():
            out[f"{backend} {name} every step ms/step"] = seconds / steps * 1e3
        _target(out, f"{backend} summaries / diagnostics", times["summaries"]
                / times["diagnostics"], 3.0)
    return out


def _write_alone(n: int, captures: int, path: str) -> float:
    from simkit.io import BackgroundWriter, open_writer, schema

    layout = schema.RunLayout(
        coordinates=(schema.CoordinateSpec("y", np.arange(n, dtype=float), "m", "y"),
                     schema.CoordinateSpec("x", np.arange(n, dtype=float), "m", "x")),
        fields=(schema.VariableSpec("u", ("y", "x"), "K", "u"),),
        streams=(schema.StreamSpec("s", (schema.VariableSpec("u", ("y", "x"), "K", "u"),), ()),),
        time_units="s")
    data = np.random.default_rng(1).standard_normal((n, n))

    def write():
        Path(path).unlink(missing_ok=True)
        writer = BackgroundWriter(open_writer(path, layout, {}))
        for i in range(captures):
            writer.capture("s", i, float(i), {"u": data})
        writer.close()

    seconds, _ = median_seconds(write, 3)
    return seconds


# ---------------------------------------------------------------- c. peers


def _peer(module: str, package: str):
    """A peer library for comparison, or Skip naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise Skip(f"{package} not installed ({error}); pip install {package}") from None


def _lorenz_field(t, y, rho):
    """Lorenz-63 (sigma 10, beta 8/3) in diffrax's form, on (3, batch) JAX arrays."""
    import jax.numpy as jnp

    x, yy, z = y
    return jnp.stack([10.0 * (yy - x), x * (rho - z) - yy, x * yy - 8.0 / 3.0 * z])


def peer_pypde(quick: bool = False) -> dict:
    """py-pde (numba) against simkit JAX on the same heat problem and capture interval."""
    pde = _peer("pde", "py-pde")
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


def _diffrax_rk4(diffrax):
    """Classic RK4 as a diffrax solver class: the same method as simkit's lorenz63."""

    class RK4(diffrax.AbstractERK):
        tableau = diffrax.ButcherTableau(
            c=np.array([0.5, 0.5, 1.0]), b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
            b_error=np.zeros(4),
            a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])))
        interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

        def order(self, terms):
            return 4

    return RK4


def _hand_lorenz(steps: int, every: int, dt: float):
    """The same RK4 steps and saves as simkit's lorenz63, as a hand-written ``lax.scan``: saves
    along an outer scan, the steps between two saves in an inner loop; nothing written to a
    file. Jitted, ``(3, batch) -> (final, saves)``."""
    import jax

    def rk4(y, _):
        k1 = _lorenz_field(0.0, y, 28.0)
        k2 = _lorenz_field(0.0, y + 0.5 * dt * k1, 28.0)
        k3 = _lorenz_field(0.0, y + 0.5 * dt * k2, 28.0)
        k4 = _lorenz_field(0.0, y + dt * k3, 28.0)
        return y + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    @jax.jit
    def by_hand(y0):
        def save(y, _):
            y = jax.lax.fori_loop(0, every, lambda i, y: rk4(y, i), y)
            return y, y
        return jax.lax.scan(save, y0, None, length=steps // every)

    return by_hand


def _hand_lorenz_seconds(y0, steps: int, every: int, dt: float, repeats: int) -> float:
    import jax

    by_hand = _hand_lorenz(steps, every, dt)
    jax.block_until_ready(by_hand(y0))
    hand, _ = median_seconds(lambda: jax.block_until_ready(by_hand(y0)), repeats, warmup=0)
    return hand


def lorenz_rk4(quick: bool = False) -> dict:
    """Lorenz-63, 1000 trajectories, RK4, saves every 100 steps: simkit JAX (with its file)
    against a hand-written lax.scan of the same steps and saves, interleaved in one run."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    batch, steps, every, dt, repeats = (1000, 10_000, 100, 0.001, 5) if quick else (
        1000, 100_000, 100, 0.001, 5)
    rng = np.random.default_rng(0)
    y0 = jnp.asarray(np.stack([1 + 0.1 * rng.standard_normal(batch) for _ in range(3)]))
    by_hand = _hand_lorenz(steps, every, dt)
    tmp = tempfile.mkdtemp()
    scenario = {"solver": "lorenz63", "backend": "jax", "params": {"trajectories": batch},
                "initial": {"spread": 0.1}, "steps": steps, "dt": dt, "check_finite": 0,
                "outputs": {"s": {"every": every, "fields": "all"}}, "output": f"{tmp}/l.nc"}
    medians = interleaved({"hand": lambda: jax.block_until_ready(by_hand(y0)),
                           "simkit": lambda: _run(scenario)}, repeats)
    out = {"trajectories": batch, "steps": steps, "saves every": every,
           "hand-written lax.scan s (no file)": medians["hand"],
           "simkit jax s (with file)": medians["simkit"]}
    _target(out, "simkit / hand-written lax.scan", medians["simkit"] / medians["hand"], 1.1)
    return out


def peer_diffrax(quick: bool = False) -> dict:
    """Lorenz-63, 1000 trajectories, fixed-step RK4, saves every 100 steps: diffrax vs simkit."""
    diffrax = _peer("diffrax", "diffrax")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # as simkit's runs: float64 on both sides
    batch, steps, every, dt = (1000, 10_000, 100, 0.001) if quick else (1000, 100_000, 100, 0.001)
    RK4 = _diffrax_rk4(diffrax)
    rng = np.random.default_rng(0)
    y0 = jnp.asarray(np.stack([1 + 0.1 * rng.standard_normal(batch) for _ in range(3)]))

    ts = jnp.asarray(np.minimum(np.arange(0, steps + 1, every) * dt, steps * dt))

    @jax.jit
    def solve(y0):
        one = lambda y: diffrax.diffeqsolve(  # noqa: E731
            diffrax.ODETerm(_lorenz_field), RK4(), 0.0, steps * dt, dt, y, args=28.0,
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

    hand = _hand_lorenz_seconds(y0, steps, every, dt, 3)
    out = {"trajectories": batch, "steps": steps, "diffrax s": theirs,
           "diffrax compile s": compile_s, "simkit jax s (with file)": ours,
           "hand-written lax.scan s (no file)": hand}
    _target(out, "simkit speed-up over diffrax", theirs / ours, 5.0, below=False)
    _target(out, "simkit / hand-written lax.scan", ours / hand, 1.1)
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


def _seconds_per_step(scenario_for, k: int, repeats: int, kernels: bool = True,
                      env: dict | None = None) -> float:
    """Seconds per step of a simkit run, with the stages' kernels or by their specification
    (``SIMKIT_KERNELS=0``), under the environment variables ``env`` besides: runs of k and 2k
    steps, interleaved, the difference of their medians over k, so that what a run costs once
    (initial state, file, compile) drops out."""
    import os

    import simkit.driver

    # The driver keeps built steps per solver and parameters: forget them so the flags count.
    simkit.driver._steps._STEPS.clear()
    variables = {"SIMKIT_KERNELS": "1" if kernels else "0", **(env or {})}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        short, long = scenario_for(k), scenario_for(2 * k)
        medians = interleaved({"short": lambda: _run(short), "long": lambda: _run(long)},
                              repeats)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        simkit.driver._steps._STEPS.clear()
    return (medians["long"] - medians["short"]) / k


def _jax_force_seconds(n: int, repeats: int) -> float:
    """Median seconds of one jitted call of the JAX pair kernel on a Plummer sphere of ``n``
    bodies, ten calls a sample (the reference a step's single force evaluation is held to)."""
    import jax

    from solvers import _pairs
    from solvers.nbody import NBody, NBodyInitial, NBodyParams

    jax.config.update("jax_enable_x64", True)
    solver = NBody(NBodyParams(bodies=n))
    state = solver.initial_state(NBodyInitial(), np.random.default_rng(0))
    x, mass = jax.numpy.asarray(state["x"]), jax.numpy.asarray(state["mass"])
    eps2 = solver.params.softening ** 2
    ten = jax.jit(lambda x: jax.lax.fori_loop(0, 10, lambda i, y: y + 1e-9 * _pairs.acceleration_jax(
        y, mass, 1.0, eps2), x))
    seconds, _ = median_seconds(lambda: ten(x).block_until_ready(), repeats)
    return seconds / 10


def nbody_pairs(quick: bool = False) -> dict:
    """Direct-sum N-body, N = 4096: pair interactions per second (N^2 a step) on every backend,
    with the tiled kernels and (JAX) by the Array API specification, and a step against one
    force evaluation alone (the acceleration is carried: one evaluation a step), in one run."""
    n, repeats = (2048, 3) if quick else (4096, 3)
    steps = {"jax": 10, "torch": 1, "numpy": 2}
    tmp = tempfile.mkdtemp()
    out: dict = {"bodies": n, "repeats": repeats}

    def scenario_for(backend: str):
        return lambda k: {"solver": "nbody", "backend": backend, "params": {"bodies": n},
                          "steps": k, "outputs": {}, "output": f"{tmp}/nb_{backend}_{k}.nc",
                          "check_finite": 0}

    rates = {}
    runs = [(b, True) for b in ("jax", "torch", "numpy")] + [("jax", False)]
    for backend, kernels in runs:
        k = steps[backend] if kernels else 1
        try:
            seconds = _seconds_per_step(scenario_for(backend), k, repeats, kernels)
        except ImportError as missing:
            out[f"{backend} skipped"] = str(missing)
            continue
        label = f"{backend} {'kernels' if kernels else 'specification'}"
        rates[label] = n * n / seconds  # one force evaluation per step (carried to the next)
        out[f"{label} ms/step"] = seconds * 1e3
        out[f"{label} pairs/s"] = rates[label]
    if "jax specification" in rates:
        out["jax kernels / specification (speed-up)"] = \
            rates["jax kernels"] / rates["jax specification"]
    alone = _jax_force_seconds(n, repeats)
    out["jax one force evaluation alone ms"] = alone * 1e3
    out["jax simkit step / one force evaluation"] = n * n / rates["jax kernels"] / alone
    _target(out, "jax pair interactions per second", rates["jax kernels"], 1e9, below=False)
    return out


# ---------------------------------------------------------------- stage kernels


def _add_neighbours(lap, u) -> None:
    """``lap += `` the four periodic neighbours of ``u``, in place: NumPy arrays and torch
    tensors alike."""
    lap[1:] += u[:-1]
    lap[:1] += u[-1:]
    lap[:-1] += u[1:]
    lap[-1:] += u[:1]
    lap[:, 1:] += u[:, :-1]
    lap[:, :1] += u[:, -1:]
    lap[:, :-1] += u[:, 1:]
    lap[:, -1:] += u[:, :1]


def _reductions(u) -> tuple:
    """heat2d's three diagnostics as written by hand (NumPy arrays and torch tensors alike)."""
    return 0.5 * (u * u).sum(), u.sum(), abs(u).max()


def _hand_numpy_heat(u0: np.ndarray, steps: int, dt_d: float, diagnostics: bool = False
                     ) -> np.ndarray:
    """heat2d FTCS as one would write it by hand in NumPy: in place, one scratch array (with
    ``diagnostics``, heat2d's three reductions every step, kept)."""
    u = u0.copy()
    lap = np.empty_like(u)
    kept = np.empty((steps, 3))
    for i in range(steps):
        np.multiply(u, -4.0, out=lap)
        _add_neighbours(lap, u)
        lap *= dt_d
        u += lap
        if diagnostics:
            kept[i, 0], kept[i, 1], kept[i, 2] = _reductions(u)
    return u


def _hand_torch_heat(u0: np.ndarray, steps: int, dt_d: float, diagnostics: bool = False):
    """heat2d FTCS by hand in torch: in place, one scratch tensor (``_hand_numpy_heat``)."""
    import torch

    with torch.inference_mode():
        u = torch.tensor(u0)
        lap = torch.empty_like(u)
        kept = torch.empty((steps, 3), dtype=u.dtype)
        for i in range(steps):
            torch.mul(u, -4.0, out=lap)
            _add_neighbours(lap, u)
            u.add_(lap, alpha=dt_d)
            if diagnostics:
                kept[i, 0], kept[i, 1], kept[i, 2] = _reductions(u)
    return u


def _hand_numba_heat():
    """heat2d FTCS by hand in numba: one fused parallel pass a step (read u, write the other
    array), no scratch; None without numba."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True)
    def sweep(u, out, c):
        ny, nx = u.shape
        for i in numba.prange(ny):
            up, down, row, new = u[(i - 1) % ny], u[(i + 1) % ny], u[i], out[i]
            new[0] = row[0] + c * (up[0] + down[0] + row[nx - 1] + row[1] - 4 * row[0])
            for j in range(1, nx - 1):
                new[j] = row[j] + c * (up[j] + down[j] + row[j - 1] + row[j + 1] - 4 * row[j])
            new[nx - 1] = row[nx - 1] + c * (up[nx - 1] + down[nx - 1] + row[nx - 2] + row[0]
                                             - 4 * row[nx - 1])

    def run(u0: np.ndarray, steps: int, dt_d: float) -> np.ndarray:
        u, other = u0.copy(), np.empty_like(u0)
        for _ in range(steps):
            sweep(u, other, dt_d)
            u, other = other, u
        return u

    return run


def heat_kernels(quick: bool = False) -> dict:
    """heat2d 512^2 and 2048^2, ms/step (runs of 2k minus runs of k steps): simkit jax, numpy and
    torch with the stages' kernels and without (``SIMKIT_KERNELS=0``: the Array API
    specification), against hand-written in-place NumPy and torch loops; the NumPy kernels with
    the numba extra against a hand-written numba loop; JAX against a STREAM-style copy; all in
    the same run."""
    repeats = 3 if quick else 5
    # steps per run: long enough that a run's setup is small beside its steps
    steps = {(512, "jax"): 1000 if quick else 4000, (512, "numpy"): 100 if quick else 400,
             (512, "torch"): 100 if quick else 400,
             (2048, "jax"): 40 if quick else 150, (2048, "numpy"): 8 if quick else 30,
             (2048, "torch"): 8 if quick else 30}
    tmp = tempfile.mkdtemp()
    out: dict = {"repeats": repeats}
    a = np.random.default_rng(0).random(2048 * 2048)  # 32 MiB: past the caches
    b = np.empty_like(a)
    copy_s, _ = median_seconds(lambda: np.copyto(b, a), 20)
    stream = 2 * a.nbytes / copy_s
    out["STREAM copy GB/s"] = stream / 1e9
    hand_numba = _hand_numba_heat()
    for n in (512, 2048):
        per_step: dict[str, float] = {}
        for backend in ("jax", "numpy", "torch"):
            k = steps[n, backend]
            for label, kernels in (("kernels", True), ("specification", False)):
                per_step[f"{backend} {label}"] = _seconds_per_step(
                    lambda m, b=backend, f=kernels, n=n: _heat(n, m, b, {},
                                                               f"{tmp}/{b}{n}{f}{m}.nc"),
                    k, repeats, kernels, env={"SIMKIT_NUMBA": "0"})
        if hand_numba is not None:
            per_step["numpy kernels with numba"] = _seconds_per_step(
                lambda m, n=n: _heat(n, m, "numpy", {}, f"{tmp}/numba{n}{m}.nc"),
                steps[n, "jax"] // 4, repeats, True, env={"SIMKIT_NUMBA": "always"})
            k = steps[n, "jax"] // 4
            hand_numba(np.zeros((n, n)), 1, 0.2)  # compiles
            u0 = np.random.default_rng(0).standard_normal((n, n))
            seconds, _ = median_seconds(lambda k=k, u=u0: hand_numba(u, k, 0.2), repeats)
            per_step["numba hand-written"] = seconds / k
        u0 = np.random.default_rng(0).standard_normal((n, n))
        for backend, hand in (("numpy", _hand_numpy_heat), ("torch", _hand_torch_heat)):
            k = steps[n, backend]
            seconds, _ = median_seconds(lambda u=u0, k=k, h=hand: h(u, k, 0.2), repeats)
            per_step[f"{backend} hand-written in place"] = seconds / k
        for name, value in per_step.items():
            out[f"{n}^2 {name} ms/step"] = value * 1e3
        for backend in ("jax", "numpy", "torch"):
            out[f"{n}^2 {backend} kernels / specification"] = \
                per_step[f"{backend} kernels"] / per_step[f"{backend} specification"]
        for backend in ("numpy", "torch"):
            hand = per_step[f"{backend} hand-written in place"]
            ratio = per_step[f"{backend} kernels"] / hand
            out[f"{n}^2 {backend} kernels / hand-written"] = ratio
            out[f"{n}^2 {backend} specification / hand-written"] = \
                per_step[f"{backend} specification"] / hand
            _target(out, f"{n}^2 {backend} kernels / hand-written", ratio, 1.2)
        if hand_numba is not None:
            ratio = per_step["numpy kernels with numba"] / per_step["numba hand-written"]
            out[f"{n}^2 numpy kernels with numba / hand-written numba"] = ratio
            _target(out, f"{n}^2 numpy kernels with numba / hand-written numba", ratio, 1.5)
        effective = 2 * n * n * 8 / per_step["jax kernels"]  # read u, write u
        out[f"{n}^2 jax kernels effective GB/s"] = effective / 1e9
        if n == 2048:
            _target(out, f"{n}^2 jax kernels / STREAM copy", effective / stream, 0.5,
                    below=False)
    return out


def torch_compile(quick: bool = False) -> dict:
    """heat2d 512^2 on torch, ms/step (runs of 2k minus runs of k steps): simkit eager, simkit
    with ``compile: true`` and a hand-written loop of a ``torch.compile``-d step, in one process
    (the GPU where there is one), and what compiling costs once."""
    import torch

    import simkit.driver

    n, k, repeats = (256, 100, 3) if quick else (512, 1000, 7)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"grid": n, "steps k": k, "repeats": repeats, "device": str(device)}
    tmp = tempfile.mkdtemp()
    dt_d = 0.8 * 0.25  # the solver's default dt * D / h^2

    def scenario(compile_: bool):
        def make(m: int) -> dict:
            return {**_heat(n, m, "torch", {}, f"{tmp}/t{compile_}{m}.nc"), "device": "auto",
                    "compile": compile_}
        return make

    # Compiling once: a first compiled run from scratch against the same run compiled.
    simkit.driver._steps._STEPS.clear()
    start = time.perf_counter()
    _run(scenario(True)(k))
    first = time.perf_counter() - start
    again, _ = median_seconds(lambda: _run(scenario(True)(k)), repeats, warmup=0)
    out["simkit compiled: compile s (first run - median)"] = first - again
    per_step = {label: _seconds_per_step(scenario(flag), k, repeats)
                for label, flag in (("simkit eager", False), ("simkit compiled", True))}

    def hand_step(u):
        return u + dt_d * (torch.roll(u, 1, 0) + torch.roll(u, -1, 0) + torch.roll(u, 1, 1)
                           + torch.roll(u, -1, 1) - 4 * u)

    compiled_step = torch.compile(hand_step, dynamic=False)
    u0 = np.random.default_rng(0).standard_normal((n, n))

    def hand(m: int):
        with torch.inference_mode():
            u = torch.tensor(u0, device=device)
            for _ in range(m):
                u = compiled_step(u)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return u

    start = time.perf_counter()
    hand(1)
    out["hand-written compiled: compile s"] = time.perf_counter() - start
    medians = interleaved({"short": lambda: hand(k), "long": lambda: hand(2 * k)}, repeats)
    per_step["hand-written compiled"] = (medians["long"] - medians["short"]) / k
    for label, seconds in per_step.items():
        out[f"{label} ms/step"] = seconds * 1e3
    hand_s = per_step["hand-written compiled"]
    out["simkit compiled / simkit eager"] = per_step["simkit compiled"] / per_step["simkit eager"]
    out["simkit compiled / hand-written compiled"] = per_step["simkit compiled"] / hand_s
    out["simkit eager / hand-written compiled"] = per_step["simkit eager"] / hand_s
    _target(out, "simkit compiled / hand-written compiled", per_step["simkit compiled"] / hand_s,
            1.2)
    return out


def cavity_kernels(quick: bool = False) -> dict:
    """Lid-driven cavity (D2Q9 lattice Boltzmann) 256^2 and 512^2, ms/step (runs of 2k minus runs
    of k steps): jax, numpy and torch with the stages' kernels and by the Array API specification
    (``SIMKIT_KERNELS=0``), all in the same run."""
    repeats = 3 if quick else 5
    sizes = (128, 256) if quick else (256, 512)
    # steps per run (k) by backend and kernels, at the smaller size; a quarter of it at the larger
    steps = {("jax", True): 100 if quick else 200, ("jax", False): 20 if quick else 40,
             ("numpy", True): 20 if quick else 60, ("numpy", False): 10 if quick else 30,
             ("torch", True): 20 if quick else 60, ("torch", False): 10 if quick else 30}
    tmp = tempfile.mkdtemp()
    out: dict = {"repeats": repeats}

    def scenario_for(n: int, backend: str, kernels: bool):
        return lambda m: {"solver": "cavity_lbm", "backend": backend, "params": {"size": n},
                          "steps": m, "outputs": {}, "check_finite": 0,
                          "output": f"{tmp}/cavity_{backend}{n}{kernels}{m}.nc"}

    for n in sizes:
        per_step: dict[str, float] = {}
        for backend in ("jax", "numpy", "torch"):
            for label, kernels in (("kernels", True), ("specification", False)):
                k = max(2, steps[backend, kernels] // (1 if n == sizes[0] else 4))
                try:
                    per_step[f"{backend} {label}"] = _seconds_per_step(
                        scenario_for(n, backend, kernels), k, repeats, kernels)
                except ImportError as missing:
                    out[f"{backend} skipped"] = str(missing)
                    break
        for name, seconds in per_step.items():
            out[f"{n}^2 {name} ms/step"] = seconds * 1e3
        for backend in ("jax", "numpy", "torch"):
            if f"{backend} specification" in per_step:
                out[f"{n}^2 {backend} kernels / specification"] = \
                    per_step[f"{backend} kernels"] / per_step[f"{backend} specification"]
        # populations read and written, velocities read (2) and written (4, with the previous)
        moved = n * n * 8 * (2 * 9 + 6)
        out[f"{n}^2 jax kernels effective GB/s"] = moved / per_step["jax kernels"] / 1e9
    largest = sizes[-1]
    _target(out, f"{largest}^2 jax kernels / specification",
            out[f"{largest}^2 jax kernels / specification"], 0.5)
    return out


# ---------------------------------------------------------------- gradients (DESIGN D10)


def _compiled_bytes(fn, *args) -> float | None:
    """What XLA plans to hold for one call of ``fn`` beyond its inputs (temporaries and
    outputs), in bytes; None where the backend does not say."""
    stats = fn.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    return float(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def gradient_checkpointing(quick: bool = False) -> dict:
    """Gradient of a heat2d 256^2 run of 10^4 steps (JAX) against the run: sqrt checkpointing,
    and binomial checkpointing over 20 stored states."""
    import jax
    import jax.numpy as jnp

    from simkit.autodiff import Checkpointing, run_function

    n, steps, repeats, slots = (64, 400, 3, 20) if quick else (256, 10_000, 3, 20)
    tmp = tempfile.mkdtemp()
    scenario = _heat(n, steps, "jax", {}, f"{tmp}/g.nc")
    binomial = {"binomial": slots}
    runs = {"sqrt": run_function(scenario, backend="jax", checkpoint="sqrt"),
            "binomial": run_function(scenario, backend="jax", checkpoint=binomial)}
    p0, f0 = runs["sqrt"].initial_params(), runs["sqrt"].initial_fields()

    def loss_of(run):
        def loss(p, f):
            return jnp.sum(run(p, f)[0]["u"] ** 2)
        return loss

    forward = jax.jit(loss_of(runs["sqrt"]))
    gradients = {name: jax.jit(jax.value_and_grad(loss_of(run), argnums=(0, 1)))
                 for name, run in runs.items()}
    compile_s = {}
    for name, gradient in gradients.items():
        start = time.perf_counter()
        jax.block_until_ready(gradient(p0, f0))
        compile_s[name] = time.perf_counter() - start
    times = interleaved({
        "run": lambda: _run(scenario),
        "forward": lambda: jax.block_until_ready(forward(p0, f0)),
        "gradient": lambda: jax.block_until_ready(gradients["sqrt"](p0, f0)),
        "binomial": lambda: jax.block_until_ready(gradients["binomial"](p0, f0)),
    }, repeats)
    state = n * n * 8
    held = {name: _compiled_bytes(fn, p0, f0) for name, fn in
            (("forward", forward), ("gradient", gradients["sqrt"]),
             ("binomial", gradients["binomial"]))}
    policy, revolve = Checkpointing.parse("sqrt"), Checkpointing.parse(binomial)
    out: dict = {"grid": f"{n}x{n}", "steps": steps, "simkit.run s": times["run"],
                 "forward function s": times["forward"], "gradient s": times["gradient"],
                 "gradient compile s": compile_s["sqrt"],
                 "states held by policy": policy.states_held(steps),
                 "store-everything states": steps + 1,
                 "store-everything MiB": (steps + 1) * state / 2**20,
                 "binomial slots": slots, "binomial gradient s": times["binomial"],
                 "binomial gradient compile s": compile_s["binomial"],
                 "binomial states held by policy": revolve.states_held(steps),
                 "binomial recomputed steps": revolve.schedule(steps).recomputed_steps}
    out["gradient time / simkit.run time"] = times["gradient"] / times["run"]
    # Gated on the forward function (the same steps, no file): simkit.run's file set-up would
    # flatter the ratio of a short run.
    _target(out, "gradient time / forward time", times["gradient"] / times["forward"], 4.0)
    out["binomial gradient time / forward time"] = times["binomial"] / times["forward"]
    out["binomial time / sqrt time"] = times["binomial"] / times["gradient"]
    if held["gradient"] is not None:
        extra = (held["gradient"] - held["forward"]) / state
        out["forward planned MiB"] = held["forward"] / 2**20
        out["gradient planned MiB"] = held["gradient"] / 2**20
        out["extra states held (measured)"] = extra
        _target(out, "extra states held / (2 sqrt n + 8)", extra / (2 * steps**0.5 + 8), 1.0)
    if held["binomial"] is not None:
        extra = (held["binomial"] - held["forward"]) / state
        out["binomial gradient planned MiB"] = held["binomial"] / 2**20
        out["binomial extra states held (measured)"] = extra
        _target(out, "binomial extra states held / (states held by policy + 8)",
                extra / (revolve.states_held(steps) + 8), 1.0)
    return out


def gradient_reusing_checkpoints(quick: bool = False) -> dict:
    """``simkit.value_and_grad`` writing its run file (heat2d 256^2, 10^4 steps, JAX, sqrt):
    with a checkpoint stream every 100 steps, whose states the backward pass starts its
    segments from, against the same without one (the gradient runs the steps forward itself),
    both against ``simkit.run`` of the scenario with the checkpoints. As a user runs them:
    compilation included."""
    import jax.numpy as jnp

    from simkit.autodiff import Checkpointing, value_and_grad

    n, steps, every, repeats = (64, 400, 20, 3) if quick else (256, 10_000, 100, 3)
    tmp = tempfile.mkdtemp()
    kept = _heat(n, steps, "jax", {"checkpoint": {"every": every, "fields": "all"}},
                 f"{tmp}/kept.nc")
    bare = _heat(n, steps, "jax", {}, f"{tmp}/bare.nc")

    def energy(final, captures):
        return 0.5 * jnp.sum(final["u"] ** 2)

    found = {}

    def gradient(scenario):
        result = value_and_grad(scenario, energy, ["diffusivity", "u"], overwrite=True,
                                output=scenario["output"])
        found[scenario["output"]] = result.grad["diffusivity"]

    times = interleaved({"run": lambda: _run(kept), "reusing": lambda: gradient(kept),
                         "without": lambda: gradient(bare)}, repeats)
    out: dict = {"grid": f"{n}x{n}", "steps": steps, "checkpoint every": every,
                 "simkit.run s": times["run"], "gradient reusing checkpoints s": times["reusing"],
                 "gradient without checkpoints s": times["without"],
                 "dL/dD reusing": found[kept["output"]], "dL/dD without": found[bare["output"]]}
    policy = Checkpointing.parse("sqrt")
    out["states held on the device, reusing (one segment)"] = policy.states_held(every)
    out["states held on the device, without (whole run)"] = policy.states_held(steps)
    out["gradient without / reusing"] = times["without"] / times["reusing"]
    out["gradient without checkpoints / run"] = times["without"] / times["run"]
    _target(out, "gradient reusing checkpoints / run", times["reusing"] / times["run"], 4.0)
    return out


def peer_diffrax_gradient(quick: bool = False) -> dict:
    """Batched Lorenz-63 gradient: diffrax RecursiveCheckpointAdjoint against simkit (JAX)."""
    diffrax = _peer("diffrax", "diffrax")
    import jax
    import jax.numpy as jnp

    from simkit.autodiff import run_function

    batch, steps, dt = (1000, 1000, 0.001) if quick else (1000, 10_000, 0.001)
    tmp = tempfile.mkdtemp()
    run = run_function({"solver": "lorenz63", "backend": "jax",
                        "params": {"trajectories": batch}, "initial": {"spread": 0.1},
                        "steps": steps, "dt": dt, "output": f"{tmp}/l.nc"}, backend="jax")
    p0, f0 = run.initial_params(), run.initial_fields()

    def ours(rho, f):
        final = run({**p0, "rho": rho}, f)[0]
        return sum(jnp.sum(final[k] ** 2) for k in ("x", "y", "z"))

    rk4 = _diffrax_rk4(diffrax)

    def theirs(rho, f):
        y0 = jnp.stack([f["x"], f["y"], f["z"]])

        def one(y):
            return diffrax.diffeqsolve(
                diffrax.ODETerm(_lorenz_field), rk4(), 0.0, steps * dt, dt, y, args=rho,
                saveat=diffrax.SaveAt(t1=True), max_steps=steps + 10,
                adjoint=diffrax.RecursiveCheckpointAdjoint()).ys[-1]

        return jnp.sum(jax.vmap(one, in_axes=1, out_axes=1)(y0) ** 2)

    fns = {name: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
           for name, fn in (("simkit", ours), ("diffrax", theirs))}
    rho = p0["rho"]
    values = {name: fn(rho, f0) for name, fn in fns.items()}
    times = interleaved({name: (lambda fn=fn: jax.block_until_ready(fn(rho, f0)))
                         for name, fn in fns.items()}, 3, warmup=0)
    out: dict = {"trajectories": batch, "steps": steps,
                 "simkit gradient s": times["simkit"], "diffrax gradient s": times["diffrax"],
                 "d/drho relative difference": abs(float(values["simkit"][1][0])
                                                   - float(values["diffrax"][1][0]))
                 / abs(float(values["diffrax"][1][0]))}
    for name, fn in fns.items():
        held = _compiled_bytes(fn, rho, f0)
        if held is not None:
            out[f"{name} planned MiB"] = held / 2**20
    _target(out, "simkit gradient speed-up over diffrax", times["diffrax"] / times["simkit"],
            1.0, below=False)
    return out


# ---------------------------------------------------------------- sharded runs


def sharded_runs(quick: bool = False) -> dict:
    """A run split over 4 forced CPU devices (2 x 2 mesh): what one step exchanges (from the
    compiled HLO's collectives) and the same-run capture cost with and without the split. On 2
    cores forced devices say nothing about speed; this measures communication and capture cost."""
    import json
    import os

    script = Path(__file__).resolve().parent.parent / "tests" / "sharded_runs.py"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    tmp = tempfile.mkdtemp()
    out: dict = {}

    def child(*args: str) -> dict:
        proc = subprocess.run([sys.executable, str(script), *args, tmp], capture_output=True,
                              text=True, env=env, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    for name, found in child("bench_communication").items():
        out[f"{name} collectives per step"] = found["collectives"]
        out[f"{name} KiB received per device per step"] = (
            found["bytes received per device per step"] / 1024)
        out[f"{name} part per device"] = found["shards"][0]
    times = child("bench_capture_cost")
    one = times["1 devices with captures"] / times["1 devices without captures"]
    four = times["4 devices with captures"] / times["4 devices without captures"]
    out.update({"capture cost ratio, 1 device": one, "capture cost ratio, 4 devices": four})
    _target(out, "4-device capture ratio over 1-device capture ratio", four / one, 1.5)
    return out


BENCHMARKS = [framework_overhead, capture_overhead, diagnostics_every_step, summaries_every_step,
              peer_pypde, peer_diffrax, lorenz_rk4,
              memory_vs_captures, bandwidth, nbody_pairs, heat_kernels, torch_compile,
              cavity_kernels,
              sharded_runs,
              gradient_checkpointing, gradient_reusing_checkpoints, peer_diffrax_gradient]
