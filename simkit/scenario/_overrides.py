"""Overrides: ``--set KEY.PATH=VALUE`` from the command line and keyword overrides from Python."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from simkit.errors import ScenarioError
from simkit.scenario._load import _Loader, load_yaml

#: Integers that YAML 1.1 reads differently from how they look: `010` as octal (8), `1:20` in
#: base 60 (80).
_SURPRISING_INT = re.compile(r"^[-+]?(?:0[0-9_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+)$")


def _check_override_integers(raw: str, source: str, key: str) -> None:
    """Refuse a ``--set`` integer that YAML 1.1 would silently read as another number."""
    try:
        root = yaml.compose(raw, Loader=_Loader)
    except yaml.YAMLError:
        return  # load_yaml reports it
    nodes = [root] if root is not None else []
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            nodes.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            nodes.extend(node.value)
        elif node.tag == "tag:yaml.org,2002:int" and _SURPRISING_INT.match(node.value):
            read = yaml.safe_load(node.value)
            how = "base 60" if ":" in node.value else "octal"
            raise ScenarioError(f"expected a decimal integer without leading zeros, given "
                                f"{node.value!r}, which YAML 1.1 reads as {read} ({how}); write "
                                f"the number you mean in plain decimal", source=source, key=key)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``KEY.PATH=VALUE`` (VALUE parsed as YAML) to ``data`` in place."""
    source = f"--set {assignment}"
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"expected KEY=VALUE, given {assignment!r}", source="--set")
    parts = key.strip().split(".")
    _check_override_integers(raw, source, key.strip())
    value, _ = load_yaml(raw, source)
    target = data
    for depth, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ScenarioError(f"expected a mapping to set {parts[depth + 1]!r} in, given "
                                f"{child!r}", source=source, key=".".join(parts[: depth + 1]))
        target = child
    target[parts[-1]] = value


def _plain(value: Any) -> Any:
    """Python data from Python-side input: NumPy scalars become int/float/bool, tuples lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def merge_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Deep-merge Python keyword overrides into ``data`` in place."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            merge_overrides(data[key], value)
        else:
            data[key] = _plain(value)
