"""The README's solver example runs as written."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

import simkit

README = Path(__file__).parent.parent / "README.md"


def test_readme_solver_example_runs(in_tmp, monkeypatch):
    text = README.read_text()
    block = re.search(r"```python\n(import numpy as np\n.*?)```", text, re.S).group(1)
    (in_tmp / "mymodule.py").write_text(block)
    monkeypatch.syspath_prepend(str(in_tmp))
    sys.modules.pop("mymodule", None)
    result = simkit.run({"solver": "mymodule:Decay", "params": {"rate": 2.0}, "steps": 10,
                         "dt": 0.05, "outputs": {"s": {"every": 5, "diagnostics": ["total"]}},
                         "output": "decay.nc"})
    np.testing.assert_allclose(result.state["u"], np.full(16, 0.9**10), rtol=1e-14)
