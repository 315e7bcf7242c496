"""A solver in a few lines (``SimpleSolver``), and a clear error when a stage drops a field."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import simkit

_SMALL = textwrap.dedent('''
    import numpy as np
    from array_api_compat import array_namespace
    from simkit.solver import SimpleSolver, SolverModel


    class Decay(SimpleSolver):
        """du/dt = -rate u, forward Euler."""
        class Params(SolverModel):
            rate: float = 1.0
        DIAGNOSTICS = ("total",)
        def initial_state(self, initial, rng): return {"u": np.ones(16)}
        def step(self, s, dt): return {**s, "u": s["u"] * (1 - self.params.rate * dt)}
        def total(self, s): return array_namespace(s["u"]).sum(s["u"])


    class Dropping(Decay):
        """A stage that forgets to carry u."""
        def step(self, s, dt): return {"v": s["u"]}


    class Assigning(Decay):
        """A stage that assigns into its input array, as NumPy allows."""
        def step(self, s, dt):
            s["u"][0] = 0.0
            return s
''')


@pytest.fixture
def small_module(in_tmp, monkeypatch):
    (in_tmp / "small_solver.py").write_text(_SMALL)
    monkeypatch.syspath_prepend(str(in_tmp))
    sys.modules.pop("small_solver", None)
    yield
    sys.modules.pop("small_solver", None)


def test_a_solver_in_eight_lines_runs_on_every_backend(backend, small_module):
    result = simkit.run({"solver": "small_solver:Decay", "backend": backend, "steps": 10,
                         "dt": 0.05, "params": {"rate": 2.0}, "output": "d.nc",
                         "outputs": {"s": {"every": 5, "fields": ["u"],
                                           "diagnostics": ["total"]}}})
    np.testing.assert_allclose(result.state["u"], np.full(16, 0.9 ** 10), rtol=1e-14)
    s = xr.open_dataset(result.path, group="s")
    np.testing.assert_allclose(s.total.values, 16 * 0.9 ** np.array([0, 5, 10]), rtol=1e-14)
    assert s.u.dims == ("step", "i") and list(s.i.values) == list(range(16))
    with xr.open_dataset(result.path) as root:
        assert root.attrs["simkit_solver"] == "decay"


def test_a_stage_that_drops_a_field_is_named_with_its_solver(small_module):
    with pytest.raises(ValueError, match=r"solver dropping: stage 'step': expected the new "
                                         r"state to hold every field \(u\), given one without "
                                         r"'u'; return e.g. \{\*\*state, 'u': new_value\}"):
        simkit.run({"solver": "small_solver:Dropping", "steps": 2, "output": "x.nc",
                    "outputs": {"s": {"every": 1, "fields": ["u"]}}})


def test_a_stage_assigning_into_a_jax_array_is_named_with_its_solver(small_module):
    from conftest import require_backend

    require_backend("jax")
    with pytest.raises(TypeError, match=r"solver assigning: stage 'step' updates an array in "
                                        r"place, which JAX arrays do not allow; return new "
                                        r"arrays instead, e.g. \{\*\*state, 'u': "
                                        r"state\['u'\]\.at\[0\]\.set\(value\)\} \("):
        simkit.run({"solver": "small_solver:Assigning", "backend": "jax", "steps": 2,
                    "output": "x.nc", "outputs": {"s": {"every": 1, "fields": ["u"]}}})
    # NumPy allows it: the same solver runs there.
    simkit.run({"solver": "small_solver:Assigning", "steps": 2, "output": "y.nc",
                "outputs": {"s": {"every": 1, "fields": ["u"]}}})


def test_a_missing_stage_method_is_refused_when_the_class_is_made():
    from simkit.solver import SimpleSolver

    with pytest.raises(TypeError, match=r"solver broken: expected a method for each name in "
                                        r"STAGES and DIAGNOSTICS, given none for 'energy'"):
        class Broken(SimpleSolver):
            DIAGNOSTICS = ("energy",)

            def initial_state(self, initial, rng):
                return {"u": np.zeros(2)}

            def step(self, s, dt):
                return s
