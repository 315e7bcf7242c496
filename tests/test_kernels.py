"""Stage kernels against their specification: every kernel of every shipped solver gives what the
stage's Array API ``fn`` gives, to rounding, and keeps the stage contract (a new state, the input
untouched, earlier results intact when the kernel reuses its scratch arrays)."""

from __future__ import annotations

import os
import tracemalloc
import typing
import zlib
from unittest import mock

import numpy as np
import pydantic
import pytest

from conftest import has_backend, require_backend
from simkit.solver import (
    SEED_KEY,
    STEP_KEY,
    TIME_KEY,
    AbstractSolver,
    Stage,
    available_solvers,
    load_solver,
    make_step,
    whole_step_kernels,
)

#: Shapes of the random states (odd, even, non-square, a few cache lines wide).
SHAPES = ([5, 7], [16, 16], [33, 20], [64, 96])
#: Sides for solvers on a square of ``size`` cells (cavity_lbm): the smallest, odd, a power of 2.
SIZES = (8, 17, 64)
DTYPES = ("float64", "float32")
#: Rounding allowed: relative to each value and to the largest value of the reference output.
RTOL = {"float64": 1e-12, "float32": 1e-5}
SEED = 7
#: Noise on the random states, times one plus each field's largest value. The cavity's
#: populations get less: at 0.1 some densities come near zero, where u = j / rho keeps no digits
#: and the specification's own jitted JAX and NumPy forms differ by 1e-4 in float32.
NOISE = {"cavity_lbm": 0.01}


def _variants(cls: type[AbstractSolver]) -> list[dict]:
    """Parameter sets that reach every branch a kernel may take: each shape (for solvers with a
    grid ``shape``) or side (an integer ``size``), and each choice of every Literal parameter
    (e.g. heat2d's boundary)."""
    fields = cls.Params.model_fields
    if "shape" in fields:
        variants = [{"shape": shape} for shape in SHAPES]
    elif "size" in fields and fields["size"].annotation is int:
        variants = [{"size": size} for size in SIZES]
    else:
        variants = [{}]
    for name, info in fields.items():
        if typing.get_origin(info.annotation) is typing.Literal:
            variants += [{**variants[0], name: choice}
                         for choice in typing.get_args(info.annotation)]
    return variants


def _solvers() -> typing.Iterator[tuple[str, dict, AbstractSolver]]:
    """Every registered solver under each of its variants (name, params, solver)."""
    for name in available_solvers():
        cls = load_solver(name)
        for params in _variants(cls):
            try:
                yield name, params, cls(cls.Params(**params))
            except pydantic.ValidationError:
                continue  # e.g. ising2d wants even sides: its other shapes still run


def _id(*parts: str, params: dict) -> str:
    return "-".join([*parts, *(f"{k}={v}" for k, v in params.items())])


def _kernel_cases() -> list:
    # Which kernels a stage has may depend on the parameters (heat2d's boundary).
    return [pytest.param(name, stage.name, library, params, dtype,
                         id=_id(name, stage.name, library, dtype, params=params))
            for name, params, solver in _solvers() for stage in solver.stages()
            for library in stage.kernels for dtype in DTYPES]


CASES = _kernel_cases()


def _step_kernel_cases() -> list:
    """Whole-step kernels (``AbstractSolver.step_kernels``) of every solver and variant, with the
    optional numba loops on at any size (where they are installed) so that small grids have
    theirs."""
    with mock.patch.dict(os.environ, {"SIMKIT_NUMBA": "always"}):
        return [pytest.param(name, library, params, dtype,
                             id=_id(name, library, dtype, params=params))
                for name, params, solver in _solvers()
                for library in whole_step_kernels(solver)
                for dtype in DTYPES]


STEP_CASES = _step_kernel_cases()


def _namespace(library: str):
    require_backend(library)
    if library == "jax":
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        return jnp
    if library == "torch":
        import torch

        return torch
    return np


def _state_before(solver: AbstractSolver, stage_name: str, dtype: str, rng) -> dict:
    """A random state as the stage sees it: the solver's initial fields plus noise, then every
    earlier stage of the step run by its specification (for the intermediates it adds)."""
    initial = solver.initial_state(type(solver).Initial(), rng)
    noise = NOISE.get(solver.name, 0.1)
    fields = {name: (value + noise * (1 + np.max(np.abs(value)))
                     * rng.standard_normal(value.shape)).astype(dtype)
              for name, value in initial.items()}
    state = {**fields, STEP_KEY: np.asarray(3, np.int64), TIME_KEY: np.asarray(0.6),
             SEED_KEY: SEED}
    dt = np.asarray(solver.default_dt(), dtype=dtype)
    for stage in solver.stages():
        if stage.name == stage_name:
            return state, dt
        state = stage.fn(state, dt)
    raise AssertionError(f"no stage {stage_name!r}")


def _to_library(library: str, xp, state: dict) -> dict:
    if library == "numpy":
        return dict(state)
    return {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


def _host(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch: through .numpy(), not the deprecated __array__ path
        value = value.detach().cpu().numpy()
    return np.array(value, copy=True)


def _compare(got: dict, want: dict, dtype: str, where: str) -> None:
    assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key, ref in want.items():
        if key == SEED_KEY:
            continue
        ref_host, got_host = _host(ref), _host(got[key])
        assert got_host.dtype == ref_host.dtype, f"{where} {key}: dtype {got_host.dtype}"
        scale = float(np.max(np.abs(ref_host))) if ref_host.size else 0.0
        np.testing.assert_allclose(got_host, ref_host, rtol=RTOL[dtype],
                                   atol=RTOL[dtype] * scale, err_msg=f"{where} {key}")


@pytest.mark.parametrize(("solver_name", "stage_name", "library", "params", "dtype"), CASES)
def test_kernel_matches_specification(solver_name, stage_name, library, params, dtype):
    xp = _namespace(library)
    cls = load_solver(solver_name)
    solver = cls(cls.Params(**params))
    stage: Stage = next(s for s in solver.stages() if s.name == stage_name)
    kernel, spec = stage.kernels[library], stage.fn
    # The same states in every run (``hash`` of a string changes from process to process).
    rng = np.random.default_rng(zlib.crc32(repr((solver_name, stage_name, params, dtype)).encode()))
    first, dt = _state_before(solver, stage_name, dtype, rng)
    second, _ = _state_before(solver, stage_name, dtype, rng)
    want_first, want_second = spec(first, dt), spec(second, dt)
    frozen = {k: _host(v) for k, v in first.items() if isinstance(v, np.ndarray)}
    if library == "jax":
        import jax

        def jitted(fn):
            return jax.jit(lambda arrays, dt: fn({**arrays, SEED_KEY: SEED}, dt))

        arrays = {k: v for k, v in _to_library(library, xp, first).items() if k != SEED_KEY}
        got_first = jitted(kernel)(arrays, xp.asarray(dt))
        want_jitted = jitted(spec)(arrays, xp.asarray(dt))
        _compare(got_first, want_jitted, dtype, f"{stage_name} jitted")
        _compare({**got_first, SEED_KEY: SEED}, want_first, dtype, stage_name)
        return
    got_first = kernel(_to_library(library, xp, first), xp.asarray(dt))
    # A second call while the first result is still held: scratch reuse must not reach it.
    got_second = kernel(_to_library(library, xp, second), xp.asarray(dt))
    _compare(got_first, want_first, dtype, f"{stage_name} (first call)")
    _compare(got_second, want_second, dtype, f"{stage_name} (second call)")
    for key, before in frozen.items():
        np.testing.assert_array_equal(_host(first[key]), before,
                                      err_msg=f"{stage_name} wrote into its input {key!r}")


@pytest.mark.parametrize(("solver_name", "library", "params", "dtype"), STEP_CASES)
def test_step_kernel_matches_its_stages(solver_name, library, params, dtype, monkeypatch):
    """A whole-step kernel gives the fields the stages' specifications give, run in order, on
    random states, within rounding; the state it is given is left as it was."""
    monkeypatch.setenv("SIMKIT_NUMBA", "always")
    xp = _namespace(library)
    cls = load_solver(solver_name)
    solver = cls(cls.Params(**params))
    first = solver.stages()[0].name
    host, dt = _state_before(solver, first, dtype, np.random.default_rng(SEED))
    want = host
    for stage in solver.stages():
        want = stage.fn(want, dt)
    state = _to_library(library, xp, host)
    before = {k: _host(v) for k, v in state.items() if k != SEED_KEY}
    got = whole_step_kernels(solver)[library](state, _to_library(library, xp, {"dt": dt})["dt"])
    names = [f.name for f in solver.fields()]
    _compare({k: got[k] for k in names}, {k: want[k] for k in names}, dtype,
             f"{solver_name} step kernel ({library})")
    for key, value in before.items():
        np.testing.assert_array_equal(_host(state[key]), value, err_msg=f"{key} was written")


def test_a_step_with_stage_states_wanted_runs_the_stages(monkeypatch):
    """A step asked for a stage's state runs the stages (their kernels), not the whole-step
    kernel, and gives the same fields to the bit."""
    require_backend("numba")
    monkeypatch.setenv("SIMKIT_NUMBA", "always")
    cls = load_solver("heat2d")
    solver = cls(cls.Params(shape=[20, 24]))
    assert whole_step_kernels(solver), "heat2d has a whole-step kernel with numba"
    u = np.random.default_rng(3).standard_normal((20, 24))
    dt = np.asarray(solver.default_dt())
    whole = make_step(solver)({"u": u}, dt, np.int64(0), np.float64(0))
    staged, seen = make_step(solver, capture_after=("laplacian",))({"u": u}, dt, np.int64(0),
                                                                 np.float64(0))
    np.testing.assert_array_equal(whole["u"], staged["u"])
    spec = solver.stages()[0].fn({"u": u}, dt)["laplacian"]
    np.testing.assert_array_equal(seen["laplacian"]["laplacian"], spec)


def test_a_subclass_that_changes_the_stages_does_not_inherit_the_step_kernel(monkeypatch):
    """A solver deriving from heat2d with a stage of its own runs its stages, not heat2d's
    whole-step kernel (which would skip that stage)."""
    require_backend("numba")
    monkeypatch.setenv("SIMKIT_NUMBA", "always")
    heat = load_solver("heat2d")

    class Cooled(heat):
        def stages(self):
            def cool(state, dt):
                return {**state, "u": state["u"] * (1 - 0.5 * dt)}
            return [*super().stages(), Stage("cool", cool)]

    solver = Cooled(heat.Params(shape=[8, 8]))
    u, dt = np.ones((8, 8)), np.asarray(0.1)
    assert solver.step_kernels() and not whole_step_kernels(solver)  # inherited, not used
    fast = make_step(solver)({"u": u}, dt, np.int64(0), np.float64(0))["u"]
    plain = make_step(solver, kernels=False)({"u": u}, dt, np.int64(0), np.float64(0))["u"]
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_allclose(fast, 0.95)


def test_every_kernel_solver_is_covered():
    """The cases above come from the solvers themselves: the kernels this issue added are among
    them (a refactor that drops them silently would shrink the test to nothing)."""
    covered = {(c.values[0], c.values[1], c.values[2]) for c in CASES}
    for solver, stage in [("heat2d", "laplacian"), ("heat2d", "update"), ("wave2d", "kick1"),
                          ("wave2d", "drift"), ("gray_scott", "react"),
                          ("gray_scott", "diffuse")]:
        assert (solver, stage, "numpy") in covered
    assert {("heat2d", "laplacian", "jax"), ("wave2d", "kick1", "jax"),
            ("gray_scott", "diffuse", "jax")} <= covered
    for solver, stage in [("heat2d", "laplacian"), ("heat2d", "update"), ("wave2d", "kick1"),
                          ("wave2d", "drift"), ("gray_scott", "react"),
                          ("gray_scott", "diffuse"), ("nbody", "kick1"), ("nbody", "kick2")]:
        assert (solver, stage, "torch") in covered
    assert {("nbody", "kick1", "jax"), ("nbody", "kick1", "numpy")} <= covered
    for stage in ("black", "white"):
        assert {("ising2d", stage, "numpy"), ("ising2d", stage, "jax")} <= covered
    for stage in ("collide", "stream", "boundaries"):
        assert {("cavity_lbm", stage, "numpy"), ("cavity_lbm", stage, "jax")} <= covered
    if has_backend("numba"):
        assert {(c.values[0], c.values[1], c.values[2]["boundary"]) for c in STEP_CASES
                if "boundary" in c.values[2]} == {(name, library, boundary)
                                                  for name in ("heat2d",)
                                                  for library in ("numpy", "torch")
                                                  for boundary in ("periodic", "fixed")}


# ------------------------------------------------------------------ the step's choice


class _Tagged(AbstractSolver):
    """One stage whose NumPy kernel adds 1 where the specification adds 0: shows which ran."""

    name, version, description = "tagged", "1", "kernel choice probe"
    Params = Initial = None  # type: ignore[assignment]
    time_units = "s"

    def __init__(self) -> None:
        self.calls = {"fn": 0, "numpy": 0}

    def fields(self):
        from simkit.solver import FieldSpec

        return [FieldSpec("u", ("x",), "1", "u")]

    def coordinates(self):
        return []

    def initial_state(self, initial, rng):
        return {"u": np.zeros(3)}

    def stages(self):
        def spec(state, dt):
            self.calls["fn"] += 1
            return {**state, "u": state["u"] + 0.0}

        def kernel(state, dt):
            self.calls["numpy"] += 1
            return {**state, "u": state["u"] + 1.0}

        return [Stage("add", spec, kernels={"numpy": kernel})]

    def diagnostics(self):
        return []

    def default_dt(self):
        return 1.0

    def max_stable_dt(self):
        return None


def test_step_uses_the_kernel_of_the_state_library(monkeypatch):
    solver = _Tagged()
    fields, dt = {"u": np.zeros(3)}, np.asarray(1.0)
    assert make_step(solver)(fields, dt, 0, 0.0)["u"][0] == 1.0
    assert make_step(solver, kernels=False)(fields, dt, 0, 0.0)["u"][0] == 0.0
    monkeypatch.setenv("SIMKIT_KERNELS", "0")
    assert make_step(solver)(fields, dt, 0, 0.0)["u"][0] == 0.0
    if has_backend("torch"):
        import torch  # no torch kernel: the specification runs

        assert float(make_step(solver, kernels=True)({"u": torch.zeros(3)}, torch.tensor(1.0),
                                                     0, 0.0)["u"][0]) == 0.0


def test_stage_rejects_unknown_kernel_library():
    with pytest.raises(ValueError, match="kernels: expected keys among numpy, jax, torch, "
                                         "given 'cupy'"):
        Stage("add", lambda s, dt: s, kernels={"cupy": lambda s, dt: s})


# ------------------------------------------------------------------ what the kernels buy


def _grid(solver_name: str, ny: int, nx: int) -> dict:
    """Parameters for a grid of ny x nx cells (a square of ny for a solver with a ``size``)."""
    return {"size": ny} if solver_name == "cavity_lbm" else {"shape": [ny, nx]}


@pytest.mark.parametrize("solver_name", ["heat2d", "wave2d", "gray_scott", "ising2d",
                                         "cavity_lbm"])
def test_numpy_step_allocates_no_field_arrays(solver_name):
    """After a warm-up, NumPy steps with kernels allocate less than one field array in all (the
    specification allocates several per step), and every state a caller kept stays as it was."""
    cls = load_solver(solver_name)
    solver = cls(cls.Params(**_grid(solver_name, 128, 128)))
    fields = solver.initial_state(cls.Initial(), np.random.default_rng(0))
    dt = np.asarray(solver.default_dt())
    fast, plain = make_step(solver), make_step(solver, kernels=False)
    kept_fast, kept_plain = [], []
    f, g = dict(fields), dict(fields)
    for i in range(4):
        f, g = fast(f, dt, np.int64(i), np.float64(0)), plain(g, dt, np.int64(i), np.float64(0))
        kept_fast.append(f)
        kept_plain.append(g)
    for a, b in zip(kept_fast, kept_plain, strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)
    kept_fast.clear()
    # A few more steps for the pools to reach their steady size (cavity_lbm's state holds the
    # velocities of two steps, so its pool fills over several).
    for i in range(4):
        f = fast(f, dt, np.int64(i), np.float64(0))
    field_bytes = 128 * 128 * 8
    tracemalloc.start()
    try:
        for i in range(8):
            f = fast(f, dt, np.int64(i), np.float64(0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < field_bytes, f"{solver_name}: {peak} bytes allocated in 8 steps"


@pytest.mark.parametrize("solver_name", ["heat2d", "wave2d", "gray_scott", "cavity_lbm"])
def test_torch_step_reuses_its_scratch_tensors(solver_name):
    """Eager torch steps with kernels write into a few tensors of their pool, over and over (no
    new field tensor per step once warm), and give what the specification gives."""
    torch = require_backend("torch")
    cls = load_solver(solver_name)
    solver = cls(cls.Params(**_grid(solver_name, 32, 48)))
    fields = {k: torch.asarray(v) for k, v in
              solver.initial_state(cls.Initial(), np.random.default_rng(0)).items()}
    dt = torch.asarray(solver.default_dt(), dtype=torch.float64)
    fast, plain = make_step(solver), make_step(solver, kernels=False)
    f, g, pointers = dict(fields), dict(fields), set()
    with torch.inference_mode():
        for i in range(12):
            f = fast(f, dt, np.int64(i), np.float64(0))
            g = plain(g, dt, np.int64(i), np.float64(0))
            if i >= 4:
                pointers.update(v.data_ptr() for v in f.values())
    for name in f:
        np.testing.assert_allclose(f[name].numpy(), g[name].numpy(), rtol=1e-12, atol=1e-13)
    # Two states alive at a time (the step's input and its output): at most two per field.
    assert len(pointers) <= 2 * len(f), f"{solver_name}: {len(pointers)} distinct tensors"


def test_cavity_jax_kernels_differentiate_as_the_specification():
    """Gradients through a jitted cavity step with the JAX kernels are the specification's: the
    kernels are pure jax.numpy functions, so reverse mode goes through them, and so does vmap
    (as an ensemble runs them)."""
    jax = require_backend("jax")
    jnp = _namespace("jax")
    cls = load_solver("cavity_lbm")
    solver = cls(cls.Params(size=12, reynolds=50.0))
    rng = np.random.default_rng(3)
    fields = {k: jnp.asarray(v + 0.01 * rng.standard_normal(v.shape))
              for k, v in solver.initial_state(cls.Initial(), rng).items()}
    weights = jnp.asarray(rng.standard_normal((9, 12, 12)))

    def loss(kernels):
        step = make_step(solver, kernels=kernels)

        def of(f):
            state = step({**fields, "f": f}, jnp.asarray(1.0), jnp.asarray(0), jnp.asarray(0.0))
            return jnp.sum(weights * state["f"]) + jnp.sum(state["ux"] * state["uy"])

        return jax.value_and_grad(of)

    value, grad = jax.jit(loss(True))(fields["f"])
    want_value, want_grad = jax.jit(loss(False))(fields["f"])
    assert float(jnp.max(jnp.abs(grad))) > 0.1  # every population reaches the loss
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-10, atol=1e-12)
    batched = jax.jit(jax.vmap(loss(True)))(jnp.stack([fields["f"], 1.01 * fields["f"]]))[1]
    np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(want_grad), rtol=1e-10,
                               atol=1e-12)
    assert not np.allclose(np.asarray(batched[1]), np.asarray(batched[0]))


def test_torch_kernel_gives_way_to_autograd():
    """With a tensor that requires grad, the torch kernel runs the specification (its in-place
    scratch would break the graph): the gradient comes out and is the analytic one."""
    torch = require_backend("torch")
    solver = load_solver("heat2d")(load_solver("heat2d").Params(shape=[8, 8]))
    u = torch.zeros((8, 8), dtype=torch.float64, requires_grad=True)
    out = make_step(solver)({"u": u}, torch.asarray(0.2, dtype=torch.float64), 0, 0.0)
    out["u"][3, 3].backward()
    # d u'[3,3] / d u: 1 - 4 c at the centre, c at the four neighbours (c = dt D / h^2 = 0.2).
    assert float(u.grad[3, 3]) == pytest.approx(0.2)
    assert float(u.grad[2, 3]) == pytest.approx(0.2) and float(u.grad.sum()) == pytest.approx(1)
    # A time step that requires grad is recorded too: d u'[3,3] / d dt = D lap(u)[3,3].
    u0 = torch.zeros((8, 8), dtype=torch.float64)
    u0[3, 3] = 1.0
    dt = torch.asarray(0.2, dtype=torch.float64, requires_grad=True)
    make_step(solver)({"u": u0}, dt, 0, 0.0)["u"][3, 3].backward()
    assert float(dt.grad) == pytest.approx(-4.0)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_scratch_pool_never_hands_out_an_array_still_held(library):
    """An array comes back from the pool only once nothing holds it: not the caller, not a view
    of it (under torch's inference mode, as the backend steps, a view holds only the storage)."""
    import contextlib

    from simkit.solver import ScratchPool

    xp = require_backend(library)
    mode = xp.inference_mode() if library == "torch" else contextlib.nullcontext()
    with mode:
        pool, like = ScratchPool(), xp.zeros((4, 5))
        first = pool.take(like)
        first[...] = 1
        view = first[1:]
        address = id(first)
        del first
        second = pool.take(like)
        assert id(second) != address  # the view still holds the first
        second[...] = 2
        assert float(view.sum()) == 15.0
        del view
        assert id(pool.take(like)) in (address, id(second))  # free again: reused, nothing new


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize("boundary", ["periodic", "fixed"])
def test_heat_numpy_kernels_equal_specification_to_the_bit(numba, boundary, monkeypatch):
    """heat2d's NumPy kernels, through the optional numba loops and without them, give the
    specification's numbers exactly (same order of operations, same precision)."""
    if numba == "1":
        require_backend("numba")
    monkeypatch.setenv("SIMKIT_NUMBA", "always" if numba == "1" else "0")
    cls = load_solver("heat2d")
    solver = cls(cls.Params(shape=[37, 50], boundary=boundary, spacing=0.7))
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        fields = {"u": rng.standard_normal((37, 50)).astype(dtype)}
        dt = np.asarray(solver.default_dt(), dtype=dtype)
        fast, plain = make_step(solver), make_step(solver, kernels=False)
        f, g = dict(fields), dict(fields)
        for i in range(3):
            f = fast(f, dt, np.int64(i), np.float64(0))
            g = plain(g, dt, np.int64(i), np.float64(0))
        assert f["u"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(f["u"], g["u"], err_msg=f"{dtype}, numba={numba}")


@pytest.mark.parametrize("boundary", ["periodic", "fixed"])
def test_heat_numba_update_hands_out_only_what_its_laplacian_made(boundary, monkeypatch):
    """With numba, heat2d's Laplacian loop also makes the updated u; ``update`` hands it out only
    for the very u, Laplacian and time step it was made from, and computes it otherwise."""
    require_backend("numba")
    monkeypatch.setenv("SIMKIT_NUMBA", "always")
    cls = load_solver("heat2d")
    solver = cls(cls.Params(shape=[12, 9], boundary=boundary))
    (laplacian, update), dt = solver.stages(), np.asarray(0.1)
    rng = np.random.default_rng(5)
    u, other = rng.standard_normal((12, 9)), rng.standard_normal((12, 9))

    def want(state, step=dt):
        return update.fn(state, step)["u"]

    state = laplacian.kernels["numpy"]({"u": u}, dt)
    np.testing.assert_array_equal(update.kernels["numpy"](state, dt)["u"], want(state))
    # Given another u, another Laplacian or another time step, the one made ahead is wrong.
    cases = [({**state, "u": other}, dt),
             ({**state, "laplacian": laplacian.fn({"u": other}, dt)["laplacian"]}, dt),
             (state, np.asarray(0.05))]
    for changed, step in cases:
        laplacian.kernels["numpy"]({"u": u}, dt)
        got = update.kernels["numpy"](changed, step)["u"]
        np.testing.assert_array_equal(got, want(changed, step))
