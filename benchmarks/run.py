"""simkit benchmark suite: framework and capture overhead, peers, memory, bandwidth.

    python benchmarks/run.py [--quick] [--only NAME ...] [--output benchmarks/results/latest.json]

Every figure is a median of repeated runs after a warm-up, measured in this one process run so
ratios compare like with like; compile time is reported apart. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402  (benchmarks/cases.py, beside this file)


def benchmarks() -> list:
    """Every benchmark: those of ``cases.py``, then those of each ``bench_*.py`` beside it
    (its ``BENCHMARKS`` list; they may use ``cases``' helpers)."""
    import importlib

    found = list(cases.BENCHMARKS)
    for module in sorted(HERE.glob("bench_*.py")):
        found += getattr(importlib.import_module(module.stem), "BENCHMARKS", [])
    return found


def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("simkit", "numpy", "jax", "torch", "xarray", "netCDF4", "py-pde", "diffrax",
                 "numba"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "versions": versions,
        "env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                               "OMP_NUM_THREADS", "XLA_FLAGS",
                                               "OPENBLAS_CORETYPE")},
    }


def run_one(bench, quick: bool) -> dict:
    """One benchmark's outcome; the files it writes in the temporary folder are removed after
    it (runs of up to 512^2, in folders of ``tempfile.mkdtemp``)."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="simkit-bench-") as folder:
        tempfile.tempdir = folder
        try:
            return bench(quick=quick)
        except cases.Skip as skip:
            return {"skipped": str(skip)}
        finally:
            tempfile.tempdir = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks")
    parser.add_argument("--output", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()
    selected = [b for b in benchmarks() if not args.only or b.__name__ in args.only]
    results = {"environment": environment(), "quick": args.quick, "benchmarks": {}}
    for bench in selected:
        print(f"== {bench.__name__}: {bench.__doc__.splitlines()[0]}", flush=True)
        start = time.perf_counter()
        outcome = run_one(bench, args.quick)
        outcome["seconds"] = round(time.perf_counter() - start, 1)
        results["benchmarks"][bench.__name__] = outcome
        for line in cases.table(outcome):
            print("   " + line, flush=True)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
