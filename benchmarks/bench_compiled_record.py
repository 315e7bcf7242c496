"""``simkit.record`` inside a user's own compiled loop: a jitted ``lax.scan`` heat loop and a
``torch.compile``d one, recorded against the same loop without recording, against returning the
trajectory from ``lax.scan`` and writing it with xarray afterwards, and against an unbuffered
``jax.debug.callback`` per step writing with netCDF4; memory against the number of captures."""

from __future__ import annotations

import os
import tempfile
import tracemalloc

import numpy as np
from cases import _target, interleaved

import simkit

_DT_D = 0.2  # diffusivity * dt / h^2 of the users' explicit heat step


def _jax_step(u):
    import jax.numpy as jnp

    return u + _DT_D * (jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1)
                        + jnp.roll(u, -1, 1) - 4 * u)


def _scalars(u):
    import jax.numpy as jnp

    return jnp.sum(u * u), jnp.max(jnp.abs(u)), jnp.mean(u)


class _JaxLoops:
    """The user's jitted heat loop, ``steps`` steps per call, continuing its step count from
    call to call (one recorder per variant: compiled once, timed after a warm-up)."""

    def __init__(self, n: int, steps: int, folder: str) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.steps = jax, jnp, steps
        self.folder = tempfile.mkdtemp(dir=folder)
        self.u0 = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
        self.calls = 0

    def _steps(self):
        start = self.calls * self.steps
        self.calls += 1
        return self.jnp.arange(start, start + self.steps, dtype=self.jnp.int32)

    def bare(self):
        run = self.jax.jit(lambda u, xs: self.jax.lax.scan(
            lambda v, i: (_jax_step(v), None), u, xs)[0])
        return lambda: run(self.u0, self._steps()).block_until_ready()

    def recorded(self, outputs: dict, scalars: bool):
        rec = simkit.record(os.path.join(self.folder, f"r{len(outputs)}{scalars}.nc"), outputs)

        def body(u, i):
            u = _jax_step(u)
            extra = dict(zip(("energy", "umax", "mean"), _scalars(u), strict=True)) \
                if scalars else {}
            rec.step(i, u=u, **extra)
            return u, None

        run = self.jax.jit(lambda u, xs: rec.scan(body, u, xs)[0])
        return rec, lambda: run(self.u0, self._steps()).block_until_ready()

    def trajectory(self, every: int):
        """The alternative: the trajectory returned from the scan, written with xarray."""
        import xarray as xr

        jax = self.jax

        def outer(u, _):
            def inner(v, _):
                v = _jax_step(v)
                return v, _scalars(v)
            u, small = jax.lax.scan(inner, u, None, length=every)
            return u, (u, small)

        run = jax.jit(lambda u: jax.lax.scan(outer, u, None, length=self.steps // every)[1])

        def go():
            fields, (energy, umax, mean) = run(self.u0)
            path = os.path.join(self.folder, f"traj{self.calls}.nc")
            self.calls += 1
            xr.Dataset({"u": (("capture", "x", "y"), np.asarray(fields)),
                        "energy": ("step", np.asarray(energy).ravel()),
                        "umax": ("step", np.asarray(umax).ravel()),
                        "mean": ("step", np.asarray(mean).ravel())}).to_netcdf(path)
            os.remove(path)
        return go

    def debug_callback(self, every: int):
        """The alternative: an unbuffered ``jax.debug.callback`` per step, writing with
        netCDF4 (the scalars every step, the field every ``every`` steps)."""
        import netCDF4

        jax, n = self.jax, self.u0.shape[0]
        path = os.path.join(self.folder, "cb.nc")
        ds = netCDF4.Dataset(path, "w")
        ds.createDimension("step", None)
        ds.createDimension("capture", None)
        ds.createDimension("x", n)
        ds.createDimension("y", n)
        for name in ("energy", "umax", "mean"):
            ds.createVariable(name, "f4", ("step",))
        ds.createVariable("u", "f4", ("capture", "x", "y"))
        rows = {"step": 0, "capture": 0}

        def write(i, energy, umax, mean, u):
            k = rows["step"]
            ds["energy"][k], ds["umax"][k], ds["mean"][k] = energy, umax, mean
            rows["step"] += 1
            if int(i) % every == 0:
                ds["u"][rows["capture"]] = u
                rows["capture"] += 1

        def body(u, i):
            u = _jax_step(u)
            jax.debug.callback(write, i, *_scalars(u), u, ordered=True)
            return u, None

        run = jax.jit(lambda u, xs: jax.lax.scan(body, u, xs)[0])
        return ds, lambda: run(self.u0, self._steps()).block_until_ready()


def compiled_record_jax(quick: bool = False) -> dict:
    """jitted lax.scan heat loop 256^2 and 512^2, 10^4 steps: recorded vs not, vs alternatives."""
    sizes, steps, repeats = ((64, 128), 2000, 3) if quick else ((256, 512), 10_000, 3)
    out: dict = {"steps": steps}
    folder = tempfile.mkdtemp()
    for n in sizes:
        loops = _JaxLoops(n, steps, folder)
        field = {"snap": {"every": 100, "fields": ["u"]}}
        both = {**field, "diag": {"every": 1, "diagnostics": ["energy", "umax", "mean"]}}
        rec_both, with_scalars = loops.recorded(both, True)
        rec_field, field_only = loops.recorded(field, False)
        ds, callback = loops.debug_callback(100)
        medians = interleaved({"bare": loops.bare(), "scalars+field": with_scalars,
                               "field": field_only, "trajectory+xarray": loops.trajectory(100),
                               "debug.callback+netCDF4": callback}, repeats)
        rec_both.close()
        rec_field.close()
        ds.close()
        bare = medians["bare"]
        for name, seconds in medians.items():
            out[f"{n}^2 {name} ms/step"] = seconds / steps * 1e3
        for name in ("trajectory+xarray", "debug.callback+netCDF4"):
            out[f"{n}^2 {name} / bare"] = medians[name] / bare
        _target(out, f"{n}^2 3 scalars every step + field every 100 / bare",
                medians["scalars+field"] / bare, 1.15)
        _target(out, f"{n}^2 field every 100 / bare", medians["field"] / bare, 1.05)
    return out


def compiled_record_torch(quick: bool = False) -> dict:
    """torch.compile'd heat step 256^2 in a Python loop: 3 scalars every step + field every 100."""
    import torch

    n, steps, repeats = (64, 300, 3) if quick else (256, 2000, 3)
    folder = tempfile.mkdtemp()
    u0 = torch.as_tensor(np.random.default_rng(0).standard_normal((n, n)), dtype=torch.float32)

    def step(u):
        return u + _DT_D * (torch.roll(u, 1, 0) + torch.roll(u, -1, 0) + torch.roll(u, 1, 1)
                            + torch.roll(u, -1, 1) - 4 * u)

    bare_step = torch.compile(step)

    @torch.compile
    def recorded_step(rec, u, i):
        u = step(u)
        rec.step(i, u=u, energy=(u * u).sum(), umax=u.abs().max(), mean=u.mean())
        return u

    outputs = {"snap": {"every": 100, "fields": ["u"]},
               "diag": {"every": 1, "diagnostics": ["energy", "umax", "mean"]}}
    rec = simkit.record(os.path.join(folder, "t.nc"), outputs)
    count = {"calls": 0}

    def bare():
        u = u0
        for _ in range(steps):
            u = bare_step(u)

    def recorded():
        u, start = u0, count["calls"] * steps
        count["calls"] += 1
        for i in range(start, start + steps):
            u = recorded_step(rec, u, torch.tensor(i))

    medians = interleaved({"bare": bare, "recorded": recorded}, repeats)
    rec.close()
    out: dict = {"grid": n, "steps": steps}
    out["bare ms/step"] = medians["bare"] / steps * 1e3
    out["recorded ms/step"] = medians["recorded"] / steps * 1e3
    _target(out, "torch.compile recorded / bare", medians["recorded"] / medians["bare"], 1.2)
    return out


def compiled_record_memory(quick: bool = False) -> dict:
    """Host memory of a jitted rec.scan against its number of field captures (10 vs 10^4)."""
    n, steps = (32, 2000) if quick else (64, 10_000)
    folder = tempfile.mkdtemp()
    out: dict = {"grid": n, "steps": steps}
    peaks = {}
    for captures in (10, steps // 10, steps):
        loops = _JaxLoops(n, steps, folder)
        rec, run = loops.recorded({"snap": {"every": steps // captures, "fields": ["u"]}},
                                  False)
        loops.calls = 0
        tracemalloc.start()
        run()
        rec.close()
        peaks[captures] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[f"peak host MiB, {captures} captures"] = peaks[captures] / 2**20
        out[f"trajectory MiB held by the alternative, {captures} captures"] = \
            captures * n * n * 4 / 2**20
    _target(out, f"peak host memory {steps} / 10 captures", peaks[steps] / peaks[10], 1.5)
    out[f"peak host memory {steps} / {steps // 10} captures"] = peaks[steps] / peaks[steps // 10]
    return out


BENCHMARKS = [compiled_record_jax, compiled_record_torch, compiled_record_memory]
