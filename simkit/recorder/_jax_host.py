"""The host side of recording inside compiled JAX code: what ordered host callbacks deliver is
handed to the recorder's own ``step``, so the file is the host recording's file by
construction (the same evaluator, copies, checks and writer)."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from simkit.recorder._recorder import Recorder
    from simkit.schedule import Condition


@dataclass(frozen=True)
class Form:
    """How the traced code called ``rec.step``: with a time or not, the conditions its
    streams read, and the order it passed its values in (callbacks get them sorted by name)."""

    timed: bool
    conditions: tuple[Condition, ...]
    order: tuple[str, ...]


class Host:
    """One recorder's receiving end: steps delivered by the device, in the order they ran."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = weakref.ref(rec)
        #: Whether each condition held at the last step delivered (None: none delivered yet):
        #: the edge memory the device compares against inside ``rec.step`` of a user's loop.
        self.held: dict[Condition, bool | None] = {}

    @property
    def rec(self) -> Recorder:
        rec = self._rec()
        if rec is None:  # pragma: no cover - the traced code outlived its recorder
            raise RuntimeError("expected a live recorder for a compiled loop, given none")
        return rec

    @staticmethod
    def _mark(rec: Recorder) -> None:
        """The file says the arrays came from JAX (the callbacks hand over NumPy copies)."""
        if getattr(rec, "_library", ()) is None:
            import jax

            rec._library = ("jax", str(jax.devices()[0]))

    def deliver(self, form: Form, step: Any, time: Any, values: Mapping[str, Any]) -> None:
        """Hand one step to ``Recorder.step`` (host copies: the callback's buffers are not
        ours to keep)."""
        rec = self.rec
        self._mark(rec)
        copies = {name: np.array(values[name], copy=True) for name in form.order}
        rec.step(int(step), time=np.float64(time) if form.timed else None, **copies)
        for condition in form.conditions:
            self.held[condition] = condition.holds(float(copies[condition.diagnostic]))

    def rows(self, form: Form, count: Any, steps: Any, times: Any, values: Mapping[str, Any]
             ) -> None:
        """Hand the first ``count`` buffered rows to ``Recorder.steps`` (one ``step`` each)."""
        count = int(count)
        if not count:
            return
        rec = self.rec
        self._mark(rec)
        order = [name for name in form.order if name in values]
        rec.steps([int(s) for s in steps[:count]],
                  [np.float64(t) for t in times[:count]] if form.timed else None,
                  **{name: np.array(values[name][:count], copy=True) for name in order})
        for condition in form.conditions:
            last = values[condition.diagnostic][count - 1]
            self.held[condition] = condition.holds(float(np.asarray(last)))

    def rows_then(self, form: Form, count: Any, steps: Any, times: Any,
                  values: Mapping[str, Any], step: Any, time: Any, every: Mapping[str, Any]
                  ) -> None:
        """The buffered rows, then one step with ``every`` value it passed."""
        self.rows(form, count, steps, times, values)
        self.deliver(form, step, time, every)

    def edge_check(self, conditions: tuple[Condition, ...], values: Mapping[str, Any]
                   ) -> np.ndarray:
        """Whether any edge condition changed since the last step delivered (at the first
        step: whether any is known)."""
        changed = any(self.held.get(c) is None
                      or c.holds(float(np.asarray(values[c.diagnostic]))) != self.held[c]
                      for c in conditions)
        return np.asarray(changed)


_HOSTS: weakref.WeakKeyDictionary[Any, Host] = weakref.WeakKeyDictionary()


def host_of(rec: Recorder) -> Host:
    """The receiving end of ``rec`` (one per recorder)."""
    host = _HOSTS.get(rec)
    if host is None:
        host = _HOSTS[rec] = Host(rec)
    return host
