"""Zarr/Icechunk output against NetCDF: heat2d 512^2 on JAX capturing the field every 10 steps,
the same run written to a local ``.zarr`` repository and to a NetCDF file, in one process run."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from cases import Skip, _heat, _target

import simkit
from simkit.io import open_reader


def zarr_vs_netcdf_field_every_10(quick: bool = False) -> dict:
    """heat2d 512^2 JAX, field every 10 steps: Zarr/Icechunk run time against NetCDF's."""
    try:
        import icechunk  # noqa: F401 - the simkit[zarr] extra
        import jax  # noqa: F401
    except ImportError as error:
        raise Skip(f"simkit[zarr] or jax not installed ({error})") from error
    n, steps, repeats = (256, 500, 3) if quick else (512, 2000, 5)
    folder = tempfile.mkdtemp()
    outputs = {"snaps": {"every": 10, "fields": ["u"]}}
    last: dict[str, str] = {}
    times: dict[str, list[float]] = {".nc": [], ".zarr": []}
    for repeat in range(repeats + 1):  # the first round warms up (compiles), untimed
        for suffix, taken in times.items():  # round-robin: machine noise hits both alike
            # Each run writes a new output, all removed at the end: a removal meanwhile (the
            # file system freeing 400 MiB) would slow the next run, whichever format it is.
            last[suffix] = os.path.join(folder, f"r{repeat}{suffix}")
            start = time.perf_counter()
            simkit.run(_heat(n, steps, "jax", outputs, last[suffix]))
            if repeat:
                taken.append(time.perf_counter() - start)
    medians = {"netcdf": statistics.median(times[".nc"]),
               "zarr": statistics.median(times[".zarr"])}
    with open_reader(last[".nc"]) as nc, open_reader(last[".zarr"]) as zr:
        a, b = nc.captures("snaps"), zr.captures("snaps")
    assert a.steps.tolist() == b.steps.tolist() == list(range(0, steps + 1, 10))
    np.testing.assert_array_equal(a.arrays["u"], b.arrays["u"])
    captured = a.arrays["u"].nbytes
    outcome = {"grid": n, "steps": steps, "captures": len(a.steps),
               "MiB captured": captured / 2**20,
               "netcdf s": medians["netcdf"], "zarr s": medians["zarr"],
               "zarr / netcdf": medians["zarr"] / medians["netcdf"]}
    _target(outcome, "zarr / netcdf", outcome["zarr / netcdf"], 1.1)
    shutil.rmtree(folder, ignore_errors=True)
    return outcome


BENCHMARKS = [zarr_vs_netcdf_field_every_10]
