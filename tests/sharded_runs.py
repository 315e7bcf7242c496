"""Runs split over several forced CPU devices, for tests/test_sharding.py and the benchmarks.

JAX reads ``XLA_FLAGS`` once, when it starts: the forced device count must be set before it is
imported, so these runs happen in a process of their own::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/sharded_runs.py meshes DIR

``meshes`` runs each solver of ``SCENARIOS`` on 1, 2 and 4 devices (``DIR/<solver>_<n>.nc``);
``resume`` runs heat2d on a 2 x 2 mesh whole (``DIR/whole.nc``) and interrupted half way then
resumed (``DIR/resumed.nc``); ``layout`` prints (JSON) how heat2d and nbody fields are split on 4
devices and the collectives of their compiled steps. ``benchmarks/cases.py`` runs it too.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

import simkit
from simkit.errors import RunInterrupted
from simkit.scenario import plan_run

#: XLA's collective operations, as named in compiled HLO text.
COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
_COLLECTIVE = re.compile(r"= (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"\b([a-z]+)(\d+)\[([\d,]*)\]")

#: Small runs of each solver, and the layouts of 2 and 4 devices they are split into.
SCENARIOS = {
    "heat2d": ({
        "solver": "heat2d",
        "params": {"diffusivity": 1.0, "shape": [24, 20], "spacing": 1.0},
        "initial": {"kind": "noise", "amplitude": 1.0},
        "steps": 30, "seed": 3,
        "outputs": {"snap": {"every": 3, "fields": ["u"]},
                    "early": {"at": [2, 5, 8], "fields": ["u"], "stage": "laplacian"},
                    "diag": {"every": 1, "diagnostics": ["energy", "heat", "max_abs"]}},
    }, {"devices": 2}, {"mesh": {"y": 2, "x": 2}}),
    "wave2d": ({
        "solver": "wave2d",
        "params": {"speed": 1.0, "shape": [16, 24], "spacing": 1.0},
        "initial": {"kind": "gaussian", "width": 3.0},
        "steps": 40,
        "outputs": {"snap": {"every": 10, "fields": "all"},
                    "energy": {"every": 5, "diagnostics": ["energy", "kinetic", "potential"]}},
    }, {"mesh": {"x": 2}}, {"mesh": {"y": 2, "x": 2}}),
    "navier_stokes2d": ({
        "solver": "navier_stokes2d",
        "params": {"viscosity": 1.0e-3, "size": 16},
        "initial": {"kind": "turbulence", "peak": 3.0, "amplitude": 1.0},
        "steps": 20, "seed": 3,
        "outputs": {"vorticity": {"every": 5, "fields": ["omega"]},
                    "stats": {"every": 2, "diagnostics": ["energy", "enstrophy"]}},
    }, {"devices": 2}, {"mesh": {"y": 2, "x": 2}}),
    "nbody": ({
        "solver": "nbody",
        "params": {"bodies": 16, "gravity": 1.0, "softening": 0.05},
        "initial": {"kind": "plummer", "radius": 1.0, "total_mass": 1.0},
        "steps": 40, "dt": 0.001, "seed": 11,
        "outputs": {"positions": {"every": 10, "fields": ["x"]},
                    "invariants": {"every": 5, "diagnostics": ["energy", "kinetic", "potential"]},
                    "checkpoint": {"every": 20, "fields": "all"}},
    }, {"devices": 2}, {"devices": 4}),
}

#: A heat run with checkpoints, long enough to be interrupted half way.
RESUME = {
    "solver": "heat2d",
    "params": {"diffusivity": 1.0, "shape": [32, 24], "spacing": 1.0},
    "initial": {"kind": "noise", "amplitude": 1.0},
    "steps": 400, "seed": 5, "backend": "jax", "mesh": {"y": 2, "x": 2},
    "outputs": {"snap": {"every": 25, "fields": ["u"]},
                "diag": {"every": 5, "diagnostics": ["energy", "max_abs"]},
                "checkpoint": {"every": 100, "fields": "all"}},
}


def meshes(directory: Path) -> None:
    for name, (scenario, *layouts) in SCENARIOS.items():
        for devices, layout in zip((1, 2, 4), ({}, *layouts), strict=True):
            simkit.run({**scenario, **layout, "backend": "jax",
                        "output": str(directory / f"{name}_{devices}.nc")}, overwrite=True)


def _whole_then_resumed(directory: Path, scenario: dict, several: bool = False) -> None:
    """``whole.nc`` run through, and ``resumed.nc`` stopped at step 250 then resumed (``several``:
    as one of several processes, where only process 0 has a file to name)."""
    simkit.run({**scenario, "output": str(directory / "whole.nc")}, overwrite=True)

    def stop_half_way(step, time, written, total):
        if step >= 250:
            raise KeyboardInterrupt

    path = directory / "resumed.nc"
    try:
        simkit.run({**scenario, "output": str(path)}, overwrite=True, progress=stop_half_way)
    except RunInterrupted as interrupted:
        print(f"interrupted: {interrupted.path}")
    except KeyboardInterrupt:
        if not several:
            raise
        print("interrupted")
    else:
        sys.exit("the run was not interrupted")
    simkit.resume(path)


def resume(directory: Path) -> None:
    _whole_then_resumed(directory, RESUME)


def processes(directory: Path) -> None:
    """``resume`` as one of several processes (the environment names the coordinator)."""
    _whole_then_resumed(directory, {**RESUME, "mesh": {"y": 2, "x": 2}}, several=True)


def collectives(hlo: str) -> tuple[dict[str, int], int]:
    """The collective operations of compiled HLO text (count by kind) and the bytes each device
    receives through them (the sizes of their per-device results)."""
    counts: dict[str, int] = {}
    received = 0
    for shapes, kind, start in _COLLECTIVE.findall(hlo):
        counts[kind] = counts.get(kind, 0) + 1
        found = _SHAPE.findall(shapes)
        for _, bits, dims in found[:1] if start else found:
            size = 1
            for d in filter(None, dims.split(",")):
                size *= int(d)
            received += size * int(bits) // 8
    return counts, received


def communication(scenario: dict) -> dict:
    """How the fields of ``scenario`` are split and what one compiled step of it exchanges."""
    import jax

    from simkit.backends import get_backend
    from simkit.solver import make_step

    plan = plan_run(scenario)
    backend = get_backend("jax", "cpu", plan.scenario.dtype, compile=None, mesh=plan.mesh)
    host = plan.solver.initial_state(plan.initial, np.random.default_rng(0))
    fields = {f.name: backend.place(host[f.name], f.dims) for f in plan.solver.fields()}
    step = make_step(plan.solver, plan.scenario.seed)
    hlo = jax.jit(step).lower(fields, *backend.scalars(plan.dt, 0, 0.0)).compile().as_text()
    counts, received = collectives(hlo)
    first = fields[plan.solver.fields()[0].name]
    return {"mesh": dict(plan.mesh), "shards": [list(s.data.shape)
                                                for s in first.addressable_shards],
            "collectives": counts, "bytes received per device per step": received}


def layout(directory: Path) -> None:
    found = {}
    for name, split in (("heat2d", {"mesh": {"y": 2, "x": 2}}), ("nbody", {"devices": 4})):
        found[name] = communication({**SCENARIOS[name][0], **split, "backend": "jax",
                                     "output": str(directory / "unused.nc")})
    print(json.dumps(found))


def bench_communication(directory: Path) -> None:
    """(benchmarks) What one step of heat2d 256^2 and navier_stokes2d 128^2 exchanges on a
    2 x 2 mesh, from their compiled HLO."""
    heat = {"solver": "heat2d", "params": {"shape": [256, 256]}, "initial": {"kind": "noise"},
            "steps": 1}
    flow = {"solver": "navier_stokes2d", "params": {"size": 128},
            "initial": {"kind": "turbulence"}, "steps": 1}
    print(json.dumps({name: communication({**scenario, "backend": "jax",
                                           "mesh": {"y": 2, "x": 2},
                                           "output": str(directory / "unused.nc")})
                      for name, scenario in (("heat2d", heat), ("navier_stokes2d", flow))}))


def bench_capture_cost(directory: Path, steps: int = 400, repeats: int = 3) -> None:
    """(benchmarks) Seconds of heat2d 128^2 runs with and without captures (a snapshot every 10
    steps, diagnostics every step), on one device and split over 4, interleaved."""
    import statistics
    import time

    base = {"solver": "heat2d", "params": {"shape": [128, 128]}, "initial": {"kind": "noise"},
            "steps": steps, "backend": "jax", "check_finite": 0,
            "output": str(directory / "cost.nc")}
    captures = {"snap": {"every": 10, "fields": ["u"]},
                "diag": {"every": 1, "diagnostics": ["energy", "max_abs"]}}
    runs = {f"{devices} devices {label}": {**base, **split, "outputs": outputs}
            for devices, split in ((1, {}), (4, {"mesh": {"y": 2, "x": 2}}))
            for label, outputs in (("without captures", {}), ("with captures", captures))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for scenario in runs.values():  # compile
        simkit.run(scenario, overwrite=True)
    for _ in range(repeats):
        for name, scenario in runs.items():
            start = time.perf_counter()
            simkit.run(scenario, overwrite=True)
            times[name].append(time.perf_counter() - start)
    print(json.dumps({name: statistics.median(values) for name, values in times.items()}))


if __name__ == "__main__":
    {"meshes": meshes, "resume": resume, "layout": layout, "processes": processes,
     "bench_communication": bench_communication, "bench_capture_cost": bench_capture_cost}[sys.argv[1]](Path(sys.argv[2]))
