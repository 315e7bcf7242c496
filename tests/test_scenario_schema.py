"""``simkit schema`` describes every scenario form completely: the shipped scenarios validate
against it, and a misspelled key inside a stream, a condition or a gradient stream does not."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest

from simkit.scenario import load_yaml, scenario_json_schema
from simkit.schedule import KINDS

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _heat(**changes) -> dict:
    data, _ = load_yaml((ROOT / "scenarios/heat2d.yaml").read_text())
    data = copy.deepcopy(data)
    data.update(changes)
    return data


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_validates_against_the_schema(validator, path):
    data, _ = load_yaml(path.read_text())
    assert [e.message for e in validator.iter_errors(data)] == []


def test_outputs_are_described_completely(validator):
    outputs = validator.schema["properties"]["outputs"]
    assert outputs.get("additionalProperties") is not True
    assert "additionalProperties" in outputs


@pytest.mark.parametrize("stream", [
    {"every": 10, "fields": ["u"]},
    {"every": 10, "offset": 3, "fields": "all"},
    {"at": [2, 5, 8], "fields": "u"},
    {"logspace": {"start": 1, "stop": 1000, "num": 4}, "fields": ["u"]},
    {"logspace": [1, 1000, 4], "fields": ["u"]},
    {"sim_time": 0.5, "start": 0.1, "diagnostics": ["energy"]},
    {"first": True, "last": True, "fields": ["u"]},
    {"wall_time": 60, "fields": ["u"]},
    {"when": {"diagnostic": "energy", "above": 0.5, "cooldown": 10}, "fields": ["u"]},
    {"while": {"diagnostic": "energy", "below": 0.5, "every": 2}, "fields": ["u"]},
    {"any": [{"every": 5}, {"at": [3]}], "fields": ["u"]},
    {"every": 4, "stage": "laplacian", "fields": ["laplacian"]},
    {"every": 4, "diagnostics": ["energy"], "summaries": {"u": ["mean"]}},
], ids=lambda s: "+".join(k for k in s if k not in ("fields", "diagnostics")))
def test_every_stream_form_is_accepted(validator, stream):
    data = _heat(outputs={"s": stream})
    assert [e.message for e in validator.iter_errors(data)] == []


@pytest.mark.parametrize("stream", [
    {"evrey": 10, "fields": ["u"]},
    {"every": 10, "feilds": ["u"]},
    {"when": {"diagnostic": "energy", "abvoe": 0.5}, "fields": ["u"]},
    {"any": [{"every": 5}, {"at": [3], "fields": ["u"]}], "fields": ["u"]},
    {"every": "often", "fields": ["u"]},
    {"fields": ["u"]},
])
def test_a_misspelled_or_bad_stream_is_rejected(validator, stream):
    assert list(validator.iter_errors(_heat(outputs={"s": stream})))


def test_stop_when_and_gradients_are_described_too(validator):
    good = _heat(stop_when={"diagnostic": "energy", "below": 1e-6},
                 objective={"misfit": {"path": "obs.nc", "stream": "snapshots"}},
                 gradients={"adj": {"every": 10, "fields": ["u"]}})
    assert [e.message for e in validator.iter_errors(good)] == []
    assert list(validator.iter_errors(_heat(stop_when={"diagnostic": "energy", "bleow": 1})))
    assert list(validator.iter_errors(_heat(gradients={"adj": {"evrey": 10}})))


def test_every_registered_schedule_kind_is_a_stream_key(validator):
    stream = validator.schema["$defs"]["stream"]
    assert set(KINDS) | {"any"} <= set(stream["properties"])


def test_added_diagnostics_and_probes_are_described(validator):
    good = _heat(diagnostics={"spread": "probe_mod:spread",
                              "d": {"function": "probe_mod:d", "units": "K", "dims": ["y"]}},
                 probes={"lap2": {"stage": "laplacian", "function": "probe_mod:lap2"}})
    assert [e.message for e in validator.iter_errors(good)] == []
    for bad in ({"diagnostics": {"d": {"function": "probe_mod:d", "unit": "K"}}},
                {"diagnostics": {"d": "no_function_here"}},
                {"probes": {"p": {"function": "probe_mod:p"}}},
                {"probes": {"9p": {"stage": "laplacian", "function": "probe_mod:p"}}}):
        assert list(validator.iter_errors(_heat(**bad))), bad
