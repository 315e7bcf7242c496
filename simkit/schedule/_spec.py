"""The typed stream spec: what a stream of a run captures and on which schedule.

``Stream`` is a frozen pydantic model with one optional field per schedule key, made from the
registry of kinds (a new kind adds its key here by being defined), and the stream's own keys:
``Stream(every=10, fields=["u"])``, ``Stream(when=When("energy", above=0.5, cooldown=10),
stage="laplacian")``. ``parse_stream`` builds one from scenario data with the errors scenario
files get; ``stream_json_schema`` describes every form it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from simkit.errors import ScenarioError
from simkit.schedule._base import KINDS, AbstractSchedule
from simkit.schedule._parse import ANY_FORM, SCHEDULE_KEYS, parse_schedule

#: Keys of a stream besides its schedule.
STREAM_KEYS = ("fields", "diagnostics", "stage", "summaries")

#: How a caller checks a list of names: ``names(value, key, what)`` gives the names or raises.
NameCheck = Callable[[Any, str, str], tuple[str, ...]]

#: The key path errors of the stream being built are said of.
_KEY: ContextVar[str] = ContextVar("_KEY", default="stream")

_NAMES_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                           {"type": "string"}]}


def _schedule_fields() -> dict[str, Any]:
    """One optional field per schedule key of the registry (and ``any``)."""
    found: dict[str, Any] = {}
    for kind in KINDS.values():
        found[kind.kind] = (Any, Field(None, json_schema_extra=dict(kind.value_schema)))
        for name, schema in kind.modifiers.items():
            found[name] = (Any, Field(None, json_schema_extra=dict(schema)))
    found["any"] = (Any, Field(None))
    return found


if TYPE_CHECKING:
    _Schedules = BaseModel
else:
    _Schedules = create_model("_Schedules", __config__=ConfigDict(frozen=True, extra="forbid"),
                              **_schedule_fields())


class Stream(_Schedules):
    """One stream: the schedule keys of a scenario's stream (``every``, ``at``, ``when``, ...,
    as in ``simkit.schedule.VALID_FORMS``) and the values it keeps.

    ``fields`` and ``diagnostics`` are None where not given (a run then keeps every field), a
    tuple of names, or ``"all"`` as a file may say;
    ``summaries`` stay as given, a mapping (``simkit.solver`` reads them). Names, the stage and
    the summaries are checked as a scenario file's are.

    Raises:
        ScenarioError: for a schedule that is not one (key path ``stream``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    fields: tuple[str, ...] | Literal["all"] | None = None
    diagnostics: tuple[str, ...] | Literal["all"] | None = None
    stage: str | None = None
    summaries: Any = None
    #: The schedule its keys make (or given as it is, instead of keys).
    schedule: AbstractSchedule = Field(default=None, repr=False)  # type: ignore[assignment]

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise _scenario_error(error) from None

    @model_validator(mode="before")
    @classmethod
    def _build(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        key = _KEY.get()
        # In the order given: a union's members are numbered so in its saved state.
        spec = {k: v for k, v in data.items() if k not in cls.model_fields or k in SCHEDULE_KEYS}
        data = _own_keys(data, key)
        if "schedule" in data:
            if spec:
                raise ScenarioError(f"expected a schedule or schedule keys, given both: "
                                    f"{', '.join(map(str, spec))}", key=key)
            if not isinstance(data["schedule"], AbstractSchedule):
                raise ScenarioError(f"expected a schedule, given {data['schedule']!r}",
                                    key=f"{key}.schedule")
            return data
        return {**data, "schedule": parse_schedule(spec, key)}

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if k in self.model_fields_set]

    def __hash__(self) -> int:
        return hash((self.schedule, self.fields, self.diagnostics, self.stage))


def _own_keys(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``data`` with the stream's own keys checked as a scenario file's are: a name, a list of
    names (duplicates dropped) or ``"all"``, a stage name, a mapping of summaries.

    Raises:
        ScenarioError: naming the key, what was expected and what was given.
    """
    checked = dict(data)
    for item in ("fields", "diagnostics"):
        if checked.get(item) is not None and checked[item] != "all":
            checked[item] = check_names(checked[item], f"{key}.{item}", item.removesuffix("s"))
    stage = checked.get("stage")
    if stage is not None and (not isinstance(stage, str) or not stage):
        raise ScenarioError(f"expected a stage name, given {stage!r}", key=f"{key}.stage")
    summaries = checked.get("summaries")
    if summaries is not None and not isinstance(summaries, Mapping):
        raise ScenarioError(f"expected a mapping of field names to summaries, given "
                            f"{summaries!r}", key=f"{key}.summaries")
    return checked


def _scenario_error(error: ValidationError) -> Exception:
    """The ScenarioError a validator raised inside pydantic, else a ScenarioError that says
    which key was wrong."""
    for detail in error.errors():
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, ScenarioError):
            return cause
    detail = error.errors()[0]
    where = ".".join(str(part) for part in detail["loc"])
    return ScenarioError(f"{detail['msg']}, given {detail.get('input')!r}",
                         key=f"stream.{where}" if where else "stream")


def check_names(value: Any, key: str, what: str) -> tuple[str, ...]:
    """A name or a list of names (duplicates dropped, order kept).

    Raises:
        ScenarioError: for anything else.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ScenarioError(f"expected a list of {what} names, given {value!r}", key=key)
    return tuple(dict.fromkeys(value))


def parse_stream(name: str, data: Any, key: str, *, names: NameCheck = check_names) -> Stream:
    """A stream from scenario data ``data`` at ``key`` (``outputs.<name>``): its schedule keys
    make its schedule, its own keys (``STREAM_KEYS``) what it keeps.

    Args:
        name: the stream's name (checked by the caller: what a name may be differs).
        names: checks ``fields`` and ``diagnostics`` (``names(value, key, "field")``); the
            caller's own, which may check them against what its solver or loop has.

    Raises:
        ScenarioError: naming the key path, what was expected and what was given.
    """
    if not isinstance(data, Mapping):
        raise ScenarioError(f"expected a mapping with a schedule and fields, given {data!r}",
                            key=key)
    given: dict[str, Any] = {}
    for item in ("fields", "diagnostics"):
        if item in data:
            given[item] = names(data[item], f"{key}.{item}", item.removesuffix("s"))
    if "summaries" in data:
        given["summaries"] = data["summaries"]
    if data.get("stage") is not None:
        given["stage"] = data["stage"]
    schedule = {k: v for k, v in data.items() if k not in STREAM_KEYS}
    token = _KEY.set(key)
    try:
        return Stream(**given, **schedule)
    finally:
        _KEY.reset(token)


def schedule_json_schema() -> dict[str, Any]:
    """The JSON schema of a schedule mapping (``{every: 10, last: true}``, ``{any: [...]}``)."""
    properties: dict[str, Any] = {}
    depends: dict[str, list[str]] = {}
    for kind in KINDS.values():
        properties[kind.kind] = {**kind.value_schema, "description": kind.form}
        for modifier, schema in kind.modifiers.items():
            properties[modifier] = {**schema, "description": f"with {kind.kind!r}"}
            depends[modifier] = [kind.kind]
    properties["any"] = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/schedule"},
                         "description": ANY_FORM}
    # At least one schedule key (a modifier alone is refused by ``dependentRequired``).
    some = [{"required": [name]} for name in (*KINDS, "any")]
    return {"type": "object", "properties": properties, "dependentRequired": depends,
            "anyOf": some, "additionalProperties": False}


def stream_json_schema(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON schema of one stream: its schedule keys and the values it keeps (``extra``: the
    schemas of a caller's own keys). A schedule inside ``any`` is ``$defs.schedule``, resolved
    within the stream's own ``$id`` wherever the stream's schema is placed."""
    schedule = schedule_json_schema()
    own = {
        "fields": {**_NAMES_SCHEMA, "description": "fields (or a stage's probes) to keep, "
                                                   "or 'all'"},
        "diagnostics": {**_NAMES_SCHEMA, "description": "diagnostics to keep"},
        "stage": {"type": "string", "minLength": 1,
                  "description": "capture the state right after this stage of the step"},
        "summaries": {"type": "object", "minProperties": 1,
                      "description": "reductions of fields kept as diagnostics: {field: [mean, "
                                     "std, ...]} (simkit.solver reads them)"},
    }
    return {"$id": "urn:simkit:stream", "type": "object",
            "properties": {**schedule["properties"], **own, **(extra or {})},
            "dependentRequired": schedule["dependentRequired"], "anyOf": schedule["anyOf"],
            "additionalProperties": False,
            "$defs": {"schedule": schedule}}
