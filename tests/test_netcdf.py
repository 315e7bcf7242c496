"""The run file: layout, CF attributes, provenance, and reading it without simkit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import heat_scenario
from simkit.io import schema


def test_round_trip_final_state_streams_and_coordinates(in_tmp):
    result = simkit.run(heat_scenario())
    tree = xr.open_datatree(result.path)
    root = tree.to_dataset()
    np.testing.assert_array_equal(root.u.values, result.state["u"])
    assert set(root.coords) == {"x", "y", "step", "time"}
    assert int(root.step) == 12 and float(root.time) == result.time
    assert root.u.dims == ("y", "x")
    np.testing.assert_array_equal(root.x.values, np.arange(20.0))
    for name, var in [("u", root.u), ("x", root.x), ("y", root.y), ("time", root.time)]:
        assert var.attrs["units"] and var.attrs["long_name"], name
    assert root.u.attrs["units"] == "K" and root.time.attrs["units"] == "s"
    snap = tree["snap"].to_dataset()
    assert snap.u.dims == ("step", "y", "x") and "time" in snap.coords
    assert list(snap.step.values) == [0, 3, 6, 9, 12]
    np.testing.assert_allclose(snap.time.values, snap.step.values * 0.2)
    np.testing.assert_array_equal(snap.u.sel(step=12).values, result.state["u"])
    diag = tree["diag"].to_dataset()
    assert set(diag.data_vars) == {"energy", "heat", "max_abs"}
    assert diag.energy.attrs["units"] == "K2 m2"
    np.testing.assert_allclose(diag.max_abs.sel(step=12).item(), np.abs(result.state["u"]).max())


def test_provenance_attributes(in_tmp):
    result = simkit.run(heat_scenario(seed=11))
    with xr.open_dataset(result.path) as ds:
        attrs = ds.attrs
    assert attrs["Conventions"] == schema.CONVENTIONS
    assert attrs[schema.ATTR_SOLVER] == "heat2d"
    assert attrs[schema.ATTR_SOLVER_VERSION] == "1"
    assert attrs[schema.ATTR_BACKEND] == "numpy" and attrs[schema.ATTR_DEVICE] == "cpu"
    assert attrs[schema.ATTR_DTYPE] == "float64" and attrs[schema.ATTR_SEED] == 11
    assert attrs[schema.ATTR_STATUS] == schema.STATUS_COMPLETE
    assert attrs[schema.ATTR_STARTED] <= attrs[schema.ATTR_FINISHED]
    versions = json.loads(attrs[schema.ATTR_VERSIONS])
    assert versions["simkit"] == simkit.__version__ and versions["numpy"] == np.__version__
    scenario = yaml.safe_load(attrs[schema.ATTR_SCENARIO])
    assert scenario["seed"] == 11 and scenario["params"]["shape"] == [24, 20]
    assert attrs[schema.ATTR_STREAMS].split() == ["snap", "early", "diag"]


def test_file_opens_with_plain_xarray_without_simkit(in_tmp):
    result = simkit.run(heat_scenario())
    code = ("import sys; sys.modules['simkit'] = None\n"
            "import xarray as xr\n"
            f"tree = xr.open_datatree({str(result.path)!r})\n"
            "print(int(tree['early'].to_dataset().sizes['step']), tree.to_dataset().u.shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.split("\n")[0] == "3 (24, 20)"


def test_overwrite_keeps_the_old_file_until_the_run_finishes(in_tmp, monkeypatch):
    first = simkit.run(heat_scenario())
    before = first.path.read_bytes()
    from simkit.driver import _blocks

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    with monkeypatch.context() as patched:  # undone alone: the test stays in its directory
        patched.setattr(_blocks.BlockLoop, "run_block", explode)
        with pytest.raises(RuntimeError, match="boom"):
            simkit.run(heat_scenario(seed=9), overwrite=True)
    assert first.path.read_bytes() == before
    second = simkit.run(heat_scenario(seed=9), overwrite=True)
    assert second.path == first.path and second.path.read_bytes() != before
    # The failed run's partial file is kept beside it under a visible name, not lost.
    assert (in_tmp / "out.partial.nc").exists() and not list(in_tmp.glob(".out.nc.*.tmp"))


def test_committed_step_reaches_the_file_once_its_captures_are_synced(tmp_path):
    """What a file says it holds is flushed as soon as it is true: a killed run's file does not
    understate it by a batch (which would make a resume go back a checkpoint for nothing)."""
    import threading
    import time

    from simkit.io import BackgroundWriter, NetCDFWriter

    var = schema.VariableSpec("u", ("x",), "K", "u")
    layout = schema.RunLayout(
        coordinates=(schema.CoordinateSpec("x", np.arange(4.0), "m", "x"),), fields=(var,),
        streams=(schema.StreamSpec("s", (var,), ()),), time_units="s")
    path = tmp_path / "w.nc"
    synced = threading.Event()
    writer = BackgroundWriter(NetCDFWriter(path, layout, {}),
                              on_committed=lambda *args: synced.set())
    read = [sys.executable, "-c", "import simkit, netCDF4, sys; "
            "print(int(netCDF4.Dataset(sys.argv[1]).getncattr('simkit_committed_step')))",
            str(path)]
    try:
        assert subprocess.run(read, capture_output=True, text=True).stdout.strip() == "-1"
        writer.capture("s", 3, 0.3, {"u": np.ones(4)})
        writer.committed(3)
        assert synced.wait(10)
        seen, deadline = None, time.monotonic() + 10
        while seen != "3" and time.monotonic() < deadline:  # no later write comes to flush it
            seen = subprocess.run(read, capture_output=True, text=True).stdout.strip()
        assert seen == "3"
    finally:
        writer.close()


def _small_layout() -> schema.RunLayout:
    u = schema.VariableSpec("u", ("x",), "K", "temperature")
    energy = schema.VariableSpec("energy", (), "J", "energy")
    return schema.RunLayout(
        coordinates=(schema.CoordinateSpec("x", np.arange(4.0), "m", "position"),),
        fields=(u,),
        streams=(schema.StreamSpec("snap", (u,), (), state_slots=("cooldown_until",)),
                 schema.StreamSpec("diag", (), (energy,))),
        time_units="s")


def test_a_run_file_written_and_read_back_through_the_protocols(tmp_path):
    from simkit.io import open_reader, open_writer

    path = tmp_path / "run.nc"
    attrs = {schema.ATTR_SCENARIO: "solver: heat2d\n", schema.ATTR_SOLVER: "heat2d"}
    writer = open_writer(path, _small_layout(), attrs)
    for step in (0, 2):
        writer.write_capture("snap", step, step * 0.5,
                             {"u": np.full(4, float(step)),
                              schema.SCHEDULE_STATE: np.array([step + 3.0])})
    writer.check_space(["diag"] * 3)
    writer.write_block("diag", [0, 1, 2], [0.0, 0.5, 1.0],
                       {"energy": np.array([1.0, 2.0, 3.0])})
    writer.sync()
    writer.committed(2)
    with open_reader(path) as reader:  # a reader of a file being written
        assert reader.status() == schema.STATUS_RUNNING
        assert reader.final_state(["u"]) is None
        assert reader.committed_step() == 2
    writer.write_final(2, 1.0, {"u": np.full(4, 2.0)})
    assert writer.close({schema.ATTR_FINISHED: "now"}) == path
    with open_reader(path) as reader:
        assert reader.missing_parts() is None
        assert reader.streams() == ("snap", "diag")
        assert reader.grid() == {"x": 4}
        assert reader.lengths() == reader.whole_counts() == {"snap": 2, "diag": 3}
        assert reader.steps({"snap": 2, "diag": 1}) == {"snap": [0, 2], "diag": [0]}
        diag = reader.captures("diag")
        assert diag.steps.tolist() == [0, 1, 2] and diag.times.tolist() == [0.0, 0.5, 1.0]
        assert diag.arrays["energy"].tolist() == [1.0, 2.0, 3.0]
        checkpoint = reader.latest_checkpoint(["u"], {"snap": 2, "diag": 3})
        assert (checkpoint.stream, checkpoint.step, checkpoint.time) == ("snap", 2, 1.0)
        assert checkpoint.schedules == {"cooldown_until": 5.0}
        assert reader.latest_checkpoint(["u"], {"snap": 2}, upto=1).step == 0
        final = reader.final_state(["u"])
        assert (final.step, final.time, final.fields["u"].tolist()) == (2, 1.0, [2.0] * 4)
        assert reader.status() == schema.STATUS_COMPLETE
        assert reader.attrs()[schema.ATTR_FINISHED] == "now"
        assert {v.name: v.units for v in reader.variables("diag")}["energy"] == "J"
        assert reader.stream_attrs("diag")[schema.ATTR_STREAM_DIAGNOSTICS] == "energy"
        assert float(reader.value(schema.TIME)) == 1.0


def test_only_the_netcdf_modules_import_netcdf4():
    import re
    from pathlib import Path

    package = Path(simkit.__file__).parent
    importing = sorted(str(path.relative_to(package.parent)) for path in package.rglob("*.py")
                       if re.search(r"^\s*(import netCDF4|from netCDF4 )", path.read_text(),
                                    re.MULTILINE)
                       and not (path.parent.name == "io" and path.name.startswith("netcdf")))
    assert importing == []


def test_background_writer_flush_waits_for_the_captures_and_raises_the_writers_error(tmp_path):
    from simkit.errors import DiskFullError
    from simkit.io import BackgroundWriter, open_reader, open_writer

    path = tmp_path / "run.nc"
    writer = BackgroundWriter(open_writer(path, _small_layout(), {schema.ATTR_SCENARIO: "x"}))
    for step in range(5):
        writer.capture_many([("diag", step, step * 0.5, {"energy": np.float64(step)})])
    writer.capture_blocks([("diag", [5, 6], [2.5, 3.0], {"energy": np.array([5.0, 6.0])})])
    writer.flush()
    assert writer.written == 7
    with open_reader(path) as reader:
        assert reader.whole_counts()["diag"] == 7
    writer.flush()  # nothing pending: returns at once

    def full(streams: object) -> None:
        raise DiskFullError("disk full")

    writer.writer.check_space = full  # type: ignore[method-assign]
    writer.capture("diag", 7, 3.5, {"energy": np.float64(7.0)})
    with pytest.raises(DiskFullError, match="disk full"):
        writer.flush()
    writer.abort()
