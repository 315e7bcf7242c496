"""Scenarios: loading a YAML file safely, applying overrides, validating everything, and turning
it into a run plan before anything is computed or written.

Every mistake becomes one ``ScenarioError`` line naming the file, the line, the key path, what was
expected and what was given.
"""

from simkit.scenario._additions import MAX_ADDED_NAME_BYTES
from simkit.scenario._checks import MAX_NAME_BYTES, MAX_PATH_BYTES, check_not_input
from simkit.scenario._load import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    load_yaml,
    read_scenario_file,
)
from simkit.scenario._model import (
    MAX_SEED,
    TOP_LEVEL_KEYS,
    RunPlan,
    Scenario,
    SimkitWarning,
    StreamPlan,
    validate_model,
)
from simkit.scenario._overrides import apply_override
from simkit.scenario._plan import locate, plan_run
from simkit.scenario._python import streams_as_mappings
from simkit.scenario._schema import scenario_json_schema
from simkit.scenario._streams import (
    LARGE_STREAM_BYTES,
    MAX_CAPTURES,
    MAX_STREAM_NAME_BYTES,
    MAX_STREAMS,
)
from simkit.schedule import STREAM_KEYS

__all__ = [
    "LARGE_STREAM_BYTES",
    "MAX_ADDED_NAME_BYTES",
    "MAX_CAPTURES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NAME_BYTES",
    "MAX_NODES",
    "MAX_PATH_BYTES",
    "MAX_SEED",
    "MAX_STREAMS",
    "MAX_STREAM_NAME_BYTES",
    "STREAM_KEYS",
    "TOP_LEVEL_KEYS",
    "RunPlan",
    "Scenario",
    "SimkitWarning",
    "StreamPlan",
    "apply_override",
    "check_not_input",
    "load_yaml",
    "locate",
    "plan_run",
    "read_scenario_file",
    "scenario_json_schema",
    "streams_as_mappings",
    "validate_model",
]
