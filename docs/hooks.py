"""Build-time pages of the documentation site (a MkDocs hook, see ``mkdocs.yml``).

The pages that describe what the code accepts are generated from the code when the site is
built, so they cannot drift from it:

- ``reference/cli.md``: every ``simkit`` command and option, read from the argparse parser;
- ``reference/scenario-format.md``: every scenario key, stream key and solver parameter, read
  from the JSON Schema that ``simkit schema`` prints;
- ``notebooks/*.ipynb``: the committed notebooks, rendered with their stored
  outputs by mkdocs-jupyter (never executed at build time); a notebook page that shows fewer
  figures than its notebook stores fails the build.

The page generators need only simkit: the tests import this file without MkDocs installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
Event = TypeVar("Event", bound=Callable[..., Any])


def _first(event: Event) -> Event:
    """Run ``event`` before the plugins' own (mkdocs-jupyter renders the .ipynb files it is
    given in its on_files, so the notebooks must be among them by then)."""
    from mkdocs.plugins import event_priority

    return event_priority(100)(event)


def _on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages and the notebooks to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/cli.md", content=cli_markdown()))
    files.append(File.generated(config, "reference/scenario-format.md",
                                content=scenario_markdown()))
    # Read in place (src_dir: the repository), so their pages are notebooks/NAME/.
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(File(f"notebooks/{notebook.name}", str(ROOT), config.site_dir,
                          config.use_directory_urls))
    return files


def on_page_content(html: str, page: Page, **kwargs: Any) -> str:
    """A tutorial's page shows every figure its notebook stores (inline PNG images)."""
    if page.file.src_uri.startswith("notebooks/") and page.file.src_uri.endswith(".ipynb"):
        stored = stored_figures(NOTEBOOKS / Path(page.file.src_uri).name)
        shown = html.count("data:image/png;base64,")
        if shown < stored:
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{page.file.src_uri}: expected its {stored} figures on the page, "
                              f"given {shown}")
    return html


def stored_figures(notebook: Path) -> int:
    """The PNG images among a notebook's stored outputs."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in output.get("data", {}) for cell in cells
               for output in cell.get("outputs", []))


if importlib.util.find_spec("mkdocs") is not None:  # the hook proper (tests import it without)
    on_files = _first(_on_files)


# --- the command line -------------------------------------------------------------------------

def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: no line breaks, no column separators,
    ``<name>`` placeholders shown rather than read as HTML tags and ``{...}`` mappings rather
    than read as attribute lists."""
    text = text.replace("<", "&lt;").replace(">", "&gt;").replace("{", "&#123;")
    return text.replace("|", "\\|").replace("\n", " ")


GLOBAL = {"-v", "-q", "--log-quiet", "--debug"}  # listed once, for the command line as a whole


def _option_rows(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()
                 ) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if skip.intersection(action.option_strings):
            continue
        if action.option_strings:
            name = ", ".join(f"`{flag}`" for flag in action.option_strings)
            if action.nargs != 0:
                name += f" `{action.metavar or action.dest.upper()}`"
        else:
            name = f"`{action.metavar or action.dest}`"
        meaning = action.help if action.help not in (None, argparse.SUPPRESS) else ""
        if action.choices:
            meaning += (" " if meaning else "") + "one of " + ", ".join(
                f"`{choice}`" for choice in action.choices)
        if action.required and action.option_strings:
            meaning += " (required)"
        rows.append(f"| {name} | {_cell(meaning)} |")
    return rows


def cli_markdown() -> str:
    """Every command of ``simkit``, with its usage and options, from the parser itself."""
    from simkit.cli._parser import _parser

    parser = _parser()
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    lines = ["# Command line", "",
             "Generated from the `simkit` command's own parser when this site is built.", "",
             "```text", parser.format_usage().strip(), "```", "",
             "The global options below may also come after the command (`simkit run s.yaml -q` "
             "is `simkit -q run s.yaml`); the commands' tables leave them out.", "",
             "| option | meaning |", "|---|---|", *_option_rows(parser), ""]
    lines += ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#simkit-{name}) | {_cell(helps.get(name) or '')} |"
              for name in commands.choices]
    for name, command in commands.choices.items():
        usage = command.format_usage().strip().removeprefix("usage: ")
        lines += ["", f"## simkit {name}", ""]
        description = command.description or helps.get(name) or ""
        lines += [description[:1].upper() + description[1:], ""] if description else []
        lines += ["```text", usage, "```", "", "| argument | meaning |", "|---|---|",
                  *_option_rows(command, frozenset(GLOBAL))]
    return "\n".join(lines) + "\n"


# --- the scenario format ----------------------------------------------------------------------

def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " or ".join(f"`{value}`" for value in schema["enum"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            kinds = [_type(option) for option in schema[key] if option.get("type") != "null"]
            return " or ".join(dict.fromkeys(kinds))
    kind = schema.get("type", "any")
    if kind == "array" and "items" in schema:
        return f"list of {_type(schema['items'])}"
    return str(kind)


def _default(schema: dict[str, Any]) -> str:
    if "default" not in schema or schema["default"] is None:
        return ""
    return f"`{json.dumps(schema['default'])}`"


def _key_rows(properties: dict[str, Any]) -> list[str]:
    return [f"| `{key}` | {_cell(_type(value))} | {_default(value)} | "
            f"{_cell(value.get('description', ''))} |" for key, value in properties.items()]


def _solver_params(schema: dict[str, Any]) -> list[str]:
    lines = []
    for rule in schema.get("allOf", []):
        solver = rule.get("if", {}).get("properties", {}).get("solver", {}).get("const")
        then = rule.get("then", {}).get("properties", {})
        if solver is None:
            continue
        lines += ["", f"### {solver}", ""]
        for part in ("params", "initial"):
            if part not in then:
                continue
            body = then[part]
            options = body.get("oneOf") or body.get("anyOf") or [body]
            for option in options:
                properties = option.get("properties", {})
                if not properties:
                    continue
                kind = properties.get("kind", {}).get("const")
                title = f"`{part}`" + (f" with `kind: {kind}`" if kind else "")
                lines += [f"{title}:", "", "| key | type | default | meaning |",
                          "|---|---|---|---|", *_key_rows(properties), ""]
    return lines


def scenario_markdown() -> str:
    """The scenario file's keys, a stream's keys and each solver's parameters, from the schema."""
    from simkit.scenario import scenario_json_schema

    schema = scenario_json_schema()
    stream = schema["$defs"]["stream"]
    lines = ["# Scenario format", "",
             "Generated from the JSON Schema that `simkit schema` prints, when this site is "
             "built. `simkit schema > simkit.schema.json` gives the same schema to an editor "
             "(completion, misspelled keys flagged); `simkit validate FILE` checks a file "
             "whole, including what a schema cannot say (stability limits, names of fields "
             "and diagnostics).", "",
             "## Top-level keys", "",
             f"Required: {', '.join(f'`{key}`' for key in schema.get('required', []))}.", "",
             "| key | type | default | meaning |", "|---|---|---|---|",
             *_key_rows(schema["properties"]), "",
             "## A stream", "",
             "Each entry of `outputs` and `gradients` is a stream: a schedule (several schedule "
             "keys make a union) and what it keeps. The schedules are explained in "
             "[Schedules](schedules.md).", "",
             "| key | type | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {_cell(_type(value))} | {_cell(value.get('description', ''))} |"
              for key, value in stream.get("properties", {}).items()]
    lines += ["", "## Solver parameters",
              "", "The `params` and `initial` keys each shipped solver takes."]
    lines += _solver_params(schema)
    return "\n".join(lines) + "\n"
