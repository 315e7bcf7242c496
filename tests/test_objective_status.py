"""A run with an objective is ``complete`` only once its gradients are written: killed,
signalled or failing after its forward pass, its file says so and ``simkit resume`` (or
``simkit run --resume``) computes the gradients."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

from conftest import heat_scenario, require_backend
from simkit.autodiff import value_and_grad
from simkit.cli import main
from simkit.io.schema import ATTR_GRADIENTS

#: A differentiable solver whose every step takes a while: the gradient phase lasts long enough
#: to be killed in.
SLOW = '''
import time

import numpy as np

from simkit.solver import AbstractSolver, Coordinate, FieldSpec, SolverModel, Stage


class Params(SolverModel):
    rate: float = 0.5
    size: int = 4


class Initial(SolverModel):
    pass


class SlowDecay(AbstractSolver):
    name = "slow_decay"
    version = "1"
    description = "exponential decay, 20 ms a step"
    Params = Params
    Initial = Initial
    time_units = "s"
    differentiable = ("rate",)

    def __init__(self, params):
        self.params = params

    def fields(self):
        return [FieldSpec("u", ("i",), "1", "value")]

    def coordinates(self):
        return [Coordinate("i", np.arange(self.params.size), "1", "index")]

    def initial_state(self, initial, rng):
        return {"u": np.arange(1.0, self.params.size + 1.0)}

    def diagnostics(self):
        return []

    def default_dt(self):
        return 0.1

    def max_stable_dt(self):
        return None

    def stages(self):
        def decay(state, dt):
            time.sleep(0.02)
            return {**state, "u": state["u"] * (1 - self.params.rate * dt)}
        return [Stage("decay", decay)]
'''


def _attrs(path: str | Path) -> dict:
    with netCDF4.Dataset(path) as ds:
        return {k: ds.getncattr(k) for k in ds.ncattrs()} | {"variables": set(ds.variables)}


def _slow_scenarios(folder: Path) -> None:
    (folder / "slow.py").write_text(SLOW)
    truth = {"solver": "slow:SlowDecay", "params": {"rate": 0.4}, "steps": 40, "dt": 0.1,
             "backend": "numpy", "outputs": {"obs": {"every": 10, "fields": ["u"]}},
             "output": "truth.nc"}
    (folder / "truth.yaml").write_text(yaml.safe_dump(truth))
    guess = {**truth, "params": {"rate": 0.5}, "output": "guess.nc",
             "outputs": {"obs": {"every": 10, "fields": ["u"]}},
             "objective": {"misfit": {"path": "truth.nc", "stream": "obs"},
                           "wrt": ["rate", "u"], "backend": "torch"}}
    (folder / "guess.yaml").write_text(yaml.safe_dump(guess))
    (folder / "reference.yaml").write_text(yaml.safe_dump({**guess, "output": "reference.nc"}))


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "simkit", "run", "guess.yaml", "--overwrite",
                             "-q"], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_the_gradients(process: subprocess.Popen, path: Path) -> bool:
    """Whether the run got to its gradient phase (its forward run written) while still going."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if path.exists() and _attrs(path).get(ATTR_GRADIENTS) == "pending":
                return process.poll() is None
        except OSError:  # being written
            pass
        time.sleep(0.02)
    return False


def test_killed_in_the_gradient_phase_is_not_complete_and_resume_finishes_it(in_tmp, capsys):
    """SIGKILL at random moments of the gradient phase (and SIGTERM): the file is never
    ``complete`` without gradients, and ``simkit resume`` (``run --resume`` too) writes the
    gradients an uninterrupted run writes."""
    require_backend("torch")
    _slow_scenarios(in_tmp)
    assert main(["run", "truth.yaml", "-q"]) == 0
    assert main(["run", "reference.yaml", "-q"]) == 0
    capsys.readouterr()
    reference = _attrs("reference.nc")
    assert reference["simkit_status"] == "complete"
    assert reference[ATTR_GRADIENTS] == "written"
    with netCDF4.Dataset("reference.nc") as ds:
        expected = {k: np.asarray(ds[k][...]) for k in ("objective", "gradient_rate",
                                                         "gradient_initial_u")}
    rng = random.Random(19)
    killed = 0
    for trial, how in enumerate([signal.SIGKILL] * 3 + [signal.SIGTERM]):
        process = _start(in_tmp)
        if not _wait_for_the_gradients(process, in_tmp / "guess.nc"):
            process.kill()
            process.communicate()
            continue
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(how)
        _, err = process.communicate(timeout=120)
        attrs = _attrs("guess.nc")
        if process.returncode == 0:  # it finished first
            assert attrs["simkit_status"] == "complete"
            continue
        killed += 1
        assert attrs["simkit_status"] == ("running" if how == signal.SIGKILL
                                          else "interrupted"), (how, err)
        assert attrs[ATTR_GRADIENTS] == "pending"
        assert "objective" not in attrs["variables"]
        if how == signal.SIGTERM:
            assert process.returncode == 128 + signal.SIGTERM, err
        finish = ["resume", "guess.nc"] if trial % 2 == 0 else \
            ["run", "guess.yaml", "--resume", "-q"]
        assert main(finish) == 0
        assert capsys.readouterr().out.strip() == "guess.nc"
        attrs = _attrs("guess.nc")
        assert attrs["simkit_status"] == "complete"
        assert attrs[ATTR_GRADIENTS] == "written"
        with netCDF4.Dataset("guess.nc") as ds:
            for name, value in expected.items():
                np.testing.assert_array_equal(np.asarray(ds[name][...]), value, err_msg=name)
        # Complete: nothing more to do.
        assert main(["resume", "guess.nc"]) == 0
        assert "is already complete; nothing to resume" in capsys.readouterr().err
    assert killed >= 2


def test_an_objective_that_raises_leaves_the_run_failed_without_gradients(in_tmp, capsys):
    """The forward run is written, the objective raises: the file says ``failed`` with the
    error and gradients ``pending``, never ``complete``; ``simkit resume`` cannot compute a
    Python objective's gradients and says so."""
    require_backend("torch")
    scenario = heat_scenario(dt=0.2, steps=4, output="run.nc", backend="numpy",
                             outputs={"ck": {"every": 2, "fields": "all"}})

    def objective(final, captures):
        raise ZeroDivisionError("the objective's own bug")

    with pytest.raises(ZeroDivisionError, match="the objective's own bug"):
        value_and_grad(scenario, objective, ["diffusivity"], backend="torch", output="run.nc")
    attrs = _attrs("run.nc")
    assert attrs["simkit_status"] == "failed"
    assert attrs["simkit_error"] == "ZeroDivisionError: the objective's own bug"
    assert attrs[ATTR_GRADIENTS] == "pending"
    assert "objective" not in attrs["variables"]
    assert main(["resume", "run.nc"]) == 2
    assert capsys.readouterr().err == (
        "simkit: error: run.nc: expected a run whose gradients simkit resume can compute (an "
        "objective block in its scenario), given one whose gradients of a Python objective "
        "are not written; call value_and_grad with output= again\n")
    # A complete run of the same scenario with gradients: complete, written.
    value_and_grad(scenario, lambda final, captures: (final["u"] ** 2).sum(), ["diffusivity"],
                   backend="torch", output="run.nc", overwrite=True)
    attrs = _attrs("run.nc")
    assert (attrs["simkit_status"], attrs[ATTR_GRADIENTS]) == ("complete", "written")


def test_a_nan_objective_is_not_written_and_exits_3(in_tmp, capsys):
    """A NaN objective (or gradient) is not written as a result: the file says ``non-finite``
    with the error, gradients ``pending``; NonFiniteError, exit code 3 on the command line."""
    require_backend("torch")
    from simkit.errors import NonFiniteError

    scenario = heat_scenario(dt=0.2, steps=4, output="run.nc", backend="numpy",
                             outputs={"obs": {"every": 2, "fields": ["u"]}})

    def objective(final, captures):
        return (final["u"] * float("nan")).sum()

    with pytest.raises(NonFiniteError) as raised:
        value_and_grad(scenario, objective, ["diffusivity"], backend="torch", output="run.nc")
    assert str(raised.value) == ("run.nc: expected a finite objective and gradients, given nan "
                                 "for the objective (the forward run is kept, without "
                                 "gradients)")
    assert raised.value.exit_code == 3
    attrs = _attrs("run.nc")
    assert attrs["simkit_status"] == "non-finite"
    assert attrs[ATTR_GRADIENTS] == "pending"
    assert "objective" not in attrs["variables"]
    # From the command line: observations that hold a NaN.
    simkit_run = main(["run", "-q", _scenario_file(in_tmp, scenario, "truth")])
    assert simkit_run == 0
    with netCDF4.Dataset("truth.nc", "a") as ds:
        ds["obs"]["u"][1, 0, 0] = np.nan
    guess = {**scenario, "output": "guess.nc",
             "objective": {"misfit": {"path": "truth.nc", "stream": "obs"},
                           "wrt": ["diffusivity"], "backend": "torch"}}
    capsys.readouterr()
    code = main(["run", "-q", _scenario_file(in_tmp, guess, "guess")])
    err = capsys.readouterr().err
    assert (code, err) == (3, "simkit: error: guess.nc: expected a finite objective and "
                              "gradients, given nan for the objective (the forward run is kept, "
                              "without gradients)\n")
    assert _attrs("guess.nc")["simkit_status"] == "non-finite"


def _scenario_file(folder: Path, scenario: dict, name: str) -> str:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({**scenario, "output": f"{name}.nc"}
                                                        if name == "truth" else scenario))
    return f"{name}.yaml"


def test_gradients_finished_by_resume_drop_the_error_of_the_failed_phase(in_tmp, capsys,
                                                                         monkeypatch):
    """A gradient phase that failed leaves status failed and simkit_error; once simkit resume
    writes the gradients the file is complete and no longer shows that error."""
    require_backend("torch")
    import simkit.autodiff._api as api

    truth = heat_scenario(dt=0.2, steps=8, output="truth.nc", backend="numpy",
                          outputs={"obs": {"every": 4, "fields": ["u"]}})
    (in_tmp / "truth.yaml").write_text(yaml.safe_dump(truth))
    assert main(["run", "truth.yaml", "-q"]) == 0
    guess = {**truth, "params": {**truth["params"], "diffusivity": 0.9}, "output": "g.nc",
             "objective": {"misfit": {"path": "truth.nc", "stream": "obs"},
                           "wrt": ["diffusivity"], "backend": "torch"}}
    (in_tmp / "g.yaml").write_text(yaml.safe_dump(guess))

    def broken(*args, **kwargs):
        raise RuntimeError("out of device memory")

    with monkeypatch.context() as patch:
        patch.setattr(api, "value_and_grad_reusing", broken)
        assert main(["run", "g.yaml", "-q"]) == 1
    attrs = _attrs("g.nc")
    assert (attrs["simkit_status"], attrs["simkit_error"]) == (
        "failed", "RuntimeError: out of device memory")
    assert main(["resume", "g.nc", "-q"]) == 0
    attrs = _attrs("g.nc")
    assert (attrs["simkit_status"], attrs[ATTR_GRADIENTS]) == ("complete", "written")
    assert "simkit_error" not in attrs


def test_a_python_objective_stopped_in_its_forward_run_is_not_finished_as_a_plain_run(
        in_tmp, capsys):
    """A Python objective's scenario has no objective block: stopped during its forward run, its
    file said nothing of gradients and ``simkit resume`` finished it as a plain run, ``complete``
    without gradients."""
    require_backend("torch")
    scenario = heat_scenario(dt=0.2, steps=40, output="run.nc", backend="numpy",
                             outputs={"ck": {"every": 2, "fields": "all"}})

    def stop_at_the_first_block(*args):
        raise KeyboardInterrupt("SIGTERM")

    with pytest.raises(KeyboardInterrupt):
        value_and_grad(scenario, lambda final, captures: (final["u"] ** 2).sum(),
                       ["diffusivity"], backend="torch", output="run.nc",
                       progress=stop_at_the_first_block)
    attrs = _attrs("run.nc")
    assert (attrs["simkit_status"], attrs[ATTR_GRADIENTS]) == ("interrupted", "awaited")
    capsys.readouterr()
    assert main(["resume", "run.nc"]) == 2
    assert capsys.readouterr().err == (
        "simkit: error: run.nc: expected a run whose gradients simkit resume can compute (an "
        "objective block in its scenario), given one whose gradients of a Python objective "
        "are not written; call value_and_grad with output= again\n")
    assert _attrs("run.nc")["simkit_status"] == "interrupted"
