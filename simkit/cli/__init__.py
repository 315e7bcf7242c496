"""The ``simkit`` command: run, resume, recover, inspect, list, validate, schema, plot, sweep.

Heavy libraries (xarray, JAX, PyTorch) are imported only inside the commands that need them.
"""

from __future__ import annotations

from simkit.cli._main import _COMMANDS as _COMMANDS
from simkit.cli._main import _interrupted as _interrupted
from simkit.cli._main import main as main
from simkit.cli._parser import _parser as _parser
from simkit.cli._progress import _MembersBar as _MembersBar
from simkit.cli._progress import _ProgressBar as _ProgressBar

__all__ = ["main"]
