"""The host side of recording inside compiled JAX code: what ordered host callbacks deliver is
handed to the recorder's own ``step``, so the file is the host recording's file by
construction (the same evaluator, copies, checks and writer).

Inside ``rec.scan`` a callback only copies what it is given and queues it: one feeder thread
hands the queue to the recorder in order while the compiled loop goes on, and the scan's last
callback waits until all of it is recorded (its errors are raised there)."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Mapping
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
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]]] = \
            queue.Queue(maxsize=_QUEUED)
        self._feeder: threading.Thread | None = None
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ the feeder

    def later(self, work: Callable[..., None], *args: Any) -> None:
        """Queue ``work(*args)`` (host copies of arrays) for the feeder thread."""
        self._raise()
        args = _copied(args)
        with self._lock:  # a feeder that is leaving has left, or sees this work
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed, daemon=True,
                                                name="simkit-compiled-record")
                self._feeder.start()
            self._queue.put((work, args))

    def _feed(self) -> None:
        """Run the queued work in order; leave after a while with nothing to do."""
        while True:
            try:
                work, args = self._queue.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._feeder = None
                        return
                continue
            try:
                if self._error is None:  # after a failure, the rest is dropped
                    work(*args)
            except BaseException as error:  # noqa: BLE001 - raised in the compiled call
                self._error = error
            finally:
                self._queue.task_done()

    def settle(self) -> None:
        """Wait until everything queued is recorded; raise what failed on the way."""
        self._queue.join()
        self._raise()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    @property
    def rec(self) -> Recorder:
        rec = self._rec()
        if rec is None:  # pragma: no cover - the traced code outlived its recorder
            raise RuntimeError("expected a live recorder for a compiled loop, given none")
        return rec

    @staticmethod
    def _mark(rec: Recorder) -> None:
        """The file says the arrays came from JAX (the callbacks hand over NumPy copies)."""
        import jax

        rec.values_from("jax", str(jax.devices()[0]))

    def deliver_now(self, form: Form, step: Any, time: Any, values: Mapping[str, Any]
                    ) -> None:
        """``deliver`` after everything queued (a loop of your own asks the host in line)."""
        self.settle()
        self.deliver(form, step, time, values)

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


#: Hand-overs queued at most (each a block of rows, or a step with its fields): the memory
#: a loop may run ahead of the recorder.
_QUEUED = 4
#: Seconds the feeder thread waits for work before it ends (a later scan starts another).
_IDLE_SECONDS = 2.0


def _copied(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with every array copied (a callback's buffers are not ours to keep)."""
    def copy(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: copy(v) for k, v in value.items()}
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else value
    return tuple(copy(a) for a in args)


_HOSTS: weakref.WeakKeyDictionary[Any, Host] = weakref.WeakKeyDictionary()


def host_of(rec: Recorder) -> Host:
    """The receiving end of ``rec`` (one per recorder)."""
    host = _HOSTS.get(rec)
    if host is None:
        host = _HOSTS[rec] = Host(rec)
    return host
