"""Stop signals as a batch scheduler sends them: every SIGTERM/SIGHUP/SIGINT stops a run cleanly
(file interrupted, resumable bit for bit), on every backend, whenever it arrives; one that
arrives once the run is complete changes nothing."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import threading
import time

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

from conftest import assert_bitwise, require_backend
from simkit.cli import main

#: Long enough that no signal below comes after the run's end: short blocks, so that a stop
#: takes effect soon.
SCENARIO = {
    "solver": "heat2d",
    "params": {"shape": [8, 8]},
    "initial": {"kind": "noise", "amplitude": 1.0},
    "steps": 400_000,
    "seed": 3,
    "flush_seconds": 0.02,
    "outputs": {"diag": {"every": 97, "diagnostics": ["energy"]},
                "checkpoint": {"every": 211, "fields": "all"}},
    "output": "s.nc",
}


@pytest.fixture
def signals_ignored_outside_main():
    """A signal that lands after ``main`` has returned (and put back the handlers it found) is
    ignored instead of ending the test process."""
    names = ("SIGTERM", "SIGHUP", "SIGINT")
    previous = {n: signal.signal(getattr(signal, n), signal.SIG_IGN) for n in names}
    yield
    for name, handler in previous.items():
        signal.signal(getattr(signal, name), handler)


def _status(path) -> str:
    with netCDF4.Dataset(path) as ds:
        return str(ds.getncattr("simkit_status"))


def _signalled_main(argv: list[str], signame: str, after: float) -> int:
    """``main(argv)`` in this process, sent ``signame`` ``after`` seconds in."""
    timer = threading.Timer(after, os.kill, (os.getpid(), getattr(signal, signame)))
    timer.start()
    try:
        return main(argv)
    finally:
        timer.cancel()
        timer.join()


def _steps(path) -> int:
    with netCDF4.Dataset(path) as ds:
        return int(ds.variables["step"][...])


@pytest.mark.parametrize("backend_name", ["numpy", "jax", "torch"])
def test_every_stop_signal_at_a_random_moment_stops_the_run_and_resumes_bit_for_bit(
        in_tmp, signals_ignored_outside_main, backend_name, capsys):
    require_backend(backend_name)
    steps = {"numpy": 60_000, "jax": 300_000, "torch": 20_000}[backend_name]  # a second or more
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({**SCENARIO, "backend": backend_name}))
    rng = random.Random(19)
    assert main(["run", "s.yaml", "-q", "--set", f"steps={steps}", "-o", "whole.nc"]) == 0
    # The same run stopped by ten signals at random moments, each resumed.
    assert _signalled_main(["run", "s.yaml", "-q", "--set", f"steps={steps}"], "SIGTERM",
                           rng.uniform(0.0, 0.3)) == 143
    stops = 1
    signames = ["SIGTERM", "SIGHUP", "SIGINT"]
    while stops < 10:
        assert _status(in_tmp / "s.nc") == "interrupted"
        signame = signames[stops % 3]
        code = _signalled_main(["resume", "s.nc", "-q"], signame, rng.uniform(0.0, 0.3))
        if code == 0:  # the signal came once the run was complete
            break
        assert code == 128 + getattr(signal, signame), capsys.readouterr().err
        stops += 1
    err = capsys.readouterr().err
    assert "Exception ignored" not in err
    assert err.count("simkit: interrupted by SIG") == stops, err
    if _status(in_tmp / "s.nc") != "complete":
        assert main(["resume", "s.nc", "-q"]) == 0
    assert _status(in_tmp / "s.nc") == "complete" and _steps(in_tmp / "s.nc") == steps
    with xr.open_datatree(in_tmp / "whole.nc") as whole, xr.open_datatree(in_tmp / "s.nc") as run:
        assert_bitwise(run["/"]["u"].values, whole["/"]["u"].values)
        for stream in ("diag", "checkpoint"):
            one, other = whole[stream].to_dataset(), run[stream].to_dataset()
            np.testing.assert_array_equal(other.step.values, one.step.values)
            for name in one.data_vars:
                if name != "simkit_crc32":
                    assert_bitwise(other[name].values, one[name].values)


def test_a_signal_once_the_run_is_complete_exits_0(in_tmp, signals_ignored_outside_main,
                                                  capsys, monkeypatch):
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({**SCENARIO, "steps": 50}))
    import simkit.api

    real = simkit.api.execute

    def then_signalled(*args, **kwargs):
        result = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # as the command prints where the file went
        time.sleep(0.01)
        return result

    monkeypatch.setattr(simkit.api, "execute", then_signalled)
    assert main(["run", "s.yaml", "-q"]) == 0
    out, err = capsys.readouterr()
    assert out == "s.nc\n"
    assert err == "simkit: SIGTERM arrived once the run was complete; nothing to stop\n"
    assert _status(in_tmp / "s.nc") == "complete"


def test_a_signal_landing_in_a_library_callback_still_stops_the_run(
        in_tmp, signals_ignored_outside_main, capsys):
    """JAX's garbage-collector callback once swallowed a SIGTERM raised as KeyboardInterrupt in
    it ("Exception ignored in: <function _xla_gc_callback>"), and the run went on."""
    # A few seconds of steps: a swallowed signal lets the run finish.
    (in_tmp / "s.yaml").write_text(yaml.safe_dump({**SCENARIO, "steps": 20_000}))
    armed = time.monotonic() + 0.3
    sent: list[bool] = []

    def callback(phase: str, info: dict) -> None:  # as a library's gc callback runs
        if not sent and time.monotonic() > armed:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # Python runs its handler here, inside the callback

    threshold = gc.get_threshold()
    gc.set_threshold(10)  # collections (and so the callback) all the time
    gc.callbacks.append(callback)
    try:
        code = main(["run", "s.yaml", "-q"])
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)
    err = capsys.readouterr().err
    assert sent
    assert (code, err) == (143, "simkit: interrupted by SIGTERM; the run so far is in s.nc: "
                                "continue it with `simkit resume s.nc`\n")
    assert _status(in_tmp / "s.nc") == "interrupted"


@pytest.mark.parametrize("backend_name", ["jax", "torch"])
def test_a_signal_swallowed_in_the_gradient_phase_still_stops_it(
        in_tmp, signals_ignored_outside_main, capsys, monkeypatch, backend_name):
    """A SIGTERM landing in a library callback while an objective's gradients are computed: the
    run stops (file interrupted, gradients pending), never complete, and resume finishes it. Raised
    as KeyboardInterrupt (as the gradient phase once took signals) it was swallowed there
    ("Exception ignored in ...") and the file said complete."""
    require_backend(backend_name)
    import simkit.autodiff._api as api

    truth = {**SCENARIO, "params": {"shape": [8, 8], "diffusivity": 1.1}, "steps": 40,
             "outputs": {"snap": {"every": 10, "fields": ["u"]}}, "output": "truth.nc"}
    (in_tmp / "truth.yaml").write_text(yaml.safe_dump(truth))
    assert main(["run", "truth.yaml", "-q"]) == 0
    guess = {**truth, "params": {"shape": [8, 8]}, "backend": backend_name, "output": "g.nc",
             "outputs": {"snap": {"every": 10, "fields": ["u"]},
                         "ck": {"every": 4, "fields": "all"}},
             "objective": {"misfit": {"path": "truth.nc", "stream": "snap", "fields": ["u"]},
                           "wrt": ["diffusivity"], "checkpoint": "sqrt"}}
    (in_tmp / "g.yaml").write_text(yaml.safe_dump(guess))
    real = api.checkpoint_steps
    sent: list[bool] = []

    def callback(phase: str, info: dict) -> None:  # as a library's gc callback runs
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # Python runs its handler here, inside the callback

    def then_armed(*args, **kwargs):  # the forward run is written: the gradient phase starts
        gc.callbacks.append(callback)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "checkpoint_steps", then_armed)
    threshold = gc.get_threshold()
    gc.set_threshold(10)
    try:
        code = main(["run", "g.yaml", "-q"])
    finally:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)
    err = capsys.readouterr().err
    assert sent
    assert "Exception ignored" not in err
    assert (code, err) == (143, "simkit: interrupted by SIGTERM; the run so far is in g.nc: "
                                "continue it with `simkit resume g.nc`\n")
    with netCDF4.Dataset(in_tmp / "g.nc") as ds:
        assert ds.getncattr("simkit_status") == "interrupted"
        assert ds.getncattr("simkit_gradients") == "pending"
        assert "objective" not in ds.variables
    monkeypatch.setattr(api, "checkpoint_steps", real)
    assert main(["resume", "g.nc", "-q"]) == 0
    assert main(["run", "g.yaml", "-q", "-o", "whole.nc"]) == 0
    with netCDF4.Dataset(in_tmp / "g.nc") as ds, netCDF4.Dataset(in_tmp / "whole.nc") as whole:
        assert ds.getncattr("simkit_status") == "complete"
        assert float(ds["gradient_diffusivity"][...]) == float(whole["gradient_diffusivity"][...])
        assert float(ds["objective"][...]) == float(whole["objective"][...]) > 0
