"""The documentation's code runs as written.

Every fenced block of ``docs/**/*.md`` and ``README.md``, in the order a reader meets it, runs
in a fresh directory holding a copy of ``scenarios/``, one directory per page:

- ``python`` blocks run in one namespace per page (a later block uses what an earlier one
  made); a block titled ``title="NAME.py"`` is written to that file instead (a module the page's
  later blocks import);
- ``bash`` blocks run in ``bash -e`` with the environment's ``simkit`` on the PATH (each line a
  ``simkit`` command);
- ``yaml`` blocks that are whole scenarios (they start with ``solver:``) are validated; one
  titled ``title="NAME.yaml"`` is written to that file (a later block runs it).

A block the tests cannot run (a GPU, a cluster, a command that follows a running run) says so
in an HTML comment on the line before it: ``<!-- not run: why -->``. Any other block that is
neither run nor marked fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: [^>]+-->\s*$")
TITLE = re.compile(r'title="(?P<name>[\w.]+)"')
SHOWN_ONLY = {"text", "toml", ""}  # output, file trees and configuration for other tools
BIN = Path(sys.executable).parent


def blocks(page: Path) -> list[tuple[str, str, str, bool]]:
    """(language, attributes, body, marked not run) of each fenced block of a page; a body
    starts with as many empty lines as the page has before it, so tracebacks name the page's
    own line numbers."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        offset = "\n" * (text.count("\n", 0, match.start()) + 1)
        found.append((match["lang"], match["attrs"], offset + match["body"],
                      bool(NOT_RUN.search(before))))
    return found


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [page for page in PAGES if any(not skipped and lang not in SHOWN_ONLY
                                          for lang, _, _, skipped in blocks(page))]


def _run_bash(body: str, page: Path, cwd: Path) -> None:
    script = body.replace(".venv/bin/simkit", "simkit")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{_page_id(page)}:\n{script}\n{done.stdout}\n{done.stderr}"


def _validate_yaml(body: str, page: Path) -> None:
    from simkit.scenario import plan_run

    data = yaml.safe_load(body)
    if not (isinstance(data, dict) and "solver" in data):
        return  # a fragment of a scenario or another file (a sweep): shown, not run alone
    plan_run({**data, "output": "validated.nc"})


@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_page_code_runs_as_written(page, in_tmp, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shutil.copytree(ROOT / "scenarios", in_tmp / "scenarios")
    monkeypatch.syspath_prepend(str(in_tmp))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for lang, attrs, body, skipped in blocks(page):
            if skipped or lang in SHOWN_ONLY:
                continue
            if lang in ("python", "yaml") and (title := TITLE.search(attrs)):
                (in_tmp / title["name"]).write_text(body.lstrip("\n"))
                sys.modules.pop(title["name"].removesuffix(".py"), None)
            elif lang == "python":
                exec(compile(body, str(page), "exec"), namespace)  # noqa: S102 - the page's code
            elif lang == "bash":
                _run_bash(body, page, in_tmp)
            elif lang == "yaml":
                _validate_yaml(body, page)
            else:
                pytest.fail(f"{_page_id(page)}: a ```{lang} block is neither run nor marked "
                            "<!-- not run: why -->")
    finally:
        plt.close("all")
        for name in [path.stem for path in in_tmp.glob("*.py")]:
            sys.modules.pop(name, None)


def test_every_page_with_code_is_tested_and_markers_give_a_reason():
    langs = {lang for page in PAGES for lang, _, _, skipped in blocks(page) if not skipped}
    assert langs <= SHOWN_ONLY | {"python", "bash", "yaml"}, langs
    for page in PAGES:
        for line in page.read_text().splitlines():
            if "<!-- not run" in line:
                assert NOT_RUN.search(line), f"{_page_id(page)}: {line!r} gives no reason"
    # The guides with the most code are among the pages run.
    assert {"write-a-solver.md", "record-a-loop.md", "resume.md", "gradients.md",
            "README.md"} <= {page.name for page in RUNNABLE}


def test_readme_is_short_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "make run    # set up .venv" in text and "make test   # set up .venv" in text


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def entries(nav):
        for item in nav:
            if isinstance(item, dict):
                for value in item.values():
                    yield from entries(value) if isinstance(value, list) else [value]
            else:
                yield item

    listed = list(entries(config["nav"]))
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"
    nav = set(listed)
    generated = {"reference/cli.md", "reference/scenario-format.md"}
    notebooks = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert nav == pages | generated | notebooks


def test_generated_reference_pages_name_every_command_and_scenario_key():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    import argparse

    from simkit.cli._parser import _parser

    cli = hooks.cli_markdown()
    commands = next(action.choices for action in _parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert {"run", "resume", "recover", "validate", "schema", "plot", "watch", "stop", "sweep",
            "inspect", "export", "tensorboard", "list"} <= set(commands)
    for name, command in commands.items():
        assert f"\n## simkit {name}\n" in cli
        for action in command._actions:  # every option of every command, by its flags
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert ", ".join(f"`{flag}`" for flag in action.option_strings) in cli
    assert "| `--overwrite` | replace an existing output file |" in cli
    assert "| `--backend` `BACKEND` | one of `numpy`, `jax`, `torch` |" in cli

    from simkit.scenario import scenario_json_schema

    scenario = hooks.scenario_markdown()
    for key in scenario_json_schema()["properties"]:
        assert f"| `{key}` |" in scenario
    assert "### heat2d" in scenario and "| `diffusivity` | number | `1.0` |" in scenario
