"""The command line, end to end through subprocesses, and every bad-input path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simkit.cli import main

SIMKIT = [sys.executable, "-m", "simkit"]
TESTS = Path(__file__).parent

GOOD = """\
solver: heat2d
params: {diffusivity: 1.0, shape: [16, 16], spacing: 1.0}
initial: {kind: gaussian, width: 3.0}
steps: 20
outputs:
  snap: {every: 5, fields: [u]}
  diag: {every: 1, diagnostics: [energy]}
output: out/run.nc
"""


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([*SIMKIT, *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_run_inspect_list_end_to_end(in_tmp):
    (in_tmp / "s.yaml").write_text(GOOD)
    proc = _cli("run", "s.yaml", cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "out/run.nc\n" and proc.stderr == ""  # no progress bar off a terminal
    inspect = _cli("inspect", "out/run.nc", cwd=in_tmp)
    assert inspect.returncode == 0, inspect.stderr
    assert "stream snap: u; steps 0..20 every 5 (5)" in inspect.stdout
    assert "stream diag: energy; steps 0..20 every 1 (21)" in inspect.stdout
    assert "final state: step 20" in inspect.stdout and "backend: numpy" in inspect.stdout
    listing = _cli("list", cwd=in_tmp)
    assert "heat2d" in listing.stdout and "lorenz63" in listing.stdout


def test_run_with_overrides_and_backend_flag(in_tmp):
    (in_tmp / "s.yaml").write_text(GOOD)
    proc = _cli("run", "s.yaml", "-o", "o.nc", "--dtype", "float32",
                "--set", "params.diffusivity=0.5", "--set", "steps=7", cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    import xarray as xr

    with xr.open_dataset(in_tmp / "o.nc") as ds:
        assert ds.u.dtype == "float32" and int(ds.step) == 7
        assert yaml.safe_load(ds.attrs["simkit_scenario"])["params"]["diffusivity"] == 0.5


def test_help_imports_neither_jax_nor_torch():
    code = ("import sys\nfrom simkit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('jax', 'torch', 'xarray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("[]"), proc.stdout


def test_existing_output_is_not_overwritten_without_flag(in_tmp):
    (in_tmp / "s.yaml").write_text(GOOD)
    assert _cli("run", "s.yaml", cwd=in_tmp).returncode == 0
    before = (in_tmp / "out/run.nc").read_bytes()
    proc = _cli("run", "s.yaml", "--set", "seed=5", cwd=in_tmp)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("simkit: error: s.yaml:8: output: expected a new file (or "
                                   "--overwrite), given 'out/run.nc' which exists")
    assert (in_tmp / "out/run.nc").read_bytes() == before
    assert _cli("run", "s.yaml", "--overwrite", cwd=in_tmp).returncode == 0


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


BAD = [
    # (name, scenario text, extra args, expected one-line message after "simkit: error: ")
    ("syntax", GOOD.replace("steps: 20", "steps: [20"), [],
     "s.yaml:5: expected valid YAML, given a syntax error"),
    ("unknown top key", _replace(GOOD, "steps: 20", "stpes: 20"), [],
     's.yaml:4: stpes: unknown key (did you mean "steps"?)'),
    ("unknown param", _replace(GOOD, "diffusivity: 1.0", "difusivity: 1.0"), [],
     's.yaml:2: params.difusivity: unknown key (did you mean "diffusivity"?)'),
    ("wrong type", _replace(GOOD, "steps: 20", "steps: twenty"), [],
     "s.yaml:4: steps: expected a valid integer, given 'twenty'"),
    ("negative", _replace(GOOD, "diffusivity: 1.0", "diffusivity: -1.0"), [],
     "s.yaml:2: params.diffusivity: expected greater than 0, given -1.0"),
    ("nan", GOOD + "dt: .nan\n", [], "s.yaml:9: dt: expected a finite number, given nan"),
    ("implicit boolean", GOOD + "device: yes\n", [],
     "s.yaml:9: device: expected 'cpu', 'gpu' or 'auto', given True"),
    ("unstable dt", GOOD + "dt: 0.3\n", [],
     "s.yaml:9: dt: expected at most 0.25, the stable limit of heat2d for these params, "
     "given 0.3"),
    ("steps and until", GOOD + "until: 3.0\n", [],
     "s.yaml: expected exactly one of 'steps' or 'until', given both"),
    ("unknown solver", _replace(GOOD, "heat2d", "heat3d"), [],
     's.yaml:1: solver: unknown solver (did you mean "heat2d"?)'),
    ("unknown field", _replace(GOOD, "fields: [u]", "fields: [v]"), [],
     "s.yaml:6: outputs.snap.fields: unknown field; expected some of u, given 'v'"),
    ("empty schedule", _replace(GOOD, "every: 5, fields", "at: [500], fields"), [],
     "s.yaml:6: outputs.snap: expected a schedule that captures within the run (20 steps)"),
    ("bad schedule", _replace(GOOD, "every: 5, fields", "evry: 5, fields"), [],
     's.yaml:6: outputs.snap.evry: unknown schedule key (did you mean "every"?)'),
    ("duplicate key", GOOD + "steps: 30\n", [],
     "s.yaml:9: steps: expected each key once, given 'steps' again (first on line 4)"),
    ("bad grid", _replace(GOOD, "[16, 16]", "[16, 1]"), [],
     "s.yaml:2: params.shape.1: expected greater than or equal to 3, given 1"),
    ("bad set", GOOD, ["--set", "params.diffusivity=-2"],
     "s.yaml (--set params.diffusivity=-2): params.diffusivity: expected greater than 0"),
    ("bad set syntax", GOOD, ["--set", "steps"], "--set: expected KEY=VALUE, given 'steps'"),
    ("not a mapping", "- 1\n- 2\n", [], "s.yaml:1: expected a mapping of scenario keys"),
    ("unwritable output", _replace(GOOD, "out/run.nc", "/proc/simkit/run.nc"), [],
     "s.yaml:8: output: expected a writable location, given '/proc/simkit/run.nc'"),
    ("bad backend flag value via set", GOOD, ["--set", "backend=cuda"],
     "s.yaml (--set backend=cuda): backend: expected 'numpy', 'jax' or 'torch', given 'cuda'"),
    ("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
               for p, c in zip("abcdef", "bcdefg", strict=True)), [],
     "s.yaml:1: expected at most 100000 YAML nodes (aliases expanded), given more"),
    ("negative steps", _replace(GOOD, "steps: 20", "steps: -5"), [],
     "s.yaml:4: steps: expected greater than or equal to 0, given -5"),
    ("seed string", GOOD + "seed: abc\n", [], "s.yaml:9: seed: expected a valid integer, given 'abc'"),
    ("dtype", GOOD + "dtype: float16\n", [],
     "s.yaml:9: dtype: expected 'float32' or 'float64', given 'float16'"),
    ("outputs list", _replace(GOOD, "  diag: {every: 1, diagnostics: [energy]}\n", "")
     .replace("outputs:\n  snap: {every: 5, fields: [u]}", "outputs: [snap]"), [],
     "s.yaml:5: outputs: expected a valid dictionary, given ['snap']"),
    ("stream name", _replace(GOOD, "  snap:", "  my-snap:"), [],
     "s.yaml:6: outputs.my-snap: expected a stream name of letters, digits and _"),
    ("stream named like a field", _replace(GOOD, "  snap:", "  u:"), [],
     "s.yaml:6: outputs.u: expected a stream name other than the file's variables"),
    ("when unknown diagnostic", _replace(GOOD, "every: 1, diagnostics", "when: {diagnostic: "
                                         "enrgy, above: 1.0}, diagnostics"), [],
     's.yaml:7: outputs.diag.when.diagnostic: unknown diagnostic (did you mean "energy"?)'),
    ("when above and below", _replace(GOOD, "every: 1, diagnostics", "when: {diagnostic: "
                                      "energy, above: 1.0, below: 0.5}, diagnostics"), [],
     "s.yaml:7: outputs.diag.when: expected exactly one of 'above' or 'below'"),
    ("while every zero", _replace(GOOD, "every: 1, diagnostics", "while: {diagnostic: "
                                  "energy, above: 1.0, every: 0}, diagnostics"), [],
     "s.yaml:7: outputs.diag.while.every: expected an integer >= 1, given 0"),
    ("when cooldown negative", _replace(GOOD, "every: 1, diagnostics", "when: {diagnostic: "
                                        "energy, above: 1.0, cooldown: -3}, diagnostics"), [],
     "s.yaml:7: outputs.diag.when.cooldown: expected an integer >= 0, given -3"),
    ("inside any", _replace(GOOD, "every: 1, diagnostics", "any: [{every: 2}, {when: "
                                  "{diagnostic: energy, above: 1.0, cooldown: -1}}], diagnostics"),
     [], "s.yaml:7: outputs.diag.any[1].when.cooldown: expected an integer >= 0, given -1"),
    ("inside a block any", _replace(GOOD, "  diag: {every: 1, diagnostics: [energy]}\n",
                                    "  diag:\n    diagnostics: [energy]\n    any:\n"
                                    "      - every: 2\n      - while: {diagnostic: energy, "
                                    "above: 1.0, every: 0}\n"), [],
     "s.yaml:11: outputs.diag.any[1].while.every: expected an integer >= 1, given 0"),
    ("params scalar", _replace(GOOD, "params: {diffusivity: 1.0, shape: [16, 16], spacing: 1.0}",
                               "params: 5"), [],
     "s.yaml:2: params: expected a valid dictionary, given 5"),
    ("initial kind", _replace(GOOD, "kind: gaussian", "kind: gauss"), [],
     "s.yaml:3: initial.kind: expected 'gaussian', 'mode', 'uniform', 'noise' or 'file', "
     "given 'gauss'"),
    ("shape length", _replace(GOOD, "[16, 16]", "[16]"), [],
     "s.yaml:2: params.shape: expected a list with at least 2 items, given [16]"),
    ("sim_time negative", _replace(GOOD, "every: 5, fields", "sim_time: -0.5, fields"), [],
     "s.yaml:6: outputs.snap.sim_time: expected a finite number > 0, given -0.5"),
    ("empty file", "", [], "s.yaml:1: expected a mapping of scenario keys, given None"),
    ("tab indentation", GOOD.replace("  snap:", "\tsnap:"), [],
     "s.yaml:6: expected valid YAML, given a syntax error"),
    ("output is a directory", _replace(GOOD, "output: out/run.nc", "output: ."), [],
     "s.yaml:8: output: expected a file path, given the directory '.'"),
    ("set through a scalar", GOOD, ["--set", "steps.count=3"],
     "--set steps.count=3: steps: expected a mapping to set 'count' in, given 20"),
    ("implicit boolean no", _replace(GOOD, "spacing: 1.0}", "spacing: 1.0, boundary: no}"), [],
     "s.yaml:2: params.boundary: expected 'periodic' or 'fixed', given False"),
    ("grid too large", _replace(GOOD, "[16, 16]", "[400000, 400000]"), [],
     "s.yaml:2: params: expected a grid that fits in memory"),
    ("missing initial file", _replace(GOOD, "kind: gaussian, width: 3.0",
                                      "kind: file, path: u0.npy"), [],
     "s.yaml:3: initial: expected an existing .npy file for initial.path, given 'u0.npy'"),
    ("inf", _replace(GOOD, "diffusivity: 1.0", "diffusivity: .inf"), [],
     "s.yaml:2: params.diffusivity: expected a finite number, given inf"),
    ("logspace backwards", _replace(GOOD, "every: 5, fields", "logspace: [10, 2, 3], fields"), [],
     "s.yaml:6: outputs.snap.logspace.stop: expected an integer >= start (10), given 2"),
]


@pytest.mark.parametrize("name, text, extra, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(in_tmp, capsys, name, text, extra,
                                                            message):
    (in_tmp / "s.yaml").write_text(text)
    code = main(["run", "s.yaml", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("simkit: error: "), err
    assert err[len("simkit: error: "):].startswith(message), err
    assert "expected" in err and ("given" in err or "exists" in err)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["s.yaml"]


def test_missing_and_huge_scenario_files(in_tmp, capsys):
    assert main(["run", "nope.yaml"]) == 2
    assert "nope.yaml: expected an existing scenario file" in capsys.readouterr().err
    (in_tmp / "big.yaml").write_text("# " + "x" * (2 << 20))
    assert main(["run", "big.yaml"]) == 2
    assert "big.yaml: expected a scenario file of at most 1048576 bytes" in capsys.readouterr().err


def test_inspect_rejects_a_non_netcdf_file(in_tmp, capsys):
    (in_tmp / "x.nc").write_text("not netcdf")
    assert main(["inspect", "x.nc"]) == 2
    assert "x.nc: expected a NetCDF file written by simkit" in capsys.readouterr().err


def test_shipped_scenarios_validate():
    from simkit.scenario import plan_run

    for path in sorted((TESTS.parent / "scenarios").glob("*.yaml")):
        plan = plan_run(path, overwrite=True)
        assert plan.streams, path
