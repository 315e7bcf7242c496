"""``simkit schema``: the JSON Schema of scenario files."""

from __future__ import annotations

from typing import Any

from simkit.scenario._additions import MAX_ADDED_NAME_BYTES
from simkit.scenario._model import Scenario
from simkit.scenario._streams import _STREAM_NAME, MAX_STREAM_NAME_BYTES
from simkit.schedule import schedule_json_schema, stream_json_schema
from simkit.solver import load_solver
from simkit.solver._registry import _IMPORT_PATH
from simkit.solver._summaries import SCALAR_KINDS

#: What names a stream (a group of the run file).
_STREAM_NAMES = {"pattern": _STREAM_NAME.pattern, "maxLength": MAX_STREAM_NAME_BYTES}


#: One summary of a field: a reduction's name, or quantiles or a histogram with their settings.
_SUMMARY: dict[str, Any] = {"oneOf": [
    {"enum": list(SCALAR_KINDS)},
    {"type": "object", "properties": {"quantiles": {"type": "array", "minItems": 1,
                                                    "items": {"type": "number"}}},
     "required": ["quantiles"], "additionalProperties": False},
    {"type": "object", "additionalProperties": False, "required": ["histogram"],
     "properties": {"histogram": {
         "type": "object", "required": ["bins"], "additionalProperties": False,
         "properties": {"bins": {"type": "integer", "minimum": 1},
                        "range": {"type": "array", "items": {"type": "number"},
                                  "minItems": 2, "maxItems": 2}}}}},
]}
_SUMMARIES: dict[str, Any] = {
    "type": "object", "minProperties": 1,
    "additionalProperties": {"anyOf": [_SUMMARY, {"type": "array", "items": _SUMMARY}]},
    "description": "reductions of fields kept as diagnostics: {field: [mean, std, "
                   "{quantiles: [0.1, 0.9]}, {histogram: {bins: 32, range: [0, 1]}}]}"}


#: A diagnostic or probe added by reference (``module:function``) and how the file describes it.
_ADDED: dict[str, Any] = {
    "function": {"type": "string", "pattern": _IMPORT_PATH.pattern,
                 "description": "module:function computing it from the state"},
    "units": {"type": "string"}, "long_name": {"type": "string"},
    "dims": {"type": "array", "items": {"type": "string"},
             "description": "its dimensions among the solver's coordinates"},
}


def _additions(schema: dict[str, Any]) -> None:
    """``diagnostics`` and ``probes`` added by reference, closed as ``_additions`` reads them."""
    properties = schema["properties"]
    names = {"pattern": _STREAM_NAME.pattern, "maxLength": MAX_ADDED_NAME_BYTES}
    diagnostic = {"type": "object", "properties": _ADDED, "required": ["function"],
                  "additionalProperties": False}
    probe = {"type": "object", "properties": {**_ADDED, "stage": {
        "type": "string", "description": "the stage of the step after which it is computed"}},
             "required": ["function", "stage"], "additionalProperties": False}
    properties["diagnostics"].update(
        propertyNames=names, additionalProperties={"anyOf": [_ADDED["function"], diagnostic]})
    properties["probes"].update(propertyNames=names, additionalProperties=probe)


def _streams(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """Streams by name, each as ``schema`` says."""
    return {"type": "object", "propertyNames": _STREAM_NAMES, "additionalProperties": schema,
            "description": description}


def _gradient_stream(schedule: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """An adjoint stream: a schedule (its unions' members are ``#/$defs/schedule``) and the
    fields whose adjoints it keeps."""
    return {"type": "object",
            "properties": {**schedule["properties"],
                           "fields": {**fields, "description": "fields whose adjoints it keeps "
                                                               "(default: all)"}},
            "dependentRequired": schedule["dependentRequired"], "anyOf": schedule["anyOf"],
            "additionalProperties": False}


def _describe_streams(schema: dict[str, Any]) -> None:
    """``outputs``, ``gradients`` and ``stop_when`` as the schedule spec reads them (every stream
    form, closed: a misspelled key is refused)."""
    properties = schema["properties"]
    schedule = schedule_json_schema()
    stream = stream_json_schema(extra={"summaries": _SUMMARIES})
    schema.setdefault("$defs", {}).update(schedule=schedule, stream=stream)
    outputs = properties["outputs"]
    outputs.update(_streams({"$ref": "#/$defs/stream"}, "output streams: {name: {<schedule>, "
                            "fields, diagnostics, stage, summaries}}"))
    gradients = properties["gradients"]
    gradient = _gradient_stream(schedule, stream["properties"]["fields"])
    gradients["anyOf"] = [_streams(gradient, gradients.get("description", "")), {"type": "null"}]
    stop_when = properties["stop_when"]
    stop_when["anyOf"] = [schedule["properties"]["when"], {"type": "null"}]


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files, with each installed solver's params and initial."""
    from simkit.solver import available_solvers

    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "simkit scenario"
    _describe_streams(schema)
    _additions(schema)
    branches = []
    for name in available_solvers():
        try:
            cls = load_solver(name)
        except Exception:  # noqa: BLE001 - a broken third-party solver must not hide the rest
            continue
        branches.append({
            "if": {"properties": {"solver": {"const": name}}},
            "then": {"properties": {"params": cls.Params.model_json_schema(),
                                    "initial": cls.Initial.model_json_schema()}},
        })
    schema["properties"]["solver"]["examples"] = available_solvers()
    schema["allOf"] = branches
    return schema
