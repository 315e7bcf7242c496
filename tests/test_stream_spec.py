"""The typed stream spec: Stream built in Python and from scenario data, its errors, its JSON
schema, and the registry it is made from."""

from __future__ import annotations

import jsonschema
import pytest

from simkit.errors import ScenarioError
from simkit.schedule import (
    KINDS,
    SCHEDULE_KEYS,
    VALID_FORMS,
    AnyOf,
    At,
    Every,
    Last,
    Stream,
    When,
    While,
    parse_schedule,
    parse_stream,
    schedule_json_schema,
    stream_json_schema,
)


def test_stream_in_python():
    stream = Stream(every=10, fields=["u"])
    assert stream.schedule == Every(10) and stream.fields == ("u",)
    assert stream.diagnostics is None and stream.stage is None
    hot = Stream(when=When("energy", above=0.5, cooldown=10), stage="laplacian")
    assert hot.schedule == When("energy", above=0.5, cooldown=10) and hot.stage == "laplacian"
    assert Stream(**{"while": While("e", below=0.0, every=2)}).schedule.level is not None
    assert Stream(every=5, last=True).schedule == AnyOf((Every(5), Last()))
    assert Stream(any=[Every(3), {"at": [2]}]).schedule == AnyOf((Every(3), At((2,))))
    assert Stream(at=At((4, 1))).schedule == At((1, 4))
    assert repr(Stream(every=10, fields=["u"])) == "Stream(every=10, fields=('u',))"


def test_a_union_keeps_the_order_its_keys_are_given_in():
    # Its members are numbered so in the state a checkpoint saves ("1.cooldown_until").
    data = {"when": {"diagnostic": "e", "above": 1.0}, "every": 10, "fields": ["u"]}
    expected = parse_schedule({k: v for k, v in data.items() if k != "fields"})
    assert expected.members[0] == When("e", above=1.0)
    assert parse_stream("s", data, "outputs.s").schedule == expected
    assert Stream(**data).schedule == expected
    assert Stream(**data).schedule.init_state().save() == {"0.cooldown_until": 0}


def test_a_stream_given_its_schedule():
    schedule = Every(5) | Last()
    assert Stream(schedule=schedule, fields=["u"]).schedule is schedule
    with pytest.raises(ScenarioError, match="expected a schedule or schedule keys, given both"):
        Stream(schedule=schedule, every=3)
    with pytest.raises(ScenarioError) as info:
        Stream(schedule={"every": 3})
    assert info.value.key == "stream.schedule"


def test_stream_is_frozen_and_equal_by_value():
    stream = Stream(every=10, fields=["u"])
    assert stream == Stream(every=10, fields=("u",)) and hash(stream) == hash(
        Stream(every=10, fields=("u",)))
    assert stream != Stream(every=11, fields=["u"])
    with pytest.raises(Exception, match="frozen"):
        stream.every = 3  # type: ignore[misc]


@pytest.mark.parametrize("data, key, fragment", [
    ({"every": 0}, "stream.every", "expected an integer >= 1, given 0"),
    ({"evry": 3}, "stream.evry", 'did you mean "every"'),
    ({"offset": 3}, "stream.offset", "only together with 'every'"),
    ({"when": {"diagnostic": "e"}}, "stream.when", "exactly one of 'above' or 'below'"),
    ({"while": {"diagnostic": "e", "above": 1}, "every": 2}, "stream", "alone in its stream"),
    ({"first": False}, "stream", "captures something"),
    ({"every": 1, "fields": [""]}, "stream.fields", "expected a list of field names, given ['']"),
    ({"every": 1, "diagnostics": [3]}, "stream.diagnostics", "expected a list of diagnostic"),
    ({"every": 1, "stage": ""}, "stream.stage", "expected a stage name, given ''"),
    ({"every": 1, "summaries": 42}, "stream.summaries",
     "expected a mapping of field names to summaries, given 42"),
])
def test_stream_in_python_says_what_is_wrong(data, key, fragment):
    with pytest.raises(ScenarioError) as info:
        Stream(**data)
    assert info.value.key == key and fragment in info.value.message


def test_parse_stream_reads_scenario_data():
    stream = parse_stream("hot", {"every": 3, "offset": 1, "last": True, "fields": "u",
                                  "diagnostics": ["e", "e"], "summaries": {"u": "mean"},
                                  "stage": "kick"}, "outputs.hot")
    assert stream.schedule == AnyOf((Every(3, 1), Last()))
    assert stream.fields == ("u",) and stream.diagnostics == ("e",)
    assert stream.summaries == {"u": "mean"} and stream.stage == "kick"
    assert parse_stream("a", {"at": [3]}, "outputs.a").fields is None


def test_parse_stream_uses_the_callers_name_check():
    def names(value, key, what):
        if value == "all":
            return ("u", "v")
        raise ScenarioError(f"no {what} {value!r}", key=key)

    assert parse_stream("a", {"at": [3], "fields": "all"}, "o.a", names=names).fields == ("u", "v")
    with pytest.raises(ScenarioError) as info:
        parse_stream("a", {"at": [3], "diagnostics": "x"}, "o.a", names=names)
    assert info.value.key == "o.a.diagnostics" and info.value.message == "no diagnostic 'x'"


@pytest.mark.parametrize("data, key, fragment", [
    (4, "outputs.s", "expected a mapping with a schedule and fields, given 4"),
    ({"every": 2, "fields": 3}, "outputs.s.fields", "expected a list of field names, given 3"),
    ({"every": 2, "diagnostics": [True]}, "outputs.s.diagnostics", "diagnostic names"),
    ({"every": 2, "stage": 5}, "outputs.s.stage", "expected a stage name, given 5"),
    ({"evry": 2, "fields": ["u"]}, "outputs.s.evry", 'did you mean "every"'),
    ({"fields": ["u"]}, "outputs.s", "every: N"),
    ({"any": [{"every": 2}, {"at": "x"}]}, "outputs.s.any[1].at", "non-empty list"),
    ({"when": {"diagnostic": "e", "above": 1, "cooldwn": 2}}, "outputs.s.when.cooldwn",
     'did you mean "cooldown"'),
    ({"while": {"diagnostic": "e", "above": 1, "every": 0}}, "outputs.s.while.every", ">= 1"),
])
def test_parse_stream_says_what_is_wrong(data, key, fragment):
    with pytest.raises(ScenarioError) as info:
        parse_stream("s", data, "outputs.s")
    assert info.value.key == key and fragment in info.value.message


def test_the_registry_makes_keys_forms_and_fields():
    assert list(KINDS)[:9] == ["every", "at", "logspace", "sim_time", "first", "last",
                               "wall_time", "when", "while"]
    assert SCHEDULE_KEYS[:3] == ("every", "offset", "at") and SCHEDULE_KEYS[-1] == "any"
    assert len(VALID_FORMS) == len(KINDS) + 1
    for key in SCHEDULE_KEYS:
        assert key in Stream.model_fields
    for kind in KINDS.values():
        assert kind.kind and kind.form.startswith(kind.kind + ":") and kind.value_schema


def _validator():
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "additionalProperties": stream_json_schema()}
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


@pytest.mark.parametrize("stream", [
    {"every": 10, "offset": 3, "fields": ["u"]},
    {"at": [1, 2], "diagnostics": "e"},
    {"logspace": {"start": 1, "stop": 100, "num": 3}},
    {"logspace": [1, 100, 3]},
    {"sim_time": 0.5, "start": 1.0, "stage": "kick"},
    {"first": True, "last": True, "wall_time": 30},
    {"when": {"diagnostic": "e", "above": 1, "cooldown": 3, "stage": "kick"}},
    {"while": {"diagnostic": "e", "below": 0, "every": 2}},
    {"any": [{"every": 2}, {"any": [{"at": [3]}]}], "summaries": {"u": ["mean"]}},
])
def test_json_schema_accepts_every_form(stream):
    assert not list(_validator().iter_errors({"s": stream}))
    parse_stream("s", stream, "outputs.s")


@pytest.mark.parametrize("stream", [
    {"evry": 10},
    {"offset": 3},
    {"start": 1.0},
    {"every": 0},
    {"at": []},
    {"logspace": {"start": 1, "stop": 100}},
    {"when": {"diagnostic": "e", "above": 1, "below": 2}},
    {"when": {"diagnostic": "e", "above": 1, "x": 2}},
    {"while": {"diagnostic": "e", "above": 1, "cooldown": 2}},
    {"any": [{"evry": 2}]},
    {"any": []},
    {},
])
def test_json_schema_refuses_what_parsing_refuses(stream):
    assert list(_validator().iter_errors({"s": stream}))
    with pytest.raises(ScenarioError):
        parse_stream("s", stream, "outputs.s")


def test_schedule_schema_is_closed():
    schema = schedule_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(SCHEDULE_KEYS)
    assert parse_schedule({"every": 2}) == Every(2)


def test_stream_names_are_kept_once_as_a_file_keeps_them():
    assert Stream(every=1, fields=["u", "v", "u"]).fields == ("u", "v")
    assert Stream(every=1, fields="u").fields == ("u",)
    assert Stream(every=1, fields="all", diagnostics="all").diagnostics == "all"
