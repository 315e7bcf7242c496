"""A run plan gives the facts derived from its solver once: names, sizes, shapes, checkpoints."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from conftest import heat_scenario
from simkit.errors import ScenarioError
from simkit.scenario import check_not_input, plan_run


def _plan():
    return plan_run(heat_scenario(outputs={
        "full": {"every": 3},
        "named": {"at": [2, 5], "fields": ["u"], "diagnostics": ["energy"]},
        "staged": {"every": 4, "stage": "laplacian", "fields": ["u", "laplacian"]},
        "diag": {"every": 1, "diagnostics": ["energy", "max_abs"]},
    }))


def test_run_plan_names_sizes_and_shapes(in_tmp):
    plan = _plan()
    assert plan.field_names == ("u",)
    assert plan.probe_names == ("laplacian",)
    assert {"energy", "heat", "max_abs"} <= set(plan.diagnostic_names)
    assert dict(plan.sizes) == {"y": 24, "x": 20}
    assert plan.dims["u"] == plan.dims["laplacian"] == ("y", "x")
    assert plan.shapes["u"] == plan.shapes["laplacian"] == (24, 20)
    assert plan.shapes["energy"] == ()
    assert set(plan.shapes) == {*plan.field_names, *plan.probe_names, *plan.diagnostic_names}


def test_run_plan_checkpoints_are_full_states_at_the_end_of_a_step(in_tmp):
    plan = _plan()
    # A stream after a stage holds mid-step states; a stream without every field is no state.
    assert plan.checkpoints == {"full", "named"}
    assert [plan.is_checkpoint(s) for s in plan.streams] == [True, True, False, False]


def test_derived_facts_survive_copies_and_pickling(in_tmp):
    plan = _plan()
    assert plan.checkpoints and plan.shapes  # computed, kept in the plan
    again = pickle.loads(pickle.dumps(dataclasses.replace(plan, overwrite=True)))
    assert again.checkpoints == plan.checkpoints
    assert again.shapes == plan.shapes


def test_check_not_input_refuses_an_output_that_is_an_input(tmp_path):
    observed = tmp_path / "obs.nc"
    observed.write_bytes(b"")
    (tmp_path / "link.nc").symlink_to(observed)
    inputs = {"observations file": str(observed)}
    check_not_input(tmp_path / "new.nc", inputs)  # nothing there: none of them
    with pytest.raises(ScenarioError, match=r"^output: expected an output other than the run's "
                                            r"inputs, given 'link.nc', which is the observations "
                                            r"file$"):
        check_not_input(tmp_path / "link.nc", inputs, given="link.nc")
