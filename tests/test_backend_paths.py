"""The types stages see on every backend and path, torch.compile, non-finite replay and checks,
and flat memory over many runs in one process. ``compile: true`` compiles the torch block program
for real, on every solver, and the file says whether a run was compiled."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from array_api_compat import array_namespace
from pydantic import Field

import simkit
from conftest import heat_scenario, lorenz_scenario, require_backend
from simkit.backends import get_backend
from simkit.driver._steps import _STEPS
from simkit.errors import NonFiniteError
from simkit.solver import (
    STEP_KEY,
    TIME_KEY,
    AbstractSolver,
    Coordinate,
    Diagnostic,
    FieldSpec,
    SolverModel,
    Stage,
)

#: What the probe's stage saw, one entry per call (per trace under a compiler).
SEEN: list[tuple] = []
TRACES = {"count": 0}


def _describe(value, like) -> tuple:
    """(same namespace as the fields, dtype, ndim, weakly typed, same device) of a scalar."""
    try:
        same = array_namespace(value) is array_namespace(like)
    except TypeError:  # a Python number
        return (False, type(value).__name__, None, None, None)
    weak = bool(getattr(getattr(value, "aval", value), "weak_type", False))
    traced = type(value).__name__.endswith("Tracer")
    same_device = traced or str(value.device) == str(like.device)
    return (same, str(value.dtype).removeprefix("torch."), value.ndim, weak, same_device)


class ProbeParams(SolverModel):
    size: int = Field(4, ge=1)
    blowup_step: int = Field(-1, description="the step (index) at which u turns infinite")


class ProbeInitial(SolverModel):
    value: float = 1.0


class Probe(AbstractSolver):
    """u += dt; records the types of step, time and dt it is given; can turn infinite."""

    name = "probe"
    version = "1"
    description = "records what stages see"
    Params = ProbeParams
    Initial = ProbeInitial
    time_units = "s"

    def __init__(self, params: ProbeParams) -> None:
        self.params = params

    def fields(self):
        return [FieldSpec("u", ("i",), "1", "u")]

    def coordinates(self):
        return [Coordinate("i", np.arange(self.params.size), "1", "index")]

    def initial_state(self, initial, rng):
        return {"u": np.full(self.params.size, initial.value)}

    def stages(self):
        blowup = self.params.blowup_step

        def grow(state, dt):
            TRACES["count"] += 1
            u = state["u"]
            SEEN.append(tuple(_describe(v, u) for v in (state[STEP_KEY], state[TIME_KEY], dt)))
            xp = array_namespace(u)
            hit = xp.astype(state[STEP_KEY] == blowup, u.dtype) if blowup >= 0 else 0.0
            return {**state, "u": u + dt + hit / (1.0 - hit)}  # 1 / 0 at that step only

        return [Stage("grow", grow)]

    def diagnostics(self):
        return [Diagnostic("total", lambda s: array_namespace(s["u"]).sum(s["u"]), "1", "sum")]

    def default_dt(self):
        return 0.5

    def max_stable_dt(self):
        return None


def _probe(**overrides) -> dict:
    data = {"solver": "test_backend_paths:Probe", "steps": 6, "dt": 0.1,
            "outputs": {"plain": {"every": 2, "fields": ["u"]},
                        "mid": {"at": [3], "stage": "grow", "fields": ["u"]}},
            "output": "probe.nc"}
    data.update(overrides)
    return data


PATHS = [("numpy", None, "float64"), ("numpy", None, "float32"), ("jax", True, "float64"),
         ("jax", False, "float64"), ("jax", True, "float32"), ("torch", False, "float64"),
         ("torch", True, "float64"), ("torch", False, "float32")]


@pytest.mark.parametrize(("name", "compile_", "dtype"), PATHS,
                         ids=[f"{n}-{'compiled' if c else 'eager'}-{d}" for n, c, d in PATHS])
def test_stages_see_int64_step_float64_time_and_dt_of_the_run_dtype_on_every_path(
        in_tmp, monkeypatch, name, compile_, dtype):
    require_backend(name)
    # Dynamo traces what the stages see whatever compiles its graph; inductor's own code is
    # held to eager on every solver below (this saves half a minute of C++ compilation).
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")
    SEEN.clear()
    scenario = _probe(backend=name, compile=compile_, dtype=dtype, steps=8, check_finite=100,
                      params={"blowup_step": 6})
    # The loop, a stage capture (step 3) and the non-finite replay (the infinity at step 7).
    with pytest.raises(NonFiniteError, match=r"'u' after stage 'grow' of step 7 "):
        simkit.run(scenario)
    expected = {((True, "int64", 0, False, True), (True, "float64", 0, False, True),
                 (True, dtype, 0, False, True))}
    assert SEEN and set(SEEN) == expected, set(SEEN) - expected


def test_torch_compiled_float64_matches_numpy(in_tmp, monkeypatch):
    require_backend("torch")
    # The traced graph against NumPy; inductor's kernels are held to eager on every solver below.
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")
    # No streams: only the step is compiled (the diagnostics' compilations are tested below).
    reference = simkit.run(heat_scenario(steps=20, outputs={}, output="ref.nc"))
    result = simkit.run(heat_scenario(backend="torch", compile=True, steps=20, outputs={},
                                      output="t.nc"))
    ref, got = reference.state["u"], result.state["u"]
    assert got.dtype == np.float64
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-13


# ------------------------------------------------------------------ non-finite


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_lorenz_blow_up_names_the_stage_and_keeps_the_last_good_state(in_tmp, name):
    require_backend(name)
    scenario = lorenz_scenario(backend=name, dt=0.3, steps=50,
                               outputs={"orbits": {"every": 1, "fields": "all"}})
    with pytest.raises(NonFiniteError, match=r"field 'y' after stage 'k4' of step 4 .* step 3"):
        simkit.run(scenario)
    with xr.open_dataset("lorenz.nc") as root, xr.open_dataset("lorenz.nc", group="orbits") as s:
        assert int(root.step) == 3 and np.isfinite(root.x.values).all()
        assert list(s.step.values) == [0, 1, 2, 3]


def test_lorenz_blow_up_exits_3_from_the_cli(in_tmp, capsys):
    from simkit.cli import main

    Path("l.yaml").write_text("solver: lorenz63\nsteps: 40\ndt: 0.3\noutput: l.nc\n")
    assert main(["run", "l.yaml", "-q"]) == 3
    err = capsys.readouterr().err
    assert re.search(r"non-finite value in field '\w+' after stage 'k\d' of step \d", err), err


def test_replay_on_jax_reuses_compiled_functions(in_tmp):
    require_backend("jax")
    TRACES["count"] = 0
    with pytest.raises(NonFiniteError, match="after stage 'grow' of step 301 "):
        simkit.run(_probe(backend="jax", steps=400, check_finite=1000, outputs={},
                          params={"blowup_step": 300}))
    # The loop, the replayed step, the located stage: a few traces, not one per replayed step.
    assert TRACES["count"] <= 6


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_non_finite_initial_state_is_refused_before_anything_is_written(in_tmp, name):
    require_backend(name)
    u = np.zeros((24, 20))
    u[3, 4] = np.nan
    np.save("bad.npy", u)
    scenario = heat_scenario(backend=name, initial={"kind": "file", "path": "bad.npy"})
    with pytest.raises(NonFiniteError, match="field 'u' of the state at step 0"):
        simkit.run(scenario)
    for group in ("snap", "diag"):
        with xr.open_dataset("out.nc", group=group) as stream:
            assert stream.sizes["step"] == 0


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_infinite_diagnostic_at_step_0_is_not_committed(in_tmp, name):
    require_backend(name)
    # u = 1e200 everywhere is finite and stays so; its energy (sum of u * u) overflows.
    scenario = heat_scenario(backend=name, initial={"kind": "uniform", "amplitude": 1e200})
    with pytest.raises(NonFiniteError, match="diagnostic 'energy' at step 0"):
        simkit.run(scenario)
    with xr.open_dataset("out.nc", group="diag") as stream:
        assert stream.sizes["step"] == 0


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_backend_caches_let_dropped_functions_go(name, monkeypatch):
    require_backend(name)
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")  # what is kept, not how fast
    backend = get_backend(name, compile=True)

    def make():
        def double(fields, dt, step, time):
            return {"u": fields["u"] * 2}
        return double

    fn = make()
    fields = {"u": backend.asarray(np.ones(3))}
    backend.call(fn, fields, 0.1, 0, 0.0)
    out = backend.call_step(fn, fields, 0.1, 0, 0.0)  # compiled as the block loop's step
    np.testing.assert_array_equal(backend.to_host(out)["u"], np.full(3, 2.0))
    ref = weakref.ref(fn)
    del fn
    gc.collect()
    assert ref() is None


def test_jax_memory_stays_flat_over_200_runs(tmp_path):
    require_backend("jax")
    # A fresh process, so what other tests compiled does not count.
    code = textwrap.dedent("""
        import gc, os, sys, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, sys.argv[1])
        os.chdir(sys.argv[2])
        import simkit
        from conftest import heat_scenario

        def rss():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

        for i in range(200):
            simkit.run(heat_scenario(backend="jax", steps=4, params={"shape": [8, 8]},
                                     outputs={"snap": {"every": 2, "fields": ["u"]},
                                              "diag": {"every": 1, "diagnostics":
                                                       ["energy", "heat", "max_abs"]},
                                              "low": {"every": 1, "fields": ["u"], "when":
                                                      {"diagnostic": "energy", "below": 1e9}}},
                                     output="m.nc"), overwrite=True)
            if i == 20:
                gc.collect()
                warm = rss()
        gc.collect()
        print(warm, rss())
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warm, end = map(float, proc.stdout.split()[-2:])
    # Before: ~4 MiB per run (diagnostics and watched loops recompiled, never freed).
    assert end - warm < 20, (warm, end)


def test_torch_compiles_every_step_function_of_a_process(monkeypatch):
    require_backend("torch")
    import torch._dynamo

    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")  # whether it compiles, not how
    limit = 2  # dynamo's default is 8: lowered so the test is quick
    backend = get_backend("torch", compile=True)
    fields = {"u": backend.asarray(np.ones(3))}
    kept = []
    for k in range(limit + 2):
        def scale(fields, dt, step, time, k=k):
            return {"u": fields["u"] * (k + 1)}

        kept.append(scale)
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        with torch._dynamo.config.patch(recompile_limit=limit):
            out = backend.call_step(scale, fields, 0.1, 0, 0.0)
        # Past the recompile limit of a shared code object, dynamo would run it eagerly.
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before, k
        np.testing.assert_array_equal(backend.to_host(out)["u"], np.full(3, k + 1.0))


# ------------------------------------------------------------------ torch.compile

#: Every shipped solver, tiny: params, initial condition, steps and dt. Shapes are fixed per
#: solver, so the compiled kernels come from inductor's cache after the first test run.
TINY = {
    "heat2d": ({"shape": [8, 8]}, {"kind": "noise"}, {"steps": 5}),
    "heat2d_cn": ({"shape": [8, 8], "boundary": "fixed", "cg_iterations": 5},
                  {"kind": "gaussian", "width": 2.0}, {"steps": 3, "dt": 2.0}),
    "lorenz63": ({"trajectories": 4}, {"spread": 0.5}, {"steps": 10, "dt": 0.01}),
    "wave2d": ({"shape": [8, 8]}, {"kind": "gaussian", "width": 2.0}, {"steps": 5}),
    "gray_scott": ({"shape": [8, 8]}, {"kind": "square", "noise": 0.01}, {"steps": 5, "dt": 1.0}),
    "navier_stokes2d": ({"size": 8}, {"kind": "taylor_green"}, {"steps": 3, "dt": 0.01}),
    "nbody": ({"bodies": 4, "softening": 0.05}, {"kind": "plummer"}, {"steps": 5, "dt": 0.001}),
    "ising2d": ({"shape": [8, 8]}, {"kind": "random"}, {"steps": 3}),
    "cavity_lbm": ({"size": 8, "reynolds": 100.0}, {}, {"steps": 5}),
}


def _dynamo_frames() -> int:
    """Frames torch.compile has compiled in this process so far (each compilation of a
    function, first or recompiled, is one)."""
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"]


def _worst_relative(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in b)


def test_every_shipped_solver_is_one_of_the_tiny_cases():
    from simkit.solver import available_solvers

    assert set(TINY) == set(available_solvers())


@pytest.mark.parametrize("solver", sorted(TINY))
def test_compiled_torch_matches_eager_on_every_solver(in_tmp, monkeypatch, solver):
    """``compile: true`` compiles the step with inductor as one graph (one frame, no graph
    break, no recompile over the run), and its float64 state is the eager one to 1e-12."""
    require_backend("torch")
    monkeypatch.delenv("SIMKIT_TORCH_COMPILER", raising=False)  # the default: inductor
    params, initial, run = TINY[solver]
    data = {"solver": solver, "params": params, "initial": initial, "backend": "torch",
            "seed": 1, "outputs": {}, **run}
    eager = simkit.run({**data, "compile": False, "output": "e.nc"})
    _STEPS.clear()  # steps made anew: compiled in this test whatever ran before it
    before = _dynamo_frames()
    compiled = simkit.run({**data, "compile": True, "output": "c.nc"})
    assert _dynamo_frames() - before == 1
    assert all(value.dtype == np.float64 for value in compiled.state.values())
    assert _worst_relative(compiled.state, eager.state) <= 1e-12


def _heat_everything(**overrides) -> dict:
    """heat2d with every kind of function a block calls: the step, the step that keeps a
    stage's state, diagnostics, a level condition and an edge condition."""
    return heat_scenario(
        backend="torch", params={"shape": [8, 6]}, steps=12, seed=7,
        stop_when={"diagnostic": "max_abs", "below": 1e-9},
        outputs={"snap": {"every": 3, "fields": ["u"]},
                 "diag": {"every": 2, "diagnostics": ["energy", "max_abs"]},
                 "mid": {"at": [4, 8], "stage": "laplacian", "fields": ["laplacian"]},
                 "hot": {"while": {"diagnostic": "max_abs", "above": 0.0, "every": 2},
                         "fields": ["u"]}},
        **overrides)


def test_torch_compile_compiles_every_block_function_a_bounded_number_of_times(
        in_tmp, monkeypatch):
    require_backend("torch")
    import torch._dynamo

    # Dynamo's frames and guards are the same whatever lowers the graphs: aot_eager spares
    # the C++ compilation (inductor's own code is held to eager on every solver above).
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")
    eager = simkit.run(_heat_everything(compile=False, output="e.nc"))
    _STEPS.clear()
    before = _dynamo_frames()
    compiled = simkit.run(_heat_everything(compile=True, output="c.nc"))
    # The step, the step that keeps the stage's state, energy, max_abs, the level and the edge
    # condition: each compiled once, none compiled again over the run's 12 steps.
    assert _dynamo_frames() - before == 6
    # The same run again in the process compiles nothing (a recompile would raise).
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = simkit.run(_heat_everything(compile=True, output="c2.nc"))
    assert _dynamo_frames() - before == 6
    for result in (compiled, again):
        assert _worst_relative(result.state, eager.state) <= 1e-12
        for group in ("snap", "diag", "mid", "hot"):
            with xr.open_dataset(eager.path, group=group) as e, \
                    xr.open_dataset(result.path, group=group) as c:
                assert list(c.step.values) == list(e.step.values)
                for name in e.data_vars:
                    if name.startswith("simkit_"):
                        continue
                    np.testing.assert_allclose(c[name].values, e[name].values, rtol=1e-12,
                                               atol=1e-14 * float(np.abs(e[name]).max()))


PROVENANCE = [("numpy", None, "no"), ("jax", None, "jax.jit"), ("jax", False, "no"),
              ("torch", None, "no"), ("torch", False, "no"),
              ("torch", True, "torch.compile (aot_eager)")]


@pytest.mark.parametrize(("name", "compile_", "expected"), PROVENANCE,
                         ids=[f"{n}-{c}" for n, c, _ in PROVENANCE])
def test_provenance_records_whether_the_run_was_compiled(in_tmp, monkeypatch, name, compile_,
                                                         expected):
    require_backend(name)
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")
    result = simkit.run(heat_scenario(backend=name, compile=compile_, params={"shape": [6, 4]},
                                      steps=2, outputs={}, output="p.nc"))
    with xr.open_datatree(result.path) as tree:  # torch on CPU compiles only when asked
        assert tree.attrs["simkit_compiled"] == expected


def test_vv_says_whether_the_run_was_compiled_and_inspect_shows_it(in_tmp, capsys):
    require_backend("torch")
    Path("c.yaml").write_text("solver: heat2d\nparams: {shape: [6, 4]}\nbackend: torch\n"
                              "compile: true\nsteps: 2\noutputs: {}\noutput: c.nc\n")
    env = {**os.environ, "SIMKIT_TORCH_COMPILER": "aot_eager"}
    proc = subprocess.run([sys.executable, "-m", "simkit", "-vv", "run", "c.yaml"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"running heat2d on torch \(cpu, float64, compiled by torch\.compile "
                     r"\(aot_eager\)\) -> c\.nc", proc.stderr), proc.stderr[-2000:]
    # Dynamo's notes on array_api_compat's caches, not about the run, are not shown.
    assert "Warning" not in proc.stderr
    from simkit.cli import main

    assert main(["inspect", "c.nc"]) == 0
    assert "  compiled: torch.compile (aot_eager)\n" in capsys.readouterr().out
    Path("e.yaml").write_text(Path("c.yaml").read_text().replace("true", "false"))
    proc = subprocess.run([sys.executable, "-m", "simkit", "-vv", "run", "e.yaml", "-o", "e.nc"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "running heat2d on torch (cpu, float64, not compiled) -> e.nc" in proc.stderr


def test_unknown_torch_compiler_is_refused_with_exit_2(in_tmp, monkeypatch, capsys):
    require_backend("torch")
    from simkit.cli import main

    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "inductr")
    Path("c.yaml").write_text("solver: heat2d\nparams: {shape: [6, 4]}\nbackend: torch\n"
                              "compile: true\nsteps: 2\noutputs: {}\noutput: c.nc\n")
    assert main(["run", "c.yaml", "-q"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"SIMKIT_TORCH_COMPILER: expected a torch\.compile backend \(.*inductor.*\), "
                     r"given 'inductr'", err), err
    assert not Path("c.nc").exists()
