"""The README's scenario reference says what the code accepts: its example scenario validates,
and ``stop_when`` is documented with every key its parser takes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from simkit.scenario import plan_run
from simkit.schedule import When

README = Path(__file__).resolve().parents[1] / "README.md"


def _scenarios_section() -> str:
    text = README.read_text()
    return text[text.index("## Scenarios"):text.index("## Output files")]


def test_readme_documents_stop_when_with_the_keys_it_takes(in_tmp):
    section = _scenarios_section()
    found = re.search(r"\*\*Ending early: `stop_when`\.\*\*(.*?)\n\n", section, re.S)
    assert found, "no stop_when paragraph in the README's scenario reference"
    paragraph = found.group(1)
    keys = When.keys  # stop_when is parsed as a `when` condition
    assert [k for k in keys if f"`{k}" not in paragraph] == []
    example = re.search(r"```yaml\n(solver:.*?)```", section, re.S).group(1)
    data = yaml.safe_load(example)
    assert "stop_when" in data
    data.update(params={**data["params"], "shape": [16, 16]}, output="out.nc")
    plan = plan_run(data)
    assert (plan.stop_when.diagnostic, plan.stop_when.below) == (data["stop_when"]["diagnostic"],
                                                                 data["stop_when"]["below"])
