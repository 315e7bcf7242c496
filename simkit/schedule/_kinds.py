"""The schedule kinds, each registered under its scenario key when its class is defined.

A new kind is one class here: it declares its key, its form, the JSON schema of its value,
how it is built from scenario data (``from_spec``, validating itself when built) and when it
fires; parsing, the typed stream spec, its JSON schema and the capture engine take it from the
registry.
"""

from __future__ import annotations

from simkit.schedule._conditions import WallTime, When, While
from simkit.schedule._steps import MAX_STEP, At, Every, First, Last, LogSpaced, SimTime

__all__ = ["MAX_STEP", "At", "Every", "First", "Last", "LogSpaced", "SimTime", "WallTime",
           "When", "While"]
