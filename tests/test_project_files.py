"""The habits of the project: one version, its licence file, a changelog, pre-commit hooks."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml

import simkit

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_written_once_and_every_reader_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "simkit._version.__version__"}
    assert importlib.metadata.version("simkit") == simkit.__version__
    done = subprocess.run([sys.executable, "-m", "simkit", "--version"], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == f"simkit {simkit.__version__}"


def test_licence_file_is_the_licence_the_metadata_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "simkit developers" in text


def test_changelog_keeps_an_unreleased_section_first():
    text = (ROOT / "CHANGELOG.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## [Unreleased]"


def test_pre_commit_runs_ruff_import_linter_and_mypy_from_the_environment():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}
    assert set(hooks) == {"ruff", "lint-imports", "mypy"}
    for entry in hooks.values():
        assert (ROOT / entry.split()[0]).name in {"ruff", "lint-imports", "mypy"}
