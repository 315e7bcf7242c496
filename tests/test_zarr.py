"""Zarr v3 runs in Icechunk repositories (``output: run.zarr``): the NetCDF file's layout and
contents bit for bit, one commit per block, xarray reading the store, resume, overwrite, and
every command that reads a run file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import icechunk
import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import assert_bitwise, heat_scenario
from simkit.errors import ScenarioError
from simkit.io import open_reader, recover, release, schema
from simkit.io.zarr import ZarrWriter
from simkit.io.zarr_reader import ZarrReader

TESTS = Path(__file__).parent
SCENARIO = """\
solver: heat2d
params: {shape: [24, 20]}
initial: {kind: noise, amplitude: 1.0}
steps: 40
seed: 4
outputs:
  snaps: {every: 5, fields: [u]}
  diag: {every: 1, diagnostics: [energy, max_abs]}
  checkpoint: {every: 10, fields: all}
output: run.zarr
"""


def store(path) -> icechunk.IcechunkStore:
    """The store of the last commit of the repository at ``path``, as a user opens it."""
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))
    return repo.readonly_session(branch="main").store


def commits(path) -> list[str]:
    """The messages of the repository's commits, oldest first."""
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))
    return [snap.message for snap in repo.ancestry(branch="main")][::-1]


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "simkit", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


def _layout() -> schema.RunLayout:
    coords = (schema.CoordinateSpec("y", np.arange(3.0), "m", "y"),
              schema.CoordinateSpec("x", np.arange(4.0), "m", "x"))
    u = schema.VariableSpec("u", ("y", "x"), "K", "temperature")
    energy = schema.VariableSpec("energy", (), "K2", "energy")
    return schema.RunLayout(coords, (u,), (schema.StreamSpec("snap", (u,), ()),
                                           schema.StreamSpec("diag", (), (energy,))), "s")


_ATTRS = {schema.ATTR_SOLVER: "heat2d", schema.ATTR_SOLVER_VERSION: "1",
          schema.ATTR_SCENARIO: "solver: heat2d\n", schema.ATTR_SEED: np.int64(3)}


def test_zarr_run_holds_what_the_netcdf_run_holds_bit_for_bit(in_tmp):
    zarr_run = simkit.run(heat_scenario(output="run.zarr"))
    nc_run = simkit.run(heat_scenario(output="run.nc"))
    assert zarr_run.path == Path("run.zarr") and zarr_run.step == nc_run.step == 12
    with open_reader("run.zarr") as z, open_reader("run.nc") as n:
        assert z.streams() == n.streams() == ("snap", "early", "diag")
        assert z.grid() == n.grid() == {"y": 24, "x": 20}
        assert z.whole_counts() == z.lengths() == n.whole_counts() == {
            "snap": 5, "early": 3, "diag": 13}
        assert z.status() == "complete" and z.committed_step() == 12
        skip = {schema.ATTR_STARTED, schema.ATTR_FINISHED, schema.ATTR_HISTORY,
                schema.ATTR_SCENARIO}
        za, na = z.attrs(), n.attrs()
        assert sorted(za) == sorted(na)
        assert {k: str(v) for k, v in za.items() if k not in skip} == \
            {k: str(v) for k, v in na.items() if k not in skip}
        for name in n.streams():
            assert z.stream_attrs(name) == {k: str(v) if not isinstance(v, str) else v
                                            for k, v in n.stream_attrs(name).items()}
            zc, nc = z.captures(name), n.captures(name)
            assert_bitwise(zc.steps, nc.steps)
            assert_bitwise(zc.times, nc.times)
            assert sorted(zc.arrays) == sorted(nc.arrays)
            for var in nc.arrays:
                assert_bitwise(zc.arrays[var], nc.arrays[var])
            assert {v.name: (v.dims, v.units) for v in z.variables(name)} == \
                {v.name: (v.dims, v.units) for v in n.variables(name)}
        zf, nf = z.final_state(["u"]), n.final_state(["u"])
        assert zf is not None and nf is not None and (zf.step, zf.time) == (nf.step, nf.time)
        assert_bitwise(zf.fields["u"], nf.fields["u"])


def test_xarray_reads_the_store_through_icechunk(in_tmp):
    simkit.run(heat_scenario(output="run.zarr"))
    tree = xr.open_datatree(store("run.zarr"), engine="zarr", consolidated=False)
    assert set(tree.children) == {"snap", "early", "diag"}
    assert tree.attrs[schema.ATTR_STATUS] == "complete"
    assert tree.attrs[schema.ATTR_CONVENTIONS] == "CF-1.10"
    with xr.open_zarr(store("run.zarr"), group="snap", consolidated=False) as snap:
        assert list(snap.step.values) == [0, 3, 6, 9, 12]
        assert snap.u.dims == ("step", "y", "x") and snap.u.attrs["units"] == "K"
        assert set(snap.coords) >= {"step", "time", "x", "y", schema.CHECKSUM}
        assert snap.time.attrs["axis"] == "T" and snap.time.attrs["standard_name"] == "time"
        u = snap.u.values
    final = tree.to_dataset()
    assert int(final.step) == 12 and final.u.shape == (24, 20)
    assert_bitwise(u[-1], final.u.values)


def test_each_block_is_one_commit_and_the_committed_step_goes_with_the_next(tmp_path):
    path = tmp_path / "run.zarr"
    writer = ZarrWriter(path, _layout(), _ATTRS)
    assert commits(path)[1:] == ["new run"]
    writer.check_space(["snap", "diag", "diag"])
    writer.write_block("snap", [0], [0.0], {"u": np.zeros((1, 3, 4))})
    writer.write_block("diag", [0, 1], [0.0, 0.5], {"energy": np.array([1.0, 2.0])})
    writer.sync()
    writer.committed(1)  # within COMMIT_INTERVAL of the last commit: goes with the next one
    assert commits(path)[1:] == ["new run", "captures up to snap 1, diag 2"]
    with ZarrReader(path) as reader:
        assert reader.committed_step() == -1  # it lags, never leads
        assert reader.whole_counts() == {"snap": 1, "diag": 2}
    writer.write_final(1, 0.5, {"u": np.ones((3, 4))})
    writer.close({schema.ATTR_FINISHED: "now"})
    assert commits(path)[1:] == ["new run", "captures up to snap 1, diag 2", "closed complete"]
    with ZarrReader(path) as reader:
        assert reader.committed_step() == 1 and reader.status() == "complete"
        assert reader.attrs()[schema.ATTR_SEED] == 3
        assert reader.captures("diag").arrays["energy"].tolist() == [1.0, 2.0]


def test_a_writer_that_dies_leaves_the_last_commit_whole(tmp_path):
    path = tmp_path / "run.zarr"
    writer = ZarrWriter(path, _layout(), _ATTRS)
    writer.write_block("snap", [0], [0.0], {"u": np.zeros((1, 3, 4))})
    writer.sync()
    writer.write_block("snap", [5], [2.5], {"u": np.ones((1, 3, 4))})  # never committed
    release(writer._lock)  # the process dies here, no close: its lock goes with it
    with ZarrReader(path) as reader:
        assert reader.lengths() == {"snap": 1, "diag": 0}
        assert reader.status() == "running"
    assert recover(path) == {"snap": 1, "diag": 0}
    assert commits(path)[-1] == "captures up to snap 1, diag 0"  # recover changed nothing


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path):
    path = tmp_path / "run.zarr"
    writer = ZarrWriter(path, _layout(), _ATTRS)
    with pytest.raises(ScenarioError, match="no other process is writing"):
        ZarrWriter(path, _layout(), _ATTRS, append=True)
    writer.close()
    ZarrWriter(path, _layout(), _ATTRS, append=True).close()


def test_overwrite_replaces_only_a_zarr_run_simkit_wrote(in_tmp):
    simkit.run(heat_scenario(output="run.zarr", steps=9))
    with pytest.raises(ScenarioError, match="expected a new file .or --overwrite."):
        simkit.run(heat_scenario(output="run.zarr"))
    result = simkit.run(heat_scenario(output="run.zarr", steps=12), overwrite=True)
    assert result.step == 12
    with open_reader("run.zarr") as reader:
        assert reader.lengths() == {"snap": 5, "early": 3, "diag": 13}
        assert reader.attrs()[schema.ATTR_HISTORY].count("\n") == 0  # the new run's alone
    other = in_tmp / "other.zarr"
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(other)))
    session = repo.writable_session("main")
    import zarr

    zarr.open_group(session.store, mode="w").attrs["title"] = "someone else's"
    session.commit("theirs")
    with pytest.raises(ScenarioError, match="expected a Zarr run simkit wrote"):
        simkit.run(heat_scenario(output="other.zarr"), overwrite=True)


def test_resume_from_the_last_commit_is_bit_for_bit(in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO)
    reference = simkit.run("s.yaml", output="ref.zarr")
    simkit.run("s.yaml")
    # Cut the run back as a kill after step 23 leaves it (its last commits lost), running.
    from simkit.io.zarr import truncate

    with open_reader("run.zarr") as reader:
        steps = reader.steps({name: None for name in reader.streams()})
    truncate("run.zarr", {name: sum(1 for s in found if s <= 23) for name, found in steps.items()},
             {schema.ATTR_STATUS: "running", schema.ATTR_COMMITTED: 23})
    result = simkit.resume("run.zarr")
    assert result.step == reference.step == 40
    assert_bitwise(result.state["u"], reference.state["u"])
    with open_reader("run.zarr") as got, open_reader("ref.zarr") as ref:
        assert got.lengths() == ref.lengths() == {"snaps": 9, "diag": 41, "checkpoint": 5}
        for name in ref.streams():
            a, b = got.captures(name), ref.captures(name)
            assert_bitwise(a.steps, b.steps)
            for var in b.arrays:
                assert_bitwise(a.arrays[var], b.arrays[var])
        assert "resume" in str(got.attrs()[schema.ATTR_HISTORY]).splitlines()[-1]


def test_commands_that_read_a_run_work_on_a_zarr_run(in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO)
    run = _cli("run", "s.yaml", "-q", cwd=in_tmp)
    assert run.returncode == 0 and run.stdout == "run.zarr\n", run.stderr
    assert run.stderr == ""  # Icechunk's warnings kept quiet
    again = _cli("run", "s.yaml", "-q", "--resume", cwd=in_tmp)
    assert again.returncode == 0, again.stderr
    assert "run.zarr is already complete; nothing to do" in again.stderr
    inspect = _cli("inspect", "run.zarr", cwd=in_tmp)
    assert inspect.returncode == 0, inspect.stderr
    assert "run.zarr: heat2d on numpy (cpu, float64), status complete" in inspect.stdout
    assert "stream snaps: u; steps 0..40 every 5 (9)" in inspect.stdout
    assert "stream diag: energy max_abs; steps 0..40 every 1 (41)" in inspect.stdout
    recovered = _cli("recover", "run.zarr", cwd=in_tmp)
    assert recovered.stdout == "run.zarr: snaps 9 captures, diag 41 captures, " \
                               "checkpoint 5 captures\n", recovered.stderr
    exported = _cli("export", "run.zarr", "--stream", "snaps", "-o", "flat.nc", cwd=in_tmp)
    assert exported.returncode == 0, exported.stderr
    assert _cli("run", "s.yaml", "-q", "-o", "run.nc", cwd=in_tmp).returncode == 0
    assert _cli("export", "run.nc", "--stream", "snaps", "-o", "flat_nc.nc",
                cwd=in_tmp).returncode == 0
    with netCDF4.Dataset(in_tmp / "flat.nc") as got, \
            netCDF4.Dataset(in_tmp / "flat_nc.nc") as want:
        assert dict(got.dimensions.items()).keys() == dict(want.dimensions.items()).keys()
        assert sorted(got.variables) == sorted(want.variables)
        for name, var in want.variables.items():
            assert_bitwise(np.asarray(got[name][...]), np.asarray(var[...]))
            assert got[name].dimensions == var.dimensions
            assert got[name].__dict__ == var.__dict__, name
        assert got.getncattr("simkit_stream") == "snaps"
    plotted = _cli("plot", "run.zarr", "--field", "u", "--stream", "snaps", "-o", "u.png", cwd=in_tmp)
    assert plotted.returncode == 0, plotted.stderr
    assert (in_tmp / "u.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    board = _cli("tensorboard", "run.zarr", "tb", cwd=in_tmp)
    assert board.returncode == 0, board.stderr
    assert [p.name.startswith("events.out.tfevents.") for p in (in_tmp / "tb").iterdir()] == [True]
    watched = _cli("watch", "run.zarr", cwd=in_tmp)
    assert watched.returncode == 0, watched.stderr
    stop = _cli("stop", "run.zarr", cwd=in_tmp)
    assert stop.returncode == 2
    assert "expected the file of a running run, given one whose status is 'complete'" \
        in stop.stderr
    missing = _cli("inspect", "nothing.zarr", cwd=in_tmp)
    assert missing.returncode == 2
    assert "expected an existing run file, given a path that does not exist" in missing.stderr


def test_simkit_open_reads_a_zarr_run_as_the_netcdf_one(in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO)
    simkit.run("s.yaml")
    simkit.run("s.yaml", output="run.nc")
    got, want = simkit.open("run.zarr"), simkit.open("run.nc")
    assert set(got.children) == set(want.children) == {"snaps", "diag", "checkpoint"}
    for name in want.children:
        a, b = got[name].to_dataset(), want[name].to_dataset()
        assert sorted(a.data_vars) == sorted(b.data_vars)
        for var in b.data_vars:
            assert_bitwise(a[var].values, b[var].values)
    snaps = simkit.open("run.zarr", group="snaps")
    assert list(snaps.step.values) == list(range(0, 41, 5))
    assert yaml.safe_load(got.attrs[schema.ATTR_SCENARIO])["output"] == "run.zarr"


def test_format_zarr_picks_the_default_output_and_refuses_another_name(in_tmp):
    (in_tmp / "heat.yaml").write_text(SCENARIO.replace("output: run.zarr\n", "format: zarr\n"))
    result = simkit.run("heat.yaml")
    assert result.path == Path("runs/heat.zarr") and (in_tmp / "runs/heat.zarr").is_dir()
    with open_reader("runs/heat.zarr") as reader:
        assert reader.status() == "complete"
    with pytest.raises(ScenarioError, match=r"expected an output ending in \.zarr \(or an s3:// "
                                            r"URL\) for format: zarr, given 'run\.nc'"):
        simkit.run("heat.yaml", output="run.nc")
    with pytest.raises(ScenarioError, match="expected an output not ending in .zarr for format: "
                                            "netcdf, given 'run.zarr'"):
        simkit.run("heat.yaml", sets=["format=netcdf"], output="run.zarr")


def test_a_run_with_an_objective_wants_a_netcdf_output(in_tmp):
    from simkit.scenario import plan_run

    (in_tmp / "truth.nc").write_bytes(b"")
    scenario = yaml.safe_load(SCENARIO)
    scenario["objective"] = {"misfit": {"path": "truth.nc", "stream": "snaps"},
                             "wrt": ["diffusivity"], "backend": "torch"}
    with pytest.raises(ScenarioError, match="expected a NetCDF output for a run with an "
                                            "objective .gradients are written to NetCDF files "
                                            "only., given 'run.zarr'"):
        plan_run(scenario)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_captures_of_a_chunk_each_read_back_bit_for_bit(tmp_path, dtype):
    # Captures of 1 MiB or more are a chunk each, put in the store as their bytes.
    ny = 512 if dtype == "float64" else 1024
    coords = (schema.CoordinateSpec("y", np.arange(float(ny)), "m", "y"),
              schema.CoordinateSpec("x", np.arange(256.0), "m", "x"))
    u = schema.VariableSpec("u", ("y", "x"), "K", "temperature", dtype)
    layout = schema.RunLayout(coords, (u,), (schema.StreamSpec("snap", (u,), ()),), "s")
    writer = ZarrWriter(tmp_path / "big.zarr", layout, _ATTRS)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((7, ny, 256)).astype(dtype)
    writer.write_block("snap", [0, 1, 2], [0.0, 0.1, 0.2], {"u": values[:3]})
    writer.write_block("snap", [3], [0.3], {"u": values[3:4]})  # two blocks of one commit
    writer.sync()
    writer.write_block("snap", [4, 5, 6], [0.4, 0.5, 0.6], {"u": values[4:]})
    writer.close()
    with ZarrReader(tmp_path / "big.zarr") as reader:
        held = reader.captures("snap")
        assert reader.whole_counts() == {"snap": 7}  # the checksums hold
    assert_bitwise(held.arrays["u"], values)
    snap = xr.open_zarr(store(tmp_path / "big.zarr"), group="snap", consolidated=False)
    assert_bitwise(snap.u.values, values)
    assert snap.u.encoding["chunks"] == (1, ny, 256)


def test_simkit_imports_neither_zarr_nor_icechunk_until_a_zarr_run(tmp_path):
    code = ("import sys, simkit, simkit.io, simkit.api, simkit.cli, simkit.live\n"
            "print(sorted(m for m in ('zarr', 'icechunk') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.stdout == "[]\n", done.stderr
