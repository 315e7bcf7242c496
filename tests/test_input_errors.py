"""Untrusted or careless input: output paths, what ``--overwrite`` may replace, solver imports
only when allowed, bounded sizes, and one-line errors (exit 2) for hostile scenarios and files."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

import simkit
from simkit.cli import main
from simkit.errors import ScenarioError
from simkit.scenario import SimkitWarning, load_yaml, plan_run

SMALL = """\
solver: heat2d
params: {shape: [16, 16]}
initial: {kind: gaussian, width: 3.0}
steps: 20
outputs:
  snap: {every: 5, fields: [u]}
output: out.nc
"""
ERROR = "simkit: error: "


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith(ERROR) and err.count("\n") == 1, err
    return err[len(ERROR):].strip()


def _write(directory: Path, text: str, name: str = "s.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- output paths


def test_nul_byte_in_output_never_touches_another_file(in_tmp, capsys):
    victim = in_tmp / ".victim"
    victim.write_bytes(b"precious")
    _write(in_tmp, SMALL.replace("output: out.nc", 'output: "victim\\0.nc"'))
    for command in ("validate", "run"):
        assert main([command, "s.yaml"]) == 2
        message = _one_line_error(capsys)
        assert message.startswith("s.yaml:7: output: expected a path without control characters")
        assert "victim\\x00.nc" in message
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in in_tmp.iterdir()) == [".victim", "s.yaml"]


@pytest.mark.parametrize("output, message", [
    ('""', "expected a file path, given ''"),
    ('"  "', "expected a file path, given '  '"),
    ('"runs/"', "expected a file path, given the directory 'runs/'"),
    ('"runs/.."', "expected a file path, given the directory 'runs/..'"),
    ('"a\\nb.nc"', "expected a path without control characters"),
    ("x" * 170 + ".nc", "expected a path of at most 4000 bytes with names of at most 160"),
], ids=["empty", "blank", "trailing slash", "dot-dot", "newline", "long name"])
def test_bad_output_paths_are_one_line_errors(in_tmp, capsys, output, message):
    _write(in_tmp, SMALL.replace("output: out.nc", f"output: {output}"))
    assert main(["run", "s.yaml"]) == 2
    assert message in _one_line_error(capsys)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["s.yaml"]


# ---------------------------------------------------------------- what --overwrite replaces


def test_overwrite_never_replaces_the_scenario_or_initial_file(in_tmp, capsys):
    scenario = _write(in_tmp, SMALL)
    before = scenario.read_bytes()
    assert main(["run", "s.yaml", "-o", "s.yaml", "--overwrite"]) == 2
    assert "output: expected an output other than the run's inputs, given 's.yaml', which is " \
           "the scenario file" in _one_line_error(capsys)
    os.link(scenario, in_tmp / "hard.yaml")  # the same file under another name
    assert main(["run", "s.yaml", "-o", "hard.yaml", "--overwrite"]) == 2
    assert "which is the scenario file" in _one_line_error(capsys)
    assert scenario.read_bytes() == before
    np.save(in_tmp / "u0.npy", np.zeros((16, 16)))
    _write(in_tmp, SMALL.replace("kind: gaussian, width: 3.0", "kind: file, path: u0.npy"))
    assert main(["run", "s.yaml", "-o", "u0.npy", "--overwrite"]) == 2
    assert "which is the initial condition file" in _one_line_error(capsys)
    assert np.load(in_tmp / "u0.npy").shape == (16, 16)


def test_overwrite_refuses_fifos_devices_and_dangling_links(in_tmp, capsys):
    _write(in_tmp, SMALL)
    os.mkfifo(in_tmp / "pipe.nc")
    os.symlink(in_tmp / "nowhere.nc", in_tmp / "link.nc")
    for output, kind in (("pipe.nc", "which is a FIFO"), ("/dev/null", "which is a character "
                         "device"), ("link.nc", "a symbolic link to nothing")):
        assert main(["run", "s.yaml", "-o", output, "--overwrite"]) == 2
        assert kind in _one_line_error(capsys)
    assert main(["validate", "s.yaml", "--set", "output=pipe.nc"]) == 2
    assert "which is a FIFO" in _one_line_error(capsys)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["link.nc", "pipe.nc", "s.yaml"]


# ---------------------------------------------------------------- imports only when allowed

HELPER = """\
from pathlib import Path
import numpy as np
from simkit.solver import AbstractSolver, Coordinate, FieldSpec, SolverModel, Stage

Path("{marker}").write_text("imported")


class Params(SolverModel):
    size: int = 4


class Initial(SolverModel):
    value: float = 1.0


class Decay(AbstractSolver):
    name, version, description, time_units = "decay", "1", "decay", "s"
    Params, Initial = Params, Initial

    def __init__(self, params): self.params = params
    def fields(self): return [FieldSpec("u", ("i",), "1", "amount")]
    def coordinates(self): return [Coordinate("i", np.arange(self.params.size), "1", "cell")]
    def initial_state(self, initial, rng): return {{"u": np.full(self.params.size, initial.value)}}
    def stages(self): return [Stage("decay", lambda s, dt: {{**s, "u": s["u"] * (1 - dt)}})]
    def diagnostics(self): return []
    def default_dt(self): return 0.1
    def max_stable_dt(self): return 1.0
"""


@pytest.fixture
def no_import_env(monkeypatch):
    monkeypatch.delenv("SIMKIT_ALLOW_IMPORT", raising=False)


def _helper_module(directory: Path, name: str, marker: Path) -> None:
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(HELPER.format(marker=marker))
    sys.modules.pop(name, None)


def test_module_solver_is_imported_only_when_allowed_and_found_beside_the_scenario(
        in_tmp, capsys, no_import_env):
    marker = in_tmp / "imported.txt"
    _helper_module(in_tmp / "project", "fixhelpers_a", marker)
    scenario = _write(in_tmp / "project", "solver: fixhelpers_a:Decay\nsteps: 4\noutput: d.nc\n")
    assert main(["validate", str(scenario)]) == 2
    message = _one_line_error(capsys)
    assert "solver: expected a registered solver name (" in message
    assert "given 'fixhelpers_a:Decay', which imports and runs module 'fixhelpers_a'; allow " \
           "that with --allow-import" in message
    assert main(["run", str(scenario)]) == 2
    capsys.readouterr()
    assert not marker.exists() and "fixhelpers_a" not in sys.modules
    assert main(["validate", str(scenario), "--set", "solver=heat2d"]) == 0  # registered: fine
    # Allowed: found beside the scenario file, with nothing on PYTHONPATH.
    assert main(["validate", str(scenario), "--allow-import"]) == 0
    assert marker.read_text() == "imported"
    assert str((in_tmp / "project").resolve()) not in sys.path
    result = simkit.run(scenario, allow_import=True, output="ran.nc")
    np.testing.assert_allclose(result.state["u"], np.full(4, 0.9**4))
    sys.modules.pop("fixhelpers_a", None)


def test_resume_and_inspect_of_a_file_never_import_what_it_names(in_tmp, capsys, monkeypatch,
                                                                  no_import_env):
    marker = in_tmp / "imported.txt"
    _helper_module(in_tmp / "lib", "fixhelpers_b", marker)
    monkeypatch.syspath_prepend(str(in_tmp / "lib"))  # importable, as a downloaded module may be
    path = simkit.run(yaml.safe_load(SMALL)).path
    with netCDF4.Dataset(path, "a") as ds:  # a file that names a module, as a hostile one may
        recorded = yaml.safe_load(ds.getncattr("simkit_scenario"))
        ds.setncattr("simkit_scenario", yaml.safe_dump({**recorded,
                                                        "solver": "fixhelpers_b:Decay"}))
        ds.setncattr("simkit_status", "running")
    with pytest.raises(ScenarioError, match="allow that with --allow-import"):
        simkit.resume(path)
    assert main(["resume", str(path)]) == 2
    assert "which imports and runs module 'fixhelpers_b'" in _one_line_error(capsys)
    assert main(["inspect", str(path)]) == 0
    assert "solver: fixhelpers_b:Decay" in capsys.readouterr().out
    assert not marker.exists() and "fixhelpers_b" not in sys.modules


@pytest.mark.parametrize("solver, message", [
    (":", "expected a registered solver name or 'module:Class' (dotted Python names), "
          "given ':'"),
    (".x:y", "expected a registered solver name or 'module:Class' (dotted Python names), "
             "given '.x:y'"),
    ("simkit.solver:AbstractSolver", "expected a concrete solver class, given "
                                     "'simkit.solver:AbstractSolver', which is abstract"),
], ids=["colon", "relative", "abstract"])
def test_bad_solver_import_paths_are_one_line_errors(in_tmp, capsys, solver, message):
    _write(in_tmp, SMALL.replace("solver: heat2d", f'solver: "{solver}"'))
    assert os.environ["SIMKIT_ALLOW_IMPORT"] == "1"  # set by conftest: imports are allowed
    assert main(["run", "s.yaml"]) == 2
    assert f"s.yaml:1: solver: {message}" in _one_line_error(capsys)


def test_a_solver_module_that_fails_to_import_is_a_one_line_error(in_tmp, capsys, monkeypatch):
    (in_tmp / "fixbroken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(in_tmp))
    _write(in_tmp, SMALL.replace("solver: heat2d", "solver: fixbroken:Solver"))
    assert main(["run", "s.yaml"]) == 2
    assert "s.yaml:1: solver: expected an importable 'module:Class', given 'fixbroken:Solver' " \
           "(RuntimeError: boom)" in _one_line_error(capsys)
    sys.modules.pop("fixbroken", None)


# ---------------------------------------------------------------- bounded sizes


class _Hang(Exception):
    pass


def _within(seconds: float, fn, *args, **kwargs):
    """Call fn, failing (not hanging) when it takes longer than ``seconds``."""
    def alarm(signum, frame):
        raise _Hang(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _heat(**overrides) -> dict:
    data = yaml.safe_load(SMALL)
    data.update(overrides)
    return data


def test_one_line_of_yaml_cannot_exhaust_memory_or_hang_validate(in_tmp):
    with pytest.raises(ScenarioError, match=r"outputs.snap.logspace.num: expected an integer "
                                            r"from 1 to 100000, given 100000000"):
        _within(5, plan_run, _heat(outputs={"snap": {"logspace": [1, 1000, 100_000_000]}}))
    start = time.perf_counter()
    with pytest.warns(SimkitWarning, match=r"outputs.snap will write about"):
        plan = _within(5, plan_run, _heat(steps=10**11, outputs={"snap": {"every": 1}}))
    assert plan.scenario.steps == 10**11 and time.perf_counter() - start < 5
    with pytest.raises(ScenarioError, match=r"steps: expected less than or equal to "
                                            r"9007199254740992"):
        plan_run(_heat(steps=2**60))
    with pytest.raises(ScenarioError, match=r"outputs.snap: expected at most 1099511627776 "
                                            r"captures in one stream"):
        _within(5, plan_run, _heat(steps=None, until=1e6, outputs={"snap": {"sim_time": 1e-9}}))
    with pytest.raises(ScenarioError, match=r"until: expected at most 9007199254740992 steps"):
        plan_run(_heat(steps=None, until=1e300))


# ---------------------------------------------------------------- one-line errors, exit 2


@pytest.mark.parametrize("text, message", [
    ("outputs: " + "[" * 5000 + "]" * 5000 + "\n", "expected at most 32 levels of nesting"),
    ("a: " + "{b: " * 40 + "1" + "}" * 40 + "\n", "expected at most 32 levels of nesting"),
    (SMALL + "seed: 100000000000000000000000000\n", "s.yaml:8: seed: expected less than or "
                                                   "equal to 4294967295"),
], ids=["deep flow nesting", "nested mappings", "huge seed"])
def test_hostile_scenarios_are_one_line_errors(in_tmp, capsys, text, message):
    _write(in_tmp, text)
    assert main(["validate", "s.yaml"]) == 2
    assert message in _one_line_error(capsys)


def test_deeply_nested_python_data_is_a_scenario_error():
    nested: object = 1
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ScenarioError, match="<scenario>: expected at most 32 levels of nesting"):
        plan_run(_heat(initial={"kind": "gaussian", "width": nested}))


def _foreign_netcdf(path: Path, scenario: bool = False) -> Path:
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 3)
        ds.createVariable("t", "f8", ("x",))[:] = [1.0, 2.0, 3.0]
        if scenario:  # claims to be a run file but has none of the structure
            ds.setncattr("simkit_scenario", SMALL)
            ds.setncattr("simkit_streams", "snap")
    return path


def test_inspect_recover_resume_of_a_foreign_netcdf_file_exit_2(in_tmp, capsys):
    for scenario in (False, True):
        _foreign_netcdf(in_tmp / "other.nc", scenario)
        for command in ("inspect", "recover", "resume"):
            assert main([command, "other.nc"]) == 2, command
            message = _one_line_error(capsys)
            assert message.startswith("other.nc: expected a") and "written by simkit" in message


@pytest.mark.parametrize("array, message", [
    (np.zeros((8, 8)), "expected an array of shape [16, 16], given [8, 8]"),
    (np.zeros((16, 16), complex), "expected a .npy array of real numbers, given a complex128"),
    (np.full((16, 16), "a"), "expected a .npy array of real numbers, given a <U1 array"),
    (None, "ValueError: This file contains pickled (object) data"),
], ids=["shape", "complex", "strings", "not npy"])
def test_bad_initial_npy_is_caught_by_validate_before_anything_is_written(in_tmp, capsys, array,
                                                                          message):
    if array is None:
        (in_tmp / "u0.npy").write_text("not an array")
    else:
        np.save(in_tmp / "u0.npy", array)
    _write(in_tmp, SMALL.replace("kind: gaussian, width: 3.0", "kind: file, path: u0.npy"))
    for command in ("validate", "run"):
        assert main([command, "s.yaml"]) == 2
        text = _one_line_error(capsys)
        assert text.startswith("s.yaml:3: initial: expected an initial condition heat2d can "
                               "build, given one that fails") and message in text
    assert sorted(p.name for p in in_tmp.iterdir()) == ["s.yaml", "u0.npy"]


def test_two_runs_starting_on_one_new_path_give_a_clear_error(in_tmp):
    from simkit.driver import execute

    plan = plan_run(_heat())
    Path("out.nc").write_bytes(b"the other run's file")  # created after this run was planned
    with pytest.raises(ScenarioError, match="output: expected a new file .or --overwrite., given "
                                            "'out.nc', which another run created meanwhile") as e:
        execute(plan)
    assert e.value.exit_code == 2
    assert Path("out.nc").read_bytes() == b"the other run's file"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.nc"]


def test_resume_on_a_nearly_full_disk_says_disk_full(in_tmp):
    data = _heat(params={"shape": [64, 64]}, steps=40,
                 outputs={"snap": {"every": 2, "fields": ["u"]},
                          "checkpoint": {"every": 10, "fields": "all"}})
    path = simkit.run(data).path
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr("simkit_status", "running")  # as a killed run leaves it
    before = path.read_bytes()
    limit = len(before) // 2

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "simkit", "resume", "out.nc", "-q"],
                          capture_output=True, text=True, preexec_fn=small_disk, cwd=in_tmp)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and "HDF error" not in proc.stderr
    assert "disk full writing .out.nc." in proc.stderr
    assert f"(file size limit of {limit} bytes, the file has {len(before)}); out.nc is " \
           "unchanged" in proc.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.nc"]


def test_yaml_exponent_floats_are_numbers(in_tmp):
    assert load_yaml("a: 1e-3\nb: 2E+5\nc: -1.5e2\nd: 1_0\ne: 1.0\nf: e5\n")[0] == \
        {"a": 1e-3, "b": 2e5, "c": -150.0, "d": 10, "e": 1.0, "f": "e5"}
    _write(in_tmp, SMALL + "dt: 1e-3\n")
    assert plan_run("s.yaml").dt == 1e-3


def test_explicit_steps_after_the_end_are_reported(in_tmp):
    with pytest.warns(SimkitWarning, match=r"outputs.early: steps 50 come after the run's last "
                                           r"step \(10\) and will not be captured"):
        plan_run(_heat(steps=10, outputs={"early": {"at": [2, 50], "fields": ["u"]}}))
    with pytest.warns(SimkitWarning, match=r"outputs.log: steps 100, 1000 come after"):
        plan_run(_heat(steps=10, outputs={"log": {"logspace": [1, 1000, 4], "fields": ["u"]}}))


# ---------------------------------------------------------------- names are names


def test_stream_named_on_off_yes_no_keeps_its_name(in_tmp, capsys):
    """YAML 1.1 reads the plain words on/off/yes/no as booleans: as mapping keys they are names
    (as in YAML 1.2); as values they stay what PyYAML reads (``compile: yes`` is true)."""
    text = SMALL.replace("  snap: {every: 5, fields: [u]}\n",
                         "  on: {every: 5, fields: [u]}\n  off: {every: 10}\n"
                         "  yes: {at: [3]}\n  no: {every: 20}\n  null: {at: [4]}\n")
    _write(in_tmp, text.replace("steps: 20", "steps: 20\ncompile: yes"))
    plan = plan_run("s.yaml")
    assert [s.name for s in plan.streams] == ["on", "off", "yes", "no", "null"]
    assert plan.scenario.compile is True
    assert main(["run", "s.yaml", "-q"]) == 0
    with netCDF4.Dataset(in_tmp / "out.nc") as ds:
        assert ds.getncattr("simkit_streams") == "on off yes no null"
        assert list(ds.groups["yes"].variables["step"][:]) == [3]
    # A key YAML would read as a number is a name too, refused as a name at its own line.
    _write(in_tmp, SMALL.replace("  snap:", "  1:"))
    assert main(["validate", "s.yaml"]) == 2
    assert _one_line_error(capsys) == ("s.yaml:6: outputs.1: expected a stream name of letters, "
                                       "digits and _, given '1'")


# ---------------------------------------------------------------- many streams


def _streams_scenario(names, steps: int = 10) -> dict:
    return {"solver": "heat2d", "params": {"shape": [8, 8]}, "steps": steps,
            "outputs": {name: {"every": 1} for name in names}, "output": "out.nc"}


def test_stream_count_and_name_length_are_refused_by_validate(in_tmp, capsys):
    _write(in_tmp, yaml.safe_dump(_streams_scenario([f"s{i}" for i in range(1001)]),
                                   sort_keys=False))
    assert main(["validate", "s.yaml"]) == 2
    assert _one_line_error(capsys) == (
        "s.yaml:7: outputs: expected at most 1000 streams (outputs and gradients together), "
        "given 1001; keep several fields or diagnostics in one stream instead")
    long = "n" * 256
    _write(in_tmp, yaml.safe_dump(_streams_scenario(["a", long]), sort_keys=False))
    assert main(["validate", "s.yaml"]) == 2
    assert _one_line_error(capsys) == (
        f"s.yaml:10: outputs.{long}: expected a stream name of at most 255 characters (a netCDF "
        "name's limit), given one of 256")
    _write(in_tmp, yaml.safe_dump({**_streams_scenario(["a"]),
                                   "diagnostics": {"d" * 241: "helpers:total"}}, sort_keys=False))
    assert main(["validate", "s.yaml"]) == 2
    assert "expected a name of at most 240 characters" in _one_line_error(capsys)
    # The longest name allowed makes a file.
    result = simkit.run(_streams_scenario(["n" * 255], steps=2))
    with netCDF4.Dataset(result.path) as ds:
        assert list(ds.groups["n" * 255].variables["step"][:]) == [0, 1, 2]


def test_a_file_of_many_streams_is_laid_out_in_linear_time(tmp_path):
    """Coordinates written while the file was in define mode wrote the whole file's metadata
    each time: 8 times the streams cost about 40 times as long."""
    from simkit.io import NetCDFWriter, schema

    coords = tuple(schema.CoordinateSpec(d, np.arange(16.0), "m", d) for d in ("y", "x"))
    u = schema.VariableSpec("u", ("y", "x"), "K", "temperature")
    cost = {}
    for n in (25, 200):
        layout = schema.RunLayout(coords, (u,), tuple(schema.StreamSpec(f"s{i}", (u,), ())
                                                      for i in range(n)), "s")
        start = time.process_time()
        NetCDFWriter(tmp_path / f"{n}.nc", layout, {schema.ATTR_SCENARIO: "x"}).close()
        cost[n] = time.process_time() - start
    assert cost[200] < 20 * cost[25], cost


def test_a_block_of_many_streams_is_written_with_one_sync(in_tmp, monkeypatch):
    from simkit.io.netcdf import NetCDFWriter

    syncs = []
    real = NetCDFWriter.sync
    monkeypatch.setattr(NetCDFWriter, "sync", lambda self: (syncs.append(1), real(self))[1])
    counts = {}
    for n in (1, 40):
        syncs.clear()
        simkit.run(_streams_scenario([f"s{i}" for i in range(n)]), overwrite=True)
        counts[n] = len(syncs)
    assert counts[40] <= counts[1] + 2, counts  # a sync per stream and block: 10 or more


# ---------------------------------------------------------------- --overwrite


REFUSED = ("expected a file simkit wrote (a run, recording or export) to replace with "
           "--overwrite, given {!r}, which is not one; remove it yourself or choose another "
           "output")


def test_overwrite_never_replaces_the_observations_of_the_objective(in_tmp, capsys):
    assert main(["run", _write(in_tmp, SMALL).name, "-q", "-o", "truth.nc"]) == 0
    before = (in_tmp / "truth.nc").read_bytes()
    _write(in_tmp, SMALL.replace("output: out.nc", "objective:\n  misfit: {path: truth.nc, "
                                 "stream: snap}\n  wrt: [diffusivity]\noutput: out.nc"),
           "guess.yaml")
    for command in (["run", "guess.yaml", "-o", "truth.nc", "--overwrite"],
                    ["validate", "guess.yaml", "--set", "output=truth.nc"]):
        assert main(command) == 2
        assert _one_line_error(capsys).endswith(
            "output: expected an output other than the run's inputs, given 'truth.nc', which "
            "is the observations file (objective.misfit.path)")
    from simkit.autodiff import misfit, value_and_grad

    with pytest.raises(ScenarioError, match="given 'truth.nc', which is the observations"):
        value_and_grad(SMALL_DATA, misfit("truth.nc", "snap"), ["diffusivity"],
                       output="truth.nc", overwrite=True)
    assert (in_tmp / "truth.nc").read_bytes() == before


SMALL_DATA = yaml.safe_load(SMALL)


def test_overwrite_replaces_only_files_simkit_wrote(in_tmp, capsys):
    _write(in_tmp, SMALL)
    passwd = in_tmp / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    other = _write(in_tmp, "not: a run\n", "other.yaml")
    with netCDF4.Dataset(in_tmp / "foreign.nc", "w") as ds:  # NetCDF, but not simkit's
        ds.title = "someone's data"
    before = {p: p.read_bytes() for p in (passwd, other, in_tmp / "foreign.nc")}
    for path in before:
        for command in (["run", "s.yaml", "-q", "-o", path.name, "--overwrite"],
                        ["validate", "s.yaml", "--set", f"output={path.name}"]):
            assert main(command) == 2
            assert _one_line_error(capsys).endswith(f"output: {REFUSED.format(path.name)}")
    # Below the check at planning: the writer refuses too (a file that appeared since).
    from simkit.io import NetCDFWriter
    from simkit.io.netcdf import written_by_simkit

    plan = plan_run("s.yaml")
    with pytest.raises(ScenarioError, match="expected a file simkit wrote"):
        NetCDFWriter(passwd, _layout_of(plan), {}, overwrite=True)
    with pytest.raises(ScenarioError, match=r"^path: expected a file simkit wrote .* 'passwd'"):
        simkit.record("passwd", {"s": {"every": 1}}, overwrite=True)
    assert {p: p.read_bytes() for p in before} == before
    # simkit's own files are replaced: a run, a recording and an export.
    assert main(["run", "s.yaml", "-q"]) == 0
    assert main(["run", "s.yaml", "-q", "--overwrite", "--set", "seed=1"]) == 0
    with simkit.record("rec.nc", {"s": {"every": 1}}) as rec:
        rec.step(0, 0.0, u=np.zeros(3))
    assert main(["run", "s.yaml", "-q", "-o", "rec.nc", "--overwrite"]) == 0
    assert main(["export", "out.nc", "--stream", "snap", "-o", "flat.nc"]) == 0
    assert main(["run", "s.yaml", "-q", "-o", "flat.nc", "--overwrite"]) == 0
    assert all(written_by_simkit(in_tmp / n) for n in ("out.nc", "rec.nc", "flat.nc"))
    assert not any(written_by_simkit(p) for p in (*before, in_tmp / "missing.nc", in_tmp))


def _layout_of(plan):
    from simkit.driver import run_layout as _layout

    return _layout(plan, plan.scenario.dtype)


def test_export_overwrite_replaces_only_files_simkit_wrote(in_tmp, capsys):
    _write(in_tmp, SMALL)
    assert main(["run", "s.yaml", "-q"]) == 0
    other = _write(in_tmp, "not: an export\n", "other.yaml")
    assert main(["export", "out.nc", "--stream", "snap", "-o", "other.yaml", "--overwrite"]) == 2
    assert _one_line_error(capsys).endswith(f"-o: {REFUSED.format('other.yaml')}")
    assert other.read_text() == "not: an export\n"
    assert main(["export", "out.nc", "--stream", "snap", "-o", "flat.nc"]) == 0
    capsys.readouterr()
    assert main(["export", "out.nc", "--stream", "snap", "-o", "flat.nc", "--overwrite"]) == 0


def test_a_name_yaml_reads_as_a_boolean_value_gets_a_quoting_hint(in_tmp, capsys):
    _write(in_tmp, SMALL.replace("fields: [u]", "fields: [u, no]"))
    assert main(["validate", "s.yaml"]) == 2
    assert _one_line_error(capsys) == (
        "s.yaml:6: outputs.snap.fields: expected a list of field names or 'all', given ['u', "
        "False] (YAML reads unquoted on, off, yes and no as true or false: quote such a name)")
