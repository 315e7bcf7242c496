"""``simkit schema``: the JSON Schema of scenario files."""

from __future__ import annotations

from typing import Any

from simkit.scenario._model import Scenario
from simkit.solver import load_solver


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files, with each installed solver's params and initial."""
    from simkit.solver import available_solvers

    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "simkit scenario"
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
