"""Differentiable runs: gradients against finite differences, dot-product tests, JAX against
torch, checkpointed against store-everything, adjoint streams, objectives and refusals."""

from __future__ import annotations

import functools
import json
import math
import re

import numpy as np
import pytest
import xarray as xr
from array_api_compat import array_namespace

import simkit
from conftest import heat_scenario, require_backend
from simkit.autodiff import Checkpointing, misfit, run_function, value_and_grad
from simkit.autodiff._revolve import WORKING, binomial_schedule, fewest_advances
from simkit.errors import ScenarioError
from simkit.io.inspect import describe
from simkit.io.netcdf import capture_checksum
from simkit.solver import available_solvers, load_solver, make_step

GRAD_BACKENDS = ("jax", "torch")

#: Small set-ups of every differentiable solver: params, initial, dt.
SMALL = {
    "heat2d": ({"shape": [6, 7], "diffusivity": 0.7}, {"kind": "noise"}, 0.1),
    "heat2d_cn": ({"shape": [6, 7], "diffusivity": 0.7, "cg_iterations": 30}, {"kind": "noise"},
                  0.5),
    "lorenz63": ({"trajectories": 2}, {}, 0.01),
    "wave2d": ({"shape": [6, 7]}, {"kind": "gaussian", "width": 1.5}, 0.2),
    "gray_scott": ({"shape": [8, 8], "length": 0.1}, {"kind": "square", "size": 0.04}, 0.5),
    "navier_stokes2d": ({"size": 8}, {"kind": "turbulence"}, 0.05),
    "nbody": ({"bodies": 5}, {}, 0.01),
}


def small(name: str, steps: int = 7, **extra) -> dict:
    params, initial, dt = SMALL[name]
    return {"solver": name, "params": dict(params), "initial": dict(initial), "steps": steps,
            "dt": dt, "seed": 1, **extra}


@pytest.fixture(params=GRAD_BACKENDS)
def lib(request) -> str:
    require_backend(request.param)
    return request.param


def _gradient(run, loss, wrt_params, wrt_fields):
    """``(params, fields) -> (value, {name: gradient as a host array})`` of ``loss(final,
    captures)`` on either library; compiled once on JAX, whatever values it is called with."""
    if run.library == "jax":
        import jax

        def f(pw, fw, params, fields):
            final, captures = run({**params, **pw}, {**fields, **fw})
            return loss(final, captures)

        compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

        def evaluate(params, fields):
            value, (gp, gf) = compiled({k: params[k] for k in wrt_params},
                                       {k: fields[k] for k in wrt_fields}, params, fields)
            return float(value), {k: np.asarray(v) for k, v in {**gp, **gf}.items()}

        return evaluate

    def evaluate(params, fields):
        pw = {k: params[k].clone().requires_grad_(True) for k in wrt_params}
        fw = {k: fields[k].clone().requires_grad_(True) for k in wrt_fields}
        final, captures = run({**params, **pw}, {**fields, **fw})
        value = loss(final, captures)
        value.backward()
        return float(value.detach()), {k: v.grad.numpy().copy() for k, v in {**pw, **fw}.items()}

    return evaluate


def _value_and_grad(run, loss, params: dict, fields: dict, wrt_params, wrt_fields):
    """(value, {name: gradient as host array}) of ``loss(final, captures)`` on either library."""
    return _gradient(run, loss, wrt_params, wrt_fields)(params, fields)


def _weights(run, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(tuple(v.shape)) for k, v in run.initial_fields().items()}


def _linear_loss(run, weights: dict):
    """sum(w * final) plus a sum of squares of the captures (a nonlinear term)."""
    w = {k: run.backend.asarray(v) for k, v in weights.items()}

    def loss(final, captures):
        total = sum((w[k] * final[k]).sum() for k in final)
        for stream in captures.values():
            for name, value in stream.items():
                if name != "step":
                    total = total + 0.1 * (value * value).sum()
        return total

    return loss


# ------------------------------------------------------------------ finite differences


FD_CASES = [
    # (scenario, parameter or None, field or None)
    (small("heat2d", 9, outputs={"s": {"every": 4, "fields": ["u"]}}), "diffusivity", None),
    (small("heat2d", 9, outputs={"s": {"every": 4, "fields": ["u"]}}), None, "u"),
    (small("lorenz63", 50), "rho", None),
    (small("wave2d", 9), None, "u"),
    (small("gray_scott", 6), "feed", None),
]


@pytest.mark.parametrize("case", range(len(FD_CASES)),
                         ids=["heat-diffusivity", "heat-initial", "lorenz-rho", "wave-initial",
                              "grayscott-feed"])
def test_gradient_matches_central_differences(lib, case):
    scenario, param, field = FD_CASES[case]
    run = run_function(scenario, backend=lib)
    p0, f0 = run.initial_params(), run.initial_fields()
    loss = _linear_loss(run, _weights(run))
    evaluate = _gradient(run, loss, [param] if param else [], [field] if field else [])
    _, grads = evaluate(p0, f0)

    def value(params, fields):
        return evaluate(params, fields)[0]

    if param:
        x = float(p0[param])
        h = 1e-4 * x
        plus = value({**p0, param: run.scalar(x + h)}, f0)
        minus = value({**p0, param: run.scalar(x - h)}, f0)
        exact = float(grads[param])
    else:
        rng = np.random.default_rng(5)
        base = np.asarray(f0[field])
        v = rng.standard_normal(base.shape)
        h = 1e-4
        plus = value(p0, {**f0, field: run.backend.asarray(base + h * v)})
        minus = value(p0, {**f0, field: run.backend.asarray(base - h * v)})
        exact = float(np.sum(grads[field] * v))
    estimate = (plus - minus) / (2 * h)
    assert exact != 0.0
    assert abs(estimate - exact) <= 1e-6 * abs(exact)


# ------------------------------------------------------------------ dot-product test


def _nbody(kind: str, gravity: float, lib: str = "numpy") -> dict:
    return {"solver": "nbody", "params": {"bodies": 2 if kind == "kepler" else 5,
                                          "softening": 0.05, "gravity": gravity},
            "initial": {"kind": kind}, "steps": 20, "dt": 0.02, "seed": 3, "backend": lib,
            "outputs": {"ck": {"every": 5, "fields": "all"},
                        "e": {"every": 4, "diagnostics": ["kinetic"]}}}


@pytest.mark.parametrize(("lib", "kind"), [("torch", "kepler"), ("torch", "plummer"),
                                           ("jax", "plummer")])
def test_nbody_gravity_gradient_is_the_derivative_of_the_runs_value(lib, kind, in_tmp):
    """kepler and plummer starts build their velocities from G: the gradient goes through
    them (whole run and reused checkpoints), as central differences of the value say."""
    require_backend(lib)
    def objective(final, captures):
        return (final["x"][:, 0] ** 2).sum() + captures["e"]["kinetic"].sum()

    g, h = 1.3, 1e-5
    require_backend("torch")  # the values for the differences: eager, nothing to compile
    up, down = (value_and_grad(_nbody(kind, value), objective, ["gravity"],
                               backend="torch").value for value in (g + h, g - h))
    central = (up - down) / (2 * h)
    whole = value_and_grad(_nbody(kind, g), objective, ["gravity", "v"], backend=lib)
    # The forward run on NumPy writes the file; the gradient reuses its checkpoints on lib.
    written = value_and_grad(_nbody(kind, g), objective, ["gravity", "v"], backend=lib,
                             checkpoint={"binomial": 2}, output="run.nc")
    assert abs(central) > 0.1
    assert whole.grad["gravity"] == pytest.approx(central, rel=1e-7)
    assert written.grad["gravity"] == pytest.approx(whole.grad["gravity"], rel=1e-12)
    np.testing.assert_allclose(written.grad["v"], whole.grad["v"], rtol=1e-12)


def test_a_parameter_that_moves_the_initial_state_undeclared_is_refused(monkeypatch):
    """A solver whose initial state changes with a parameter without declaring how: refused,
    never the gradient of a model whose start does not move."""
    require_backend("torch")
    from solvers.nbody import NBody

    monkeypatch.setattr(NBody, "initial_params", lambda self, initial: ())
    with pytest.raises(ScenarioError, match=re.escape(
            "wrt: expected a parameter the initial state does not depend on, or one the solver "
            "declares in initial_params, given 'gravity': nbody's initial state (initial.kind "
            "plummer) changes with gravity and the solver does not say how, so its gradient "
            "would leave that out")):
        value_and_grad(_nbody("plummer", 1.0), _loss, ["gravity"], backend="torch")
    # A start that does not move with G: nothing to refuse.
    bodies = {**_nbody("kepler", 1.0, "torch"),
              "initial": {"kind": "bodies", "positions": [[0, 0], [1, 0]],
                          "velocities": [[0, 0], [0, 1]], "masses": [1.0, 0.1]}}
    assert value_and_grad(bodies, _loss, ["gravity"]).grad["gravity"] != 0


#: Initial conditions of each differentiable solver, one per kind (``kind: file`` reads a file).
INITIALS = {
    "heat2d": [{"kind": k} for k in ("gaussian", "mode", "uniform", "noise")],
    "heat2d_cn": [{"kind": k} for k in ("gaussian", "mode", "uniform", "noise")],
    "lorenz63": [{"kind": "point", "spread": 0.1},
                 {"kind": "points", "points": [[1, 2, 3], [4, 5, 6]]}],
    "wave2d": [{"kind": "gaussian"}, {"kind": "mode"}],
    "gray_scott": [{"kind": "square", "size": 0.04}, {"kind": "uniform"}],
    "navier_stokes2d": [{"kind": "taylor_green"}, {"kind": "turbulence"}],
    "nbody": [{"kind": "plummer"}, {"kind": "kepler"},
              {"kind": "bodies", "positions": [[0, 0], [1, 0]], "velocities": [[0, 0], [0, 1]],
               "masses": [1.0, 0.1]}],
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_initial_states_declare_the_parameters_they_depend_on(name):
    """Every start of every differentiable solver: where the initial state changes with a
    differentiable parameter, the solver declares it and ``initial_at`` gives the moved state."""
    from simkit.solver import with_params

    cls = load_solver(name)
    kinds = {i["kind"] for i in INITIALS[name]}
    assert kinds | {"file"} >= set(cls.Initial.model_fields["kind"].annotation.__args__)
    params = dict(SMALL[name][0], bodies=2) if name == "nbody" else SMALL[name][0]
    solver = cls(cls.Params(**params))
    moved = []
    for spec in INITIALS[name]:
        initial = cls.Initial(**spec)
        state = solver.initial_state(initial, np.random.default_rng(5))
        for param in cls.differentiable:
            value = getattr(solver.params, param) * 1.25
            other = with_params(solver, {param: value}).initial_state(
                initial, np.random.default_rng(5))
            declared = param in solver.initial_params(initial)
            if all(np.array_equal(state[k], other[k]) for k in state):
                assert not declared, (spec, param)
                continue
            moved.append((spec["kind"], param))
            assert declared, (spec, param)
            at = solver.initial_at(initial, state, {param: np.asarray(value)})
            for key in state:
                np.testing.assert_allclose(at[key], other[key], rtol=1e-14, atol=0)
            same = solver.initial_at(initial, state, {param: np.asarray(
                float(getattr(solver.params, param)))})
            for key in state:
                np.testing.assert_array_equal(same[key], state[key])
    assert moved == ([("plummer", "gravity"), ("kepler", "gravity")] if name == "nbody" else [])


def test_every_differentiable_solver_is_covered():
    declared = {name for name in available_solvers()
                if load_solver(name).differentiable}
    assert declared == set(SMALL)
    assert load_solver("ising2d").differentiable == ()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_dot_product(name):
    """<J v, w> = <v, J^T w> for the map (parameters, initial fields) -> final fields."""
    require_backend("jax")
    import jax
    import jax.numpy as jnp

    run = run_function(small(name, 4), backend="jax", checkpoint="all")
    p0, f0 = run.initial_params(), run.initial_fields()

    def final(p, f):
        return run(p, f)[0]

    rng = np.random.default_rng(2)
    vp = {k: jnp.asarray(rng.standard_normal()) for k in p0}
    vf = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in f0.items()}
    w = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in f0.items()}
    @jax.jit
    def both(p, f, a, b, c):
        _, forward = jax.jvp(final, (p, f), (a, b))
        _, pullback = jax.vjp(final, p, f)
        return forward, *pullback(c)

    jv, jtp, jtf = both(p0, f0, vp, vf, w)
    left = float(sum(jnp.sum(jv[k] * w[k]) for k in w))
    right = float(sum(vp[k] * jtp[k] for k in vp) + sum(jnp.sum(vf[k] * jtf[k]) for k in vf))
    scale = float(sum(jnp.sum(jnp.abs(jv[k] * w[k])) for k in w))
    assert abs(left - right) <= 1e-12 * scale


# ------------------------------------------------------------------ JAX against torch


@pytest.mark.parametrize("name", sorted(SMALL))
def test_jax_and_torch_gradients_agree(name):
    require_backend("jax")
    require_backend("torch")
    scenario = small(name, 6, outputs={"s": {"every": 2, "fields": "all"}})
    found = {}
    for lib in GRAD_BACKENDS:
        run = run_function(scenario, backend=lib)
        p0, f0 = run.initial_params(), run.initial_fields()
        loss = _linear_loss(run, _weights(run, 3))
        found[lib] = _value_and_grad(run, loss, p0, f0, list(p0), list(f0))
    (vj, gj), (vt, gt) = found["jax"], found["torch"]
    assert vt == pytest.approx(vj, rel=1e-10)
    assert set(gj) == set(gt)
    for key in gj:
        np.testing.assert_allclose(gt[key], gj[key], rtol=1e-10,
                                   atol=1e-10 * float(np.abs(gj[key]).max()))


# ------------------------------------------------------------------ checkpointing


def test_checkpointed_equals_store_everything(lib):
    scenario = small("heat2d", 23, outputs={"s": {"at": [3, 10, 11, 22], "fields": ["u"]}})
    found = {}
    for policy in ("sqrt", "all"):
        run = run_function(scenario, backend=lib, checkpoint=policy)
        p0, f0 = run.initial_params(), run.initial_fields()
        found[policy] = _value_and_grad(run, _linear_loss(run, _weights(run)), p0, f0,
                                        ["diffusivity"], ["u"])
    assert found["sqrt"][0] == found["all"][0]
    for key in ("diffusivity", "u"):
        np.testing.assert_allclose(found["sqrt"][1][key], found["all"][1][key], rtol=1e-13,
                                   atol=0)


def test_sqrt_policy_holds_order_sqrt_states():
    policy = Checkpointing.parse("sqrt")
    assert policy.segment_length(10_000) == 100
    assert policy.states_held(10_000) == 200
    assert policy.segment_length(23) == 5 and policy.states_held(23) == 10
    assert Checkpointing.parse("all").states_held(10_000) == 10_001


#: Binomial against store-everything: a scenario with a capture stream, the names differentiated
#: and an adjoint stream.
BINOMIAL_CASES = {
    "heat2d": (small("heat2d", 23, outputs={"s": {"at": [3, 10, 11, 23], "fields": ["u"]}}),
               ["diffusivity", "u"], {"adjoint": {"at": [0, 4, 11, 17, 23], "fields": ["u"]}}),
    "gray_scott": (small("gray_scott", 12, outputs={"s": {"every": 5, "fields": ["v"],
                                                          "diagnostics": ["v_std"]}}),
                   ["feed", "kill", "u", "v"], {"adjoint": {"every": 3, "fields": ["u", "v"]}}),
}


@pytest.mark.parametrize("slots", [1, 3, 6, 100])
@pytest.mark.parametrize("name", sorted(BINOMIAL_CASES))
def test_binomial_equals_store_everything(lib, name, slots):
    scenario, wrt, adjoint = BINOMIAL_CASES[name]
    loss = _linear_loss(run_function(scenario, backend=lib), _weights(run_function(scenario)))
    every, binomial = (value_and_grad(scenario, loss, wrt, backend=lib, checkpoint=policy,
                                      gradients=adjoint)
                       for policy in ("all", {"binomial": slots}))
    assert binomial.value == pytest.approx(every.value, rel=1e-13)
    for key in wrt:
        assert np.any(every.grad[key] != 0)
        np.testing.assert_allclose(binomial.grad[key], every.grad[key], rtol=1e-13,
                                   atol=1e-13 * float(np.abs(every.grad[key]).max()))
    for field in adjoint["adjoint"]["fields"]:
        expected = every.adjoints["adjoint"][field]
        np.testing.assert_array_equal(binomial.adjoints["adjoint"]["step"],
                                      every.adjoints["adjoint"]["step"])
        np.testing.assert_allclose(binomial.adjoints["adjoint"][field], expected, rtol=1e-13,
                                   atol=1e-13 * float(np.abs(expected).max()))


def test_binomial_captures_and_nonzero_probes_equal_store_everything(lib):
    """Captures agree, and states recomputed on the way back carry the probes as the forward
    ones did (a probe of a nonlinear run moves the gradient)."""
    scenario = BINOMIAL_CASES["gray_scott"][0]
    rng = np.random.default_rng(7)
    found = []
    for policy in ("all", {"binomial": 2}):
        run = run_function(scenario, backend=lib, checkpoint=policy, probe_steps=[4, 9])
        p0, f0 = run.initial_params(), run.initial_fields()
        probes = {"v": run.backend.asarray(0.05 * rng.standard_normal((2, 8, 8)))}
        rng = np.random.default_rng(7)
        loss = _linear_loss(run, _weights(run))
        _, captures = run(p0, f0, probes)
        if lib == "jax":
            import jax

            def of_feed(feed, run=run, loss=loss, p0=p0, f0=f0, probes=probes):
                return loss(*run({**p0, "feed": feed}, f0, probes))

            gradient = jax.grad(of_feed)(p0["feed"])
        else:
            feed = p0["feed"].clone().requires_grad_(True)
            loss(*run({**p0, "feed": feed}, f0, probes)).backward()
            gradient = feed.grad
        found.append((captures, float(gradient)))
    (every, g_every), (binomial, g_binomial) = found
    np.testing.assert_array_equal(binomial["s"]["step"], [0, 5, 10])
    for key in ("v", "v_std"):
        np.testing.assert_array_equal(np.asarray(binomial["s"][key]), np.asarray(every["s"][key]))
    assert g_binomial == pytest.approx(g_every, rel=1e-13)


@functools.cache
def _fewest_advances_by_search(steps: int, slots: int) -> int:
    """The fewest steps advanced to reverse ``steps`` steps with ``slots`` stored states, by
    trying every place to store the next state."""
    if steps <= 1:
        return 0
    if slots == 1:
        return steps * (steps - 1) // 2
    return min(m + _fewest_advances_by_search(steps - m, slots - 1)
               + _fewest_advances_by_search(m, slots) for m in range(1, steps))


@pytest.mark.parametrize("slots", [1, 2, 3, 5])
def test_binomial_schedule_is_optimal_and_holds_its_slots(slots):
    for steps in range(1, 45):
        schedule = binomial_schedule(steps, slots)
        # Follow it: each row starts from the state its slot holds, steps go back last to first.
        held = {slot: step for step, slot in schedule.sweep_stores.items()}
        held[WORKING] = schedule.working_step
        reversed_steps = []
        for row in schedule.rows:
            assert held[row.src] == row.k0 <= row.k1
            if row.dst >= 0:
                held[row.dst] = row.k1
            if row.reverse:
                reversed_steps.append(row.k1)
        assert reversed_steps == list(range(steps - 1, -1, -1))
        assert max(held) < slots and schedule.slots_used <= slots
        # The forward sweep advances n - 1 steps of the schedule's; Griewank's r n - C(s+r, s+1).
        total = steps - 1 + schedule.recomputed_steps
        assert total == _fewest_advances_by_search(steps, slots) == fewest_advances(steps, slots)
    assert binomial_schedule(10, 1).recomputed_steps == 45 - 9  # n(n-1)/2 from the one state


def test_binomial_policy_states_held():
    policy = Checkpointing.parse({"binomial": 20})
    assert policy.form == {"binomial": 20} and str(policy) == "{binomial: 20}"
    # 20 stored states cover C(24, 20) = 10626 >= 10^4 steps with 4 repetitions.
    assert policy.states_held(10_000) == 21
    assert policy.schedule(10_000).recomputed_steps == 4 * 10_000 - math.comb(24, 21) - 9_999
    assert Checkpointing.parse({"binomial": 100}).states_held(23) == 24  # all 23 stored
    assert Checkpointing.parse({"binomial": 1}).states_held(23) == 2


def test_binomial_on_torch_calls_the_step_as_scheduled(monkeypatch):
    require_backend("torch")
    import simkit.autodiff._function as function

    calls = []

    def counting(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def counted(*a):
            calls.append(int(a[2]))
            return step(*a)

        return counted

    monkeypatch.setattr(function, "make_step", counting)
    scenario = small("heat2d", 23, outputs={"s": {"every": 4, "fields": ["u"]}})
    for slots in (1, 3, 30):
        calls.clear()
        result = value_and_grad(scenario, _loss, ["diffusivity", "u"], backend="torch",
                                checkpoint={"binomial": slots})
        assert np.isfinite(result.grad["u"]).all()
        schedule = binomial_schedule(23, slots)
        # The sweep, the recomputation and each step's own backward; nothing else.
        assert len(calls) == 23 + schedule.recomputed_steps + 23
        assert calls[:23] == list(range(23))
    assert binomial_schedule(23, 30).recomputed_steps == 0
    assert binomial_schedule(23, 3).recomputed_steps == fewest_advances(23, 3) - 22 > 0


def test_binomial_jax_plans_bounded_memory():
    """XLA's plan for the binomial gradient holds about N states, store-everything n."""
    require_backend("jax")
    import jax
    import jax.numpy as jnp

    scenario = small("heat2d", 200)
    scenario["params"] = {**scenario["params"], "shape": [32, 32]}
    state = 32 * 32 * 8
    planned = {}
    for policy in ("all", {"binomial": 4}):
        run = run_function(scenario, backend="jax", checkpoint=policy)
        p0, f0 = run.initial_params(), run.initial_fields()

        def loss(p, f, run=run):
            return jnp.sum(run(p, f)[0]["u"] ** 2)

        stats = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(p0, f0).compile().memory_analysis()
        if stats is None:
            pytest.skip("XLA does not report memory on this backend")
        planned[str(run.checkpointing)] = (stats.temp_size_in_bytes
                                           + stats.output_size_in_bytes) / state
    assert planned["all"] > 200
    assert planned["{binomial: 4}"] < 4 + 8


# ------------------------------------------------------------------ JAX transformations


def test_jax_function_jits_and_vmaps():
    require_backend("jax")
    import jax
    import jax.numpy as jnp

    run = run_function(small("heat2d", 8, outputs={"s": {"every": 4, "fields": ["u"]}}),
                       backend="jax")
    f0 = run.initial_fields()

    def snapshot(d):
        final, captures = run({"diffusivity": d}, f0)
        return final["u"], captures["s"]["u"]

    ds = jnp.asarray([0.3, 0.5, 0.9])
    finals, snaps = jax.jit(jax.vmap(snapshot))(ds)
    assert snaps.shape == (3, 3, 6, 7)
    for i, d in enumerate([0.3, 0.5, 0.9]):
        final, captures = run({"diffusivity": run.scalar(d)}, f0)
        np.testing.assert_allclose(finals[i], final["u"], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(snaps[i], captures["s"]["u"], rtol=1e-13, atol=1e-15)


def test_captures_match_a_run_file(lib, in_tmp):
    scenario = heat_scenario(dt=0.2, outputs={"snap": {"every": 3, "fields": ["u"]},
                                              "diag": {"at": [0, 5, 12],
                                                       "diagnostics": ["energy"]}})
    run = run_function(scenario, backend=lib)
    final, captures = run(run.initial_params(), run.initial_fields())
    result = simkit.run(scenario)
    with xr.open_dataset(result.path, group="snap") as snap, \
            xr.open_dataset(result.path, group="diag") as diag:
        np.testing.assert_array_equal(captures["snap"]["step"], snap.step.values)
        np.testing.assert_allclose(np.asarray(captures["snap"]["u"]), snap.u.values, rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(np.asarray(captures["diag"]["energy"]), diag.energy.values,
                                   rtol=1e-12)
    np.testing.assert_allclose(np.asarray(final["u"]), result.state["u"], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ float32


def test_float32_gradients(lib):
    found = {}
    for dtype in ("float32", "float64"):
        run = run_function(small("heat2d", 9, dtype=dtype), backend=lib)
        p0, f0 = run.initial_params(), run.initial_fields()
        value, grads = _value_and_grad(run, _linear_loss(run, _weights(run)), p0, f0,
                                       ["diffusivity"], ["u"])
        assert grads["u"].dtype == np.dtype(dtype)
        found[dtype] = grads
    np.testing.assert_allclose(found["float32"]["diffusivity"], found["float64"]["diffusivity"],
                               rtol=1e-4)
    np.testing.assert_allclose(found["float32"]["u"], found["float64"]["u"], rtol=1e-4,
                               atol=1e-5)


def test_torch_gradients_after_an_inference_mode_run(in_tmp):
    """A torch run (inference mode) first must not leave tensors the gradient path trips on."""
    require_backend("torch")
    scenario = small("navier_stokes2d", 4, backend="torch", output="ns.nc")
    simkit.run(scenario)
    result = value_and_grad(scenario, lambda final, captures: (final["omega"] ** 2).sum(),
                            ["viscosity", "omega"], backend="torch")
    assert result.grad["viscosity"] < 0  # more viscosity, less enstrophy
    assert np.isfinite(result.grad["omega"]).all()


# ------------------------------------------------------------------ adjoint streams, files


def test_adjoint_stream_holds_dl_du_k(lib):
    scenario = small("heat2d", 10)
    weights = {"u": np.random.default_rng(4).standard_normal((6, 7))}
    w = {"u": run_function(scenario, backend=lib).backend.asarray(weights["u"])}

    def loss(final, captures):
        return (w["u"] * final["u"]).sum()

    result = value_and_grad(scenario, loss, ["u"], backend=lib,
                            gradients={"adjoint": {"at": [0, 4, 10], "fields": ["u"]}})
    adjoint = result.adjoints["adjoint"]
    np.testing.assert_array_equal(adjoint["step"], [0, 4, 10])
    # At the last step dL/du_n = w; at step 0 it is the initial-field gradient.
    np.testing.assert_array_equal(adjoint["u"][2], weights["u"])
    np.testing.assert_allclose(adjoint["u"][0], result.grad["u"], rtol=1e-14, atol=1e-15)
    # At step 4 it is the initial-field gradient of the remaining 6 steps.
    rest = value_and_grad(small("heat2d", 6), loss, ["u"], backend=lib)
    np.testing.assert_allclose(adjoint["u"][1], rest.grad["u"], rtol=1e-13, atol=1e-15)


def test_gradient_streams_take_step_schedules_and_keep_fields_only():
    """A gradient stream is a stream of fields on a schedule of known steps: last is one,
    fields default to all; a stage, a condition or an unknown field is refused, naming its
    key."""
    require_backend("torch")

    def loss(final, captures):
        return (final["u"] ** 2).sum()

    result = value_and_grad(small("heat2d", 5), loss, ["u"], backend="torch",
                            gradients={"end": {"last": True}, "both": {"every": 4, "last": True}})
    np.testing.assert_array_equal(result.adjoints["end"]["step"], [5])
    np.testing.assert_array_equal(result.adjoints["both"]["step"], [0, 4, 5])
    typed = value_and_grad(small("heat2d", 5), loss, ["u"], backend="torch",
                           gradients={"end": simkit.Stream(last=True, fields="all")})
    np.testing.assert_array_equal(typed.adjoints["end"]["u"], result.adjoints["end"]["u"])
    run = run_function(small("heat2d", 5), backend="torch")
    final, _ = run({}, run.initial_fields())
    np.testing.assert_allclose(result.adjoints["end"]["u"][0], 2 * final["u"].numpy(),
                               rtol=1e-15)
    for spec, message in [
        ({"every": 2, "stage": "laplacian"}, "gradients.a.stage: unknown schedule key"),
        ({"when": {"diagnostic": "energy", "above": 1.0}},
         "gradients.a: expected step schedules (every, at, logspace, first, last, window) in a "
         "differentiable run, given when"),
        ({"any": [{"every": 2}, {"sim_time": 0.3}]},
         "gradients.a: expected step schedules (every, at, logspace, first, last, window) in a "
         "differentiable run, given sim_time"),
        ({"every": 2, "fields": "w"}, "gradients.a.fields: expected fields of heat2d (u), "
                                      "given 'w'"),
        ([1, 2], "gradients.a: expected a mapping of a schedule and fields, given [1, 2]"),
    ]:
        with pytest.raises(ScenarioError) as raised:
            value_and_grad(small("heat2d", 5), loss, ["u"], backend="torch",
                           gradients={"a": spec})
        assert str(raised.value).startswith(message), (spec, str(raised.value))


def test_misfit_and_gradient_file(lib, in_tmp):
    reference = heat_scenario(dt=0.2, steps=8, output="truth.nc",
                              outputs={"snap": {"every": 2, "fields": ["u"]}})
    simkit.run(reference)
    objective = misfit("truth.nc", "snap")
    assert objective.units == "K2"
    at_truth = value_and_grad(reference, objective, ["diffusivity"], backend=lib)
    assert at_truth.value == pytest.approx(0.0, abs=1e-20)
    assert at_truth.grad["diffusivity"] == pytest.approx(0.0, abs=1e-12)
    off = heat_scenario(dt=0.2, steps=8, params={"diffusivity": 0.8},
                        outputs={"snap": {"every": 2, "fields": ["u"]}})
    result = value_and_grad(off, objective, ["diffusivity", "u"], backend=lib,
                            gradients={"adjoint": {"every": 4, "fields": ["u"]}},
                            output="guess.nc")
    assert result.value > 0 and result.grad["diffusivity"] < 0
    with xr.open_dataset("guess.nc") as root, xr.open_dataset("guess.nc", group="adjoint") as adj:
        assert float(root.objective) == result.value
        assert root.objective.units == "K2"
        assert float(root.gradient_diffusivity) == result.grad["diffusivity"]
        assert root.gradient_diffusivity.units == "K2/(m2 s-1)"
        np.testing.assert_array_equal(root.gradient_initial_u.values, result.grad["u"])
        assert root.attrs["simkit_gradient_streams"] == "adjoint"
        assert root.attrs["simkit_streams"] == "snap"
        assert adj.u.units == "K2/(K)"
        np.testing.assert_array_equal(adj.step.values, [0, 4, 8])
        np.testing.assert_allclose(adj.time.values, [0.0, 0.8, 1.6])
        np.testing.assert_array_equal(adj.u.values, result.adjoints["adjoint"]["u"])
        for i, step in enumerate(adj.step.values):
            crc = capture_checksum(int(step), float(adj.time.values[i]),
                                   {"u": adj.u.values[i]}, ("u",))
            assert int(adj.simkit_crc32.values[i]) == crc
    text = describe("guess.nc")
    assert f"objective misfit_snap: {result.value:.6g} K2 (checkpoint sqrt, 3 of the run's " \
           "checkpoints reused)" in text  # snap keeps every field: steps 2, 4, 6
    assert f"gradient diffusivity: {result.grad['diffusivity']:.6g} K2/(m2 s-1)" in text
    assert "adjoint stream adjoint: u; steps 0, 4, 8 (3)" in text
    assert "fields u\n" in text  # the gradients are not listed as fields
    assert "  gradient initial.u: 24 x 20 array, largest |value| " in text
    with pytest.raises(ScenarioError, match="expected the run's stream snap to capture every "
                                            "observed step, given none at step 2"):
        value_and_grad({**off, "outputs": {"snap": {"every": 4, "fields": ["u"]}}}, objective,
                       ["diffusivity"], backend=lib)


@pytest.mark.parametrize("policy", ["sqrt", "all", {"binomial": 2}], ids=str)
def test_a_written_run_is_taken_backward_from_its_own_checkpoints(lib, policy, in_tmp,
                                                                  monkeypatch):
    """With a run file to write and checkpoints in it, the backward pass goes segment by segment
    from the file's states (no call of the run function spans more than a segment) and gives
    the whole-run function's value, gradients and adjoints; captures of fields and diagnostics
    inside and at the ends of segments, and adjoints at checkpoints, all reach the gradient."""
    scenario = small("gray_scott", steps=11, backend=lib, outputs={
        "checkpoint": {"every": 3, "fields": "all"},
        "diag": {"every": 2, "diagnostics": ["v_std", "mean_u"]},
        "snap": {"at": [0, 4, 6, 11], "fields": ["u"]}})

    def objective(final, captures):
        return (0.5 * (final["v"] ** 2).sum() + (captures["snap"]["u"] ** 3).sum()
                + 2.0 * captures["diag"]["v_std"].sum() + captures["diag"]["mean_u"].sum())

    options = {"backend": lib, "checkpoint": policy,
               "gradients": {"adjoint": {"at": [0, 3, 5, 11], "fields": ["u", "v"]}}}
    wrt = ["feed", "kill", "u", "v"]
    whole = value_and_grad(scenario, objective, wrt, **options)
    from simkit.autodiff._function import DifferentiableRun

    spans, call = [], DifferentiableRun.__call__

    def spy(self, *args, **kwargs):
        spans.append(self.steps)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(DifferentiableRun, "__call__", spy)
    written = value_and_grad(scenario, objective, wrt, output="run.nc", **options)
    assert spans and max(spans) <= 3, spans
    assert written.value == pytest.approx(whole.value, rel=1e-13)
    for name in wrt:
        np.testing.assert_allclose(written.grad[name], whole.grad[name], rtol=1e-11,
                                   atol=1e-13 * np.max(np.abs(whole.grad[name])), err_msg=name)
    for name in ("u", "v"):
        got, want = written.adjoints["adjoint"][name], whole.adjoints["adjoint"][name]
        assert np.max(np.abs(want[1])) > 0  # the adjoint at a checkpoint is not lost
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13 * np.max(np.abs(want)))
    with xr.open_dataset("run.nc") as root:
        assert int(root.attrs["simkit_checkpoints_reused"]) == 3  # steps 3, 6, 9


@pytest.mark.parametrize("slots", [1, 4])
def test_reused_segments_shorter_than_the_binomial_slots(lib, slots, in_tmp):
    """Segments of 1 to 3 steps under {binomial: N} with N up to 4, some of them taking no
    capture that the objective reads: the whole-run store-everything numbers."""
    scenario = {"solver": "heat2d", "params": {"shape": [8, 8], "diffusivity": 0.7},
                "initial": {"kind": "noise"}, "steps": 14, "dt": 0.1, "seed": 1, "backend": lib,
                "outputs": {"snapshots": {"every": 5, "fields": ["u"]},
                            "ck": {"every": 3, "fields": "all"}}}

    def objective(final, captures):
        return (final["u"] ** 2).sum() + (captures["snapshots"]["u"] ** 2).sum()

    whole = value_and_grad(scenario, objective, ["diffusivity", "u"], checkpoint="all")
    written = value_and_grad(scenario, objective, ["diffusivity", "u"], output="run.nc",
                             checkpoint={"binomial": slots})
    assert written.value == pytest.approx(whole.value, rel=1e-13)
    assert written.grad["diffusivity"] == pytest.approx(whole.grad["diffusivity"], rel=1e-12)
    np.testing.assert_allclose(written.grad["u"], whole.grad["u"], rtol=1e-12,
                               atol=1e-13 * np.max(np.abs(whole.grad["u"])))
    with xr.open_dataset("run.nc") as root:
        # u is heat2d's whole state: the snapshots are checkpoints too (steps 3, 5, 6, 9, 10,
        # 12), segments of 1 to 3 steps.
        assert int(root.attrs["simkit_checkpoints_reused"]) == 6


@pytest.mark.parametrize("policy", ["sqrt", {"binomial": 2}], ids=str)
def test_segments_of_one_shape_are_traced_once_on_jax(policy, in_tmp, monkeypatch):
    """Segments alike but for where they start share one compiled backward pass (the step
    offset is an argument, under binomial too): the run function is traced once for four
    segments."""
    require_backend("jax")
    scenario = small("heat2d", steps=12, backend="jax",
                     outputs={"checkpoint": {"every": 3, "fields": "all"}})
    from simkit.autodiff._function import DifferentiableRun

    spans, call = [], DifferentiableRun.__call__

    def spy(self, *args, **kwargs):
        spans.append(self.steps)
        return call(self, *args, **kwargs)

    def objective(final, captures):
        return (final["u"] ** 2).sum()

    whole = value_and_grad(scenario, objective, ["diffusivity"], checkpoint=policy)
    monkeypatch.setattr(DifferentiableRun, "__call__", spy)
    written = value_and_grad(scenario, objective, ["diffusivity"], checkpoint=policy,
                             output="run.nc")
    assert spans == [3], spans
    assert written.grad["diffusivity"] == pytest.approx(whole.grad["diffusivity"], rel=1e-12)


def test_a_float32_run_reuses_its_checkpoints_with_float64_summaries(lib, in_tmp):
    """Summaries are float64 in a float32 run: the backward pass takes them from the file in
    float64 (as the whole-run function computes them), and agrees with it in float32."""
    scenario = small("heat2d", steps=8, backend=lib, dtype="float32", outputs={
        "checkpoint": {"every": 4, "fields": "all"},
        "sm": {"every": 2, "fields": [], "summaries": {"u": ["mean", "std"]}}})

    def objective(final, captures):
        return captures["sm"]["u_std"].sum() + 3.0 * captures["sm"]["u_mean"].sum()

    whole = value_and_grad(scenario, objective, ["diffusivity", "u"])
    written = value_and_grad(scenario, objective, ["diffusivity", "u"], output="run.nc")
    assert written.value == pytest.approx(whole.value, rel=1e-6)
    assert written.grad["diffusivity"] == pytest.approx(whole.grad["diffusivity"], rel=1e-4)
    np.testing.assert_allclose(written.grad["u"], whole.grad["u"], rtol=1e-4,
                               atol=1e-5 * np.max(np.abs(whole.grad["u"])))


@pytest.mark.parametrize(("returns", "given"), [
    (lambda final: final["u"].sum(axis=0), "an array of shape (7,) and dtype float"),
    (lambda final: (final["u"] > 0).sum(), "an array of shape () and dtype int64")])
@pytest.mark.parametrize("written", [False, True], ids=["function", "file"])
def test_an_objective_that_is_not_a_real_scalar_is_refused(lib, in_tmp, returns, given,
                                                            written):
    """One line naming ``objective`` (said when it is taken of the run: the objective is the
    user's code, run on the run's own values only); with a file, that the file holds the forward
    run without gradients."""
    scenario = small("heat2d", steps=4, backend=lib,
                     outputs={"checkpoint": {"every": 2, "fields": "all"}})
    expected = r"objective: expected an objective that returns a real scalar .*" + \
        re.escape(given) + (r".* \(the forward run is written to .*run\.nc, without gradients\)"
                            if written else "")
    with pytest.raises(ScenarioError, match=expected):
        value_and_grad(scenario, lambda final, captures: returns(final), ["diffusivity"],
                       output="run.nc" if written else None)


def test_objectives_with_state_and_strided_views_work(lib, in_tmp):
    """An objective is called only on the run's own values: one that keeps what it saw first
    (a mask of the final state) or reshapes its captures gives the whole-run function's
    numbers, with and without a file."""
    scenario = small("heat2d", steps=4, backend=lib, outputs={
        "checkpoint": {"every": 2, "fields": "all"}, "snap": {"every": 2, "fields": ["u"]}})

    class Masked:
        def __init__(self):
            self.mask = None

        def __call__(self, final, captures):
            if self.mask is None:
                self.mask = final["u"] > 0
            kept = captures["snap"]["u"].reshape(-1)
            xp = array_namespace(kept)
            return xp.sum(xp.where(self.mask, final["u"], 0.0)) + xp.sum(kept * kept)

    whole = value_and_grad(scenario, Masked(), ["diffusivity"])
    written = value_and_grad(scenario, Masked(), ["diffusivity"], output="run.nc")
    assert whole.value != 0
    assert written.value == pytest.approx(whole.value, rel=1e-13)
    assert written.grad["diffusivity"] == pytest.approx(whole.grad["diffusivity"], rel=1e-11)


def test_a_written_run_without_checkpoints_runs_its_steps_forward_itself(in_tmp):
    """No full-state stream: nothing to start from, the gradient runs the steps itself (and
    says it reused none)."""
    require_backend("jax")
    scenario = small("heat2d", steps=6, backend="jax",
                     outputs={"diag": {"every": 2, "diagnostics": ["energy"]}})

    def objective(final, captures):
        return captures["diag"]["energy"].sum()

    whole = value_and_grad(scenario, objective, ["diffusivity"])
    written = value_and_grad(scenario, objective, ["diffusivity"], output="run.nc")
    assert written.grad["diffusivity"] == pytest.approx(whole.grad["diffusivity"], rel=1e-13)
    with xr.open_dataset("run.nc") as root:
        assert int(root.attrs["simkit_checkpoints_reused"]) == 0


# ------------------------------------------------------------------ refusals


def _loss(final, captures):
    return sum((v * v).sum() for v in final.values())


@pytest.mark.parametrize(("scenario", "options", "message"), [
    ({"solver": "ising2d", "params": {"shape": [8, 8]}, "steps": 2}, {"wrt": ["temperature"]},
     "solver: expected a differentiable solver .*given ising2d, which declares none"),
    (small("heat2d"), {"wrt": ["shape"]},
     r"wrt: expected a differentiable parameter of heat2d \(diffusivity\), "
     r"given 'shape'"),
    (small("gray_scott"), {"wrt": ["length"]},
     r"expected a differentiable parameter of gray_scott \(feed, kill, diffusivity_u, "
     r"diffusivity_v\), given 'length'"),
    (small("heat2d"), {"wrt": ["u"], "checkpoint": {"binomial": 0}},
     r"checkpoint: expected \{binomial: N\} with N an integer of at least 1 \(the states "
     r"stored\), given \{'binomial': 0\}"),
    (small("heat2d"), {"wrt": ["u"], "checkpoint": {"binomial": 2.5}},
     r"checkpoint: expected \{binomial: N\} .*given \{'binomial': 2.5\}"),
    (small("heat2d"), {"wrt": ["u"], "checkpoint": "some"},
     r"checkpoint: expected one of all, sqrt, \{binomial: N\}, given 'some'"),
    (small("heat2d"), {"wrt": ["u"], "backend": "numpy"},
     r"backend: expected a backend that differentiates \(jax, torch\), given 'numpy'"),
    (small("heat2d", outputs={"s": {"sim_time": 0.3}}), {"wrt": ["u"]},
     "outputs.s: expected step schedules .* given sim_time"),
    ({**small("heat2d"), "steps": None, "until": 1.0}, {"wrt": ["u"]},
     "steps: expected a run length in steps"),
    (small("heat2d"), {"wrt": ["initial.v"]},
     r"wrt: expected initial fields of heat2d \(u\), given 'v'"),
])
def test_refusals(scenario, options, message):
    require_backend("torch")
    options = {"backend": "torch", **options}
    wrt = options.pop("wrt")
    scenario = {k: v for k, v in scenario.items() if v is not None}
    with pytest.raises(ScenarioError, match=message):
        value_and_grad(scenario, _loss, wrt, **options)


# ------------------------------------------------------------------ the scenario form


def test_simkit_run_of_a_scenario_with_an_objective(in_tmp, capsys):
    require_backend("torch")
    import yaml

    from simkit.cli import main

    truth = heat_scenario(dt=0.2, steps=6, output="truth.nc",
                          outputs={"obs": {"every": 3, "fields": ["u"]}})
    simkit.run(truth)
    guess = {**truth, "params": {**truth["params"], "diffusivity": 0.6}, "output": "guess.nc",
             "objective": {"misfit": {"path": "truth.nc", "stream": "obs"},
                           "wrt": ["diffusivity"], "backend": "torch"},
             "gradients": {"adjoint": {"at": [0, 6], "fields": ["u"]}}}
    (in_tmp / "guess.yaml").write_text(yaml.safe_dump(guess, sort_keys=False))
    assert main(["run", "guess.yaml"]) == 0
    assert capsys.readouterr().out.strip() == "guess.nc"
    expected = value_and_grad(guess, misfit("truth.nc", "obs"), ["diffusivity"], backend="torch")
    with xr.open_dataset("guess.nc") as root, xr.open_dataset("guess.nc", group="adjoint") as adj:
        assert float(root.objective) == expected.value
        assert float(root.gradient_diffusivity) == expected.grad["diffusivity"]
        np.testing.assert_array_equal(adj.step.values, [0, 6])
        assert json.loads(root.attrs["simkit_checkpoint"]) == "sqrt"
    assert main(["run", "guess.yaml", "--overwrite", "--set",
                 "objective.checkpoint={binomial: 2}"]) == 0
    capsys.readouterr()
    with xr.open_dataset("guess.nc") as root:
        assert json.loads(root.attrs["simkit_checkpoint"]) == {"binomial": 2}
        assert float(root.gradient_diffusivity) == pytest.approx(expected.grad["diffusivity"],
                                                                 rel=1e-13)
    assert main(["run", "guess.yaml", "--overwrite", "--set", "objective.wrt=[spacing]"]) == 2
    err = capsys.readouterr().err
    assert err == ("simkit: error: guess.yaml (--set objective.wrt=[spacing]): objective.wrt: "
                   "expected a differentiable parameter of heat2d (diffusivity), given "
                   "'spacing'\n")


_GUESS = """\
solver: heat2d
params: {shape: [24, 20], spacing: 1.0, diffusivity: 0.6}
initial: {kind: noise, amplitude: 1.0}
steps: 6
dt: 0.2
seed: 3
outputs:
  obs: {every: 3, fields: [u]}
objective:
  misfit: {path: truth.nc, stream: obs}
  wrt: [diffusivity, u]
  backend: torch
gradients:
  adjoint: {at: [0, 6], fields: [u]}
output: guess.nc
"""


@pytest.mark.parametrize(("old", "new", "line", "message"), [
    ("backend: torch", "backend: torch\n  checkpoint: {binomial: 0}", 13,
     "objective.checkpoint: expected {binomial: N} with N an integer of at least 1 (the states "
     "stored), given {'binomial': 0}"),
    ("backend: torch", "backend: torch\n  checkpoint: some", 13,
     "objective.checkpoint: expected one of all, sqrt, {binomial: N}, given 'some'"),
    ("truth.nc", "nowhere.nc", 10,
     "objective.misfit.path: expected an existing simkit file, given 'nowhere.nc'"),
    ("truth.nc", "text.nc", 10,
     "objective.misfit.path: expected a simkit file, given one that cannot be read as NetCDF ("),
    ("truth.nc", "small.nc", 10,
     "objective.misfit.path: expected observations of u of this run's shape (24, 20), given "
     "(12, 10) in small.nc"),
    ("stream: obs}", "stream: obs, fields: [v]}", 10,
     "objective.misfit.fields: expected variables of stream obs (u), given 'v'"),
    ("stream: obs}", "stream: obs, weight: 2}", 10,
     "objective.misfit.weight: unknown key; expected one of path, stream, fields, steps, given "
     "'weight'"),
    ("[diffusivity, u]", "[diffusivity, spacing]", 11,
     "objective.wrt: expected a differentiable parameter of heat2d (diffusivity), given "
     "'spacing'"),
    ("[diffusivity, u]", "[u, u]", 11, "objective.wrt: expected each name once, given 'u' twice"),
    ("obs: {every: 3", "obs: {every: 2", 8,
     "outputs.obs: expected the run's stream obs to capture every observed step, given none "
     "at step 3"),
    ("fields: [u]}\noutput", "fields: [w]}\noutput", 14,
     "gradients.adjoint.fields: expected fields of heat2d (u), given 'w'"),
])
def test_validate_checks_the_objective_block_before_anything_runs(in_tmp, capsys, old, new,
                                                                   line, message):
    require_backend("torch")
    from simkit.cli import main

    simkit.run(heat_scenario(dt=0.2, steps=6, output="truth.nc",
                             outputs={"obs": {"every": 3, "fields": ["u"]}}))
    simkit.run(heat_scenario(dt=0.2, steps=6, output="small.nc", params={"shape": [12, 10]},
                             outputs={"obs": {"every": 3, "fields": ["u"]}}))
    (in_tmp / "text.nc").write_text("not a NetCDF file\n")
    (in_tmp / "guess.yaml").write_text(_GUESS)
    assert main(["validate", "guess.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("guess.yaml: objective misfit_obs with respect to diffusivity, u on torch, "
                      "checkpoint sqrt, adjoint streams: adjoint")
    (in_tmp / "guess.yaml").write_text(_GUESS.replace(old, new, 1))
    assert main(["validate", "guess.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing said valid
    assert captured.err.startswith(f"simkit: error: guess.yaml:{line}: {message}")
    assert captured.err.count("\n") == 1
    assert not (in_tmp / "guess.nc").exists()


def test_a_scenario_with_an_objective_runs_with_the_cli_overrides(in_tmp, capsys):
    require_backend("torch")
    from simkit.cli import main

    simkit.run(heat_scenario(dt=0.2, steps=6, output="truth.nc",
                             outputs={"obs": {"every": 3, "fields": ["u"]}}))
    (in_tmp / "guess.yaml").write_text(_GUESS.replace("  backend: torch\n", ""))
    assert main(["run", "guess.yaml", "-o", "other.nc", "--backend", "torch", "-q"]) == 0
    assert capsys.readouterr().out.strip() == "other.nc"
    with xr.open_dataset("other.nc") as root:
        assert root.attrs["simkit_backend"] == "torch"
        assert "gradient_diffusivity" in root
    assert main(["validate", "guess.yaml", "--set", "gradients.adjoint.fields=[w]"]) == 2
    assert capsys.readouterr().err == (
        "simkit: error: guess.yaml (--set gradients.adjoint.fields=[w]): gradients.adjoint."
        "fields: expected fields of heat2d (u), given 'w'\n")
    (in_tmp / "plain.yaml").write_text(_GUESS.split("objective:")[0]
                                       + "gradients:\n  adjoint: {at: [0]}\n")
    assert main(["validate", "plain.yaml"]) == 2
    assert capsys.readouterr().err == (
        "simkit: error: plain.yaml:9: gradients: expected an objective block beside gradients "
        "(they are adjoints of an objective), given none\n")


def test_top_level_api_and_with_params():
    require_backend("torch")
    from simkit.solver import with_params

    scenario = small("heat2d", 5)
    grads = simkit.grad(scenario, _loss, ["params.diffusivity"], backend="torch")
    result = simkit.value_and_grad(scenario, _loss, ["diffusivity"], backend="torch")
    value, unpacked = result
    assert value == result.value and unpacked == result.grad == grads
    solver = run_function(scenario, backend="torch").solver
    assert with_params(solver, {"diffusivity": 0.25}).params.diffusivity == 0.25
    assert with_params(solver, {"diffusivity": 0.25}).params.shape == [6, 7]
    with pytest.raises(ValueError, match="params: expected names among diffusivity, shape, "
                                         "spacing, boundary, boundary_value, given 'speed'"):
        with_params(solver, {"speed": 1.0})


def test_a_gradient_stream_of_too_many_steps_is_refused_before_it_is_listed(in_tmp):
    """A hostile gradients block (every step of a 2^53-step run) is refused at once, naming the
    stream, instead of listing its steps until memory runs out."""
    from simkit.autodiff._function import MAX_ADJOINT_STEPS, schedule_steps
    from simkit.schedule import Every, Window

    with pytest.raises(ScenarioError, match=r"gradients\.adj: expected at most 1048576 adjoint "
                                            r"steps .* given a schedule making about 9e\+15"):
        schedule_steps(Every(1), 2**53, "gradients.adj")
    assert len(schedule_steps(Window(0, MAX_ADJOINT_STEPS - 1), 2**53, "g")) == MAX_ADJOINT_STEPS


def test_a_gradient_stream_that_captures_nothing_is_refused_as_an_output_would_be():
    from simkit.autodiff._function import schedule_steps
    from simkit.schedule import At, Window

    for schedule in (Window(100, 200), At((41,))):
        with pytest.raises(ScenarioError, match=r"^gradients\.adj: expected a schedule that "
                                                r"captures within the run \(40 steps\), given one "
                                                r"that captures nothing$"):
            schedule_steps(schedule, 40, "gradients.adj")
    assert schedule_steps(Window(30, 200, 5), 40, "g") == (30, 35, 40)
