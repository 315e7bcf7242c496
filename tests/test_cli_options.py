"""The command line's options and listings: global options before or after the command, the
solver list's columns, and run files whose recorded scenario is not a scenario."""

from __future__ import annotations

import netCDF4
import pytest
import yaml

import simkit
from simkit import cli
from simkit.cli import main
from simkit.solver import available_solvers, load_solver

SMALL = {"solver": "heat2d", "params": {"shape": [8, 8]}, "steps": 10, "seed": 1,
         "initial": {"kind": "noise", "amplitude": 1.0},
         "outputs": {"checkpoint": {"every": 5, "fields": "all"}}, "output": "s.nc"}


# ---------------------------------------------------------------- global options


@pytest.mark.parametrize("command", sorted(cli._parser()._subparsers._group_actions[0].choices))
def test_every_global_option_is_taken_before_or_after_every_command(command):
    positional = {"run": ["s.yaml"], "resume": ["f.nc"], "recover": ["f.nc"],
                  "validate": ["s.yaml"], "plot": ["f.nc", "--field", "u"], "watch": ["f.nc"],
                  "stop": ["f.nc"], "sweep": ["w.yaml"], "inspect": ["f.nc"],
                  "export": ["f.nc", "--stream", "a", "-o", "o.nc"],
                  "tensorboard": ["f.nc", "logs"]}.get(command, [])
    options = ["-q", "-v", "--log-quiet", "--debug"]
    before = cli._parser().parse_args([*options, command, *positional])
    after = cli._parser().parse_args([command, *positional, *options])
    neither = cli._parser().parse_args([command, *positional])
    for args in (before, after):
        assert (args.quiet, args.log_quiet, args.debug) == (True, True, True)
        assert args.verbose + getattr(args, "verbose_after", 0) == 1
    assert (neither.quiet, neither.log_quiet, neither.debug) == (False, False, False)
    assert neither.verbose + getattr(neither, "verbose_after", 0) == 0


def test_quiet_before_the_command_runs(in_tmp, capsys):
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(SMALL))
    assert main(["-q", "run", "s.yaml"]) == 0
    assert capsys.readouterr().out == "s.nc\n"


def test_verbose_counts_on_both_sides(in_tmp, capsys):
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(SMALL))
    args = cli._parser().parse_args(["-v", "run", "s.yaml", "-v"])
    assert args.verbose + args.verbose_after == 2


# ---------------------------------------------------------------- simkit list


def test_list_aligns_every_solver_description(in_tmp, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[1:out.index("scenarios (scenarios):")]
    names = available_solvers()
    assert [row.split()[0] for row in rows] == names
    columns = {row.index(load_solver(name).description) for row, name in zip(rows, names, strict=True)}
    assert columns == {2 + len("navier_stokes2d") + 1}


# ---------------------------------------------------------------- recorded scenarios


@pytest.mark.parametrize(("recorded", "given"), [
    ("solver: [heat2d", "YAML that does not parse"),
    ("- 1\n- 2", "a list"),
    ("!!python/object/apply:os.system ['echo unsafe']", "a YAML tag that is not allowed"),
])
@pytest.mark.parametrize("command", [["resume", "s.nc"], ["run", "s.yaml", "--resume"]])
def test_resume_of_a_file_whose_recorded_scenario_is_not_a_scenario_exits_2(
        in_tmp, capsys, recorded, given, command):
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(SMALL))
    simkit.run({**SMALL, "steps": 10})
    with netCDF4.Dataset(in_tmp / "s.nc", "a") as ds:
        ds.setncattr("simkit_status", "interrupted")
        ds.setncattr("simkit_scenario", recorded)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err == (f"simkit: error: s.nc: simkit_scenario: expected the scenario the run was "
                   f"made from, a YAML mapping, given {given}\n")


@pytest.mark.parametrize(("recorded", "given"), [
    ({**SMALL, "params": {"shape": [16, 8]}},
     "one for a grid of y=16, x=8 (the file's is y=8, x=8)"),
    ({**SMALL, "outputs": {}}, "one with the streams none (the file's are checkpoint)"),
    ({**SMALL, "outputs": {"other": {"every": 5, "fields": "all"}}},
     "one with the streams other (the file's are checkpoint)"),
])
def test_resume_of_a_file_whose_recorded_scenario_does_not_match_it_exits_2(
        in_tmp, capsys, recorded, given):
    """A recorded scenario whose grid or streams are not the file's: the resume restarted from
    step 0, dropped the captures on disk, failed with a raw ValueError (exit 1) at the final
    state's write and left the file running."""
    simkit.run({**SMALL, "steps": 10})
    with netCDF4.Dataset(in_tmp / "s.nc", "a") as ds:
        ds.setncattr("simkit_status", "interrupted")
        ds.setncattr("simkit_scenario", yaml.safe_dump(recorded))
    before = (in_tmp / "s.nc").read_bytes()
    assert main(["resume", "s.nc"]) == 2
    assert capsys.readouterr().err == (f"simkit: error: s.nc: simkit_scenario: expected the "
                                       f"scenario the run was made from, given {given}\n")
    assert (in_tmp / "s.nc").read_bytes() == before


@pytest.mark.parametrize("form", ["when", "while"])
def test_a_condition_naming_a_diagnostic_yaml_reads_as_a_boolean_hints_to_quote_it(
        in_tmp, capsys, form):
    (in_tmp / "s.yaml").write_text(
        "solver: heat2d\nsteps: 5\noutputs:\n"
        f"  s: {{every: 1, fields: [u], {form}: {{diagnostic: no, above: 1}}}}\n")
    assert main(["validate", "s.yaml"]) == 2
    assert capsys.readouterr().err == (
        f"simkit: error: s.yaml:4: outputs.s.{form}.diagnostic: expected a diagnostic name, "
        f"given False (YAML reads unquoted on, off, yes and no as true or false: quote such a "
        f"name)\n")


def test_a_run_file_that_is_a_directory_or_fifo_is_named_as_such(in_tmp, capsys):
    """They were said to be paths that do not exist."""
    import os

    (in_tmp / "d.nc").mkdir()
    os.mkfifo(in_tmp / "f.nc")
    for command in ("inspect", "watch", "stop", "recover"):
        for name, what in (("d.nc", "a directory"), ("f.nc", "a FIFO, device or socket"),
                           ("none.nc", "a path that does not exist")):
            assert main([command, name]) == 2
            assert capsys.readouterr().err == (f"simkit: error: {name}: expected an existing "
                                               f"NetCDF file written by simkit, given {what}\n")


def test_a_resumed_run_no_longer_shows_the_error_that_stopped_it(in_tmp, capsys):
    """A run stopped by an error (a full disk) and resumed to completion still said
    ``error: DiskFullError ...`` under ``status complete`` in inspect."""
    from simkit.io.inspect import describe

    simkit.run({**SMALL, "steps": 10})
    with netCDF4.Dataset(in_tmp / "s.nc", "a") as ds:
        ds.setncattr("simkit_status", "failed")
        ds.setncattr("simkit_error", "DiskFullError: disk full writing s.nc")
    assert main(["resume", "s.nc", "-q"]) == 0
    text = describe("s.nc")
    assert text.startswith("s.nc: heat2d on numpy (cpu, float64), status complete\nfinal state:")
    assert "DiskFullError" not in text
