"""Property tests: whatever document the loader is fed, it returns a valid plan or raises the
project's own ScenarioError, never anything else."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simkit.errors import ScenarioError
from simkit.scenario import RunPlan, Scenario, load_yaml, plan_run

KEYS = [*Scenario.model_fields, "every", "at", "fields", "diagnostics", "diffusivity", "shape",
        "kind", "when", "sim_time", "stage", "u", "snap", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["heat2d", "lorenz63", "numpy", "jax", "float32", "all", "u",
                                     "periodic", "fixed", "gaussian", "runs/x.nc"]))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6),
                                               children, max_size=5)),
    max_leaves=25)

VALID = {"solver": "heat2d", "params": {"shape": [8, 8]}, "steps": 5,
         "outputs": {"snap": {"every": 2, "fields": ["u"]}}}


def _mutations():
    paths = [("solver",), ("params",), ("params", "shape"), ("params", "diffusivity"), ("steps",),
             ("outputs",), ("outputs", "snap"), ("outputs", "snap", "every"),
             ("outputs", "snap", "fields"), ("dt",), ("backend",), ("until",), ("initial",)]
    return st.tuples(st.sampled_from(paths), documents)


def _check(data, tmp_path):
    try:
        plan = plan_run(data, overrides={"output": str(tmp_path / "o.nc")})
    except ScenarioError as error:
        assert "\n" not in str(error)
        assert error.message.startswith(("expected", "unknown"))
    else:
        assert isinstance(plan, RunPlan)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_random_documents_give_a_plan_or_a_scenario_error(tmp_path, document):
    _check(document if isinstance(document, dict) else {"solver": document}, tmp_path)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_mutations())
def test_mutated_valid_scenarios_give_a_plan_or_a_scenario_error(tmp_path, mutation):
    path, value = mutation
    data = yaml.safe_load(yaml.safe_dump(VALID))
    target = data
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    _check(data, tmp_path)


@given(st.text(max_size=200))
def test_random_text_parses_or_raises_scenario_error(text):
    try:
        load_yaml(text, "t.yaml")
    except ScenarioError as error:
        assert error.source == "t.yaml"
