"""Reading scenario YAML safely, with the line of every key path (for error messages)."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from simkit.errors import ScenarioError

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
#: Deeper YAML is refused before anything recurses into it (no scenario needs more than a few).
MAX_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader; keys are checked for duplicates while lines are recorded."""


# YAML 1.1 reads `1e-3` (no dot) as a string; YAML 1.2 and every user read it as a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


#: Tags YAML 1.1 gives plain words and numbers. A mapping key is a name: read as its text, as
#: YAML 1.2 reads `on`, `off`, `yes` and `no` (a stream named `on` is not `True`).
#: Where a value is in the scenario: mapping keys and list indices (``("outputs", "snap")``).
KeyPath = tuple[Any, ...]

_TEXT_KEY_TAGS = frozenset(f"tag:yaml.org,2002:{kind}"
                           for kind in ("bool", "null", "int", "float", "timestamp"))


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], budget: list[int],
          source: str | None) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ScenarioError(f"expected at most {MAX_NODES} YAML nodes (aliases expanded), given "
                            "more (an alias bomb?)", source=source, line=node.start_mark.line + 1)
    if len(path) > MAX_DEPTH:
        raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given more",
                            source=source, line=node.start_mark.line + 1)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if isinstance(key_node, yaml.ScalarNode) and key_node.style is None \
                    and key_node.tag in _TEXT_KEY_TAGS:
                key_node.tag = "tag:yaml.org,2002:str"
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise ScenarioError(f"expected each key once, given {key!r} again (first on line "
                                    f"{seen[key]})", source=source, key=dotted, line=line)
            seen[key] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, budget, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, budget, source)


def load_yaml(text: str, source: str | None = None) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML safely; returns the data and the line of each key path. Plain mapping keys are
    read as their text (`on:` is the name "on"); values as PyYAML reads them (`yes` is true)."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[KeyPath, int] = {}
        _walk(node, (), lines, [MAX_NODES], source)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(str(p) for p in (error.context, error.problem) if p)
        raise ScenarioError(f"expected valid YAML, given a syntax error: {problem}",
                            source=source, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"expected valid YAML, given: {error}", source=source) from None
    except RecursionError:
        # PyYAML composes nested collections recursively, before _walk can count the depth.
        raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given far more",
                            source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_scenario_file(path: str | os.PathLike[str]) -> tuple[str, Any, dict[KeyPath, int]]:
    """Read and parse a scenario file; returns text, data and key-path lines."""
    source = str(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"expected a scenario file of at most {MAX_FILE_BYTES} bytes, "
                                f"given {size} bytes", source=source)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ScenarioError("expected an existing scenario file, given a path that does not "
                            "exist", source=source) from None
    except IsADirectoryError:
        raise ScenarioError("expected a scenario file, given a directory", source=source) from None
    except UnicodeDecodeError as error:
        raise ScenarioError(f"expected UTF-8 text, given undecodable bytes at offset "
                            f"{error.start}", source=source) from None
    except OSError as error:
        raise ScenarioError(f"expected a readable file, given: {error.strerror}",
                            source=source) from None
    data, lines = load_yaml(text, source)
    return text, data, lines
