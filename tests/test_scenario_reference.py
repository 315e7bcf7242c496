"""The scenario documentation says what the code accepts: the README's example scenario
validates, and the conditional-captures guide documents ``stop_when`` with every key its parser
takes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from simkit.scenario import plan_run
from simkit.schedule import When

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guides" / "conditional-captures.md"


def test_guide_documents_stop_when_with_the_keys_it_takes():
    found = re.search(r"- \*\*`stop_when`\*\* (.*?)\n- ", GUIDE.read_text(), re.S)
    assert found, "no stop_when item in the conditional-captures guide"
    paragraph = found.group(1)
    keys = When.keys  # stop_when is parsed as a `when` condition
    assert [k for k in keys if f"`{k}" not in paragraph] == []


def test_readme_example_scenario_validates_with_its_stop_when(in_tmp):
    example = re.search(r"```yaml\n(solver:.*?)```", (ROOT / "README.md").read_text(), re.S)
    data = yaml.safe_load(example.group(1))
    assert "stop_when" in data
    data.update(params={**data["params"], "shape": [16, 16]}, output="out.nc")
    plan = plan_run(data)
    assert (plan.stop_when.diagnostic, plan.stop_when.below) == (data["stop_when"]["diagnostic"],
                                                                 data["stop_when"]["below"])
    assert set(plan.scenario.outputs) == {"snapshots", "early", "mid_step", "cooled",
                                          "diagnostics"}
