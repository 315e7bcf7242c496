"""``Recorder``: the loop's side of a recording (steps, stages, probes, what is due, closing)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simkit.errors import RunInterrupted, ScenarioError
from simkit.recorder import _compiled
from simkit.recorder._captures import Captures
from simkit.recorder._streams import NAME, RecordStream
from simkit.recorder._values import to_host
from simkit.schedule import MAX_STEP, Condition


class Recorder(Captures):
    """Captures what a loop passes, on the schedules of its streams, into one run file.

    Made by ``simkit.record`` (this class); see ``Captures.__init__`` for its arguments. The
    file is laid out at the first capture, from the shapes and dtypes of the values seen so far.
    """

    # ------------------------------------------------------------------ schedules

    def due(self, step: int, time: float | None = None) -> bool:
        """Whether a capture may be taken at ``step``: False lets the loop skip computing values
        only captures need. Conditional streams (``when``, ``while``) count as due at each
        candidate step (their condition needs the value); ``last`` captures are taken at close
        from the last step's values."""
        t = float(step) if time is None else float(time)
        return any(s.schedule.may_fire(self._states[s.name], step, t) for s in self.streams)

    def _value_of(self, stream: RecordStream, values: Mapping[str, Any]
                  ) -> Callable[[Condition], float]:
        """How ``stream``'s conditions read the value they name from ``values``."""
        def value(condition: Condition) -> float:
            name = condition.diagnostic
            if name not in values:
                raise ScenarioError(f"expected the value {name!r} that the condition of stream "
                                    f"{stream.name!r} reads, given {', '.join(values) or 'none'}",
                                    key=f"outputs.{stream.name}")
            given = values[name]
            return float(to_host(given() if callable(given) else given, np.float64))
        return value

    # ------------------------------------------------------------------ the loop's calls

    def step(self, step: int, time: float | None = None, **values: Any) -> None:
        """Record the values of the loop at ``step`` (the state after ``step`` steps; 0 is the
        initial state): every stream due takes a host copy now. A value may be a function of no
        arguments, called only when a capture needs it, or None for one not computed at this
        step (a stream due that keeps it is an error).

        Raises:
            ScenarioError: a step not after the last one, a value a due stream needs missing, or
                of another shape than at its first capture.
        """
        if _compiled.traced(step, time, values):  # inside jax.jit / torch.compile
            return _compiled.step(self, step, time, values)
        self._check_open()
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            step = _step_number(step)
        if self._last_step is not None and step <= self._last_step:
            raise ScenarioError(f"expected a step after the last one recorded ({self._last_step}),"
                                f" given {step}", key="step")
        t = float(step) if time is None else float(
            time if type(time) is float else to_host(time, np.float64))
        if not math.isfinite(t):
            raise ScenarioError(f"expected a finite time, given {t}", key="time")
        if self._loose:
            clash = sorted(set(values) & set(self._loose))
            if clash:
                raise ScenarioError(f"expected {clash[0]!r} once, given it both to probe() and "
                                    "to step()", key=clash[0])
            values, self._loose = {**self._loose, **values}, {}
        # None stands for a value the loop did not compute at this step (see ``due``).
        values = {k: v for k, v in values.items() if v is not None}
        self._step_host = {}
        for name, value in values.items():
            if name not in self._seen and not callable(value):
                self._see(name, value)
        probes, self._probes = self._probes, {}
        if self._everything:
            self._keep_everything(step, values, probes)
        due = [s for s in self.streams if s.stage is None and s.schedule.due(
            self._states[s.name], step, t, self._value_of(s, values))]
        # A stage that did not run this step (none before step 0) captures nothing.
        staged = [s for s in self.streams if s.stage in probes
                  and s.schedule.fires(step, t)] if probes else []
        copies, self._probe_copies = self._probe_copies, {}
        if due:
            values = _called(values, due)
            self._capture(due, step, t, values)
        for stream in staged:
            self._capture([stream], step, t, probes[stream.stage or ""],
                          copies.get(stream.stage or "", {}))
        self._last_step, self._last_time = step, t
        self._last_values, self._last_probes = values, probes
        self._hand_over_late()

    def _keep_everything(self, step: int, values: Mapping[str, Any],
                         probes: Mapping[str, Mapping[str, Any]]) -> None:
        """Fix the fields of the streams that keep everything: the values of this first step
        (a stage's stream: the probes of the first step its stage runs in). Nothing to do,
        and no work on this per-step path, once none is left."""
        self.streams = tuple(
            s.keeping(values if s.stage is None else probes[s.stage], step)
            if s.everything and (s.stage is None or s.stage in probes) else s
            for s in self.streams)
        self._everything = any(stream.everything for stream in self.streams)

    def steps(self, steps: Sequence[int], times: Sequence[float] | None = None,
              **values: Any) -> None:
        """Record several steps at once, as ``step`` for each in order: ``values`` hold one row
        per step along their first axis (as ``lax.scan`` stacks them; None: not computed)."""
        for i, step in enumerate(steps):
            self.step(step, None if times is None else times[i],
                      **{name: None if value is None else value[i]
                         for name, value in values.items()})

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Recorder]:
        """Mark a part of the next step: ``probe`` calls inside belong to stage ``name``, which
        streams with ``stage: name`` capture, labelled with the step the next ``step`` call
        records (as a run labels a stage of the step that ends at that step)."""
        self._check_open()
        if self._stage is not None:
            raise ScenarioError(f"expected stages one after another, given {name!r} inside "
                                f"{self._stage!r}", key="stage")
        self._stage = name
        try:
            yield self
        finally:
            self._stage = None

    def probe(self, name: str, value: Any) -> None:
        """Record an intermediate ``value`` under ``name``: inside ``stage(...)`` for the streams
        of that stage, outside for the next ``step`` call (as if passed to it). Copied now when a
        stream of the stage is due at the next step."""
        if _compiled.traced(value):  # inside jax.jit / torch.compile
            return _compiled.probe(self, name, value)
        self._check_open()
        if not isinstance(name, str) or not NAME.match(name):
            raise ScenarioError(f"expected a probe name of letters, digits and _, at most 240 "
                                f"characters, given {name!r}", key="probe")
        if self._stage is None:
            self._loose[name] = value
            return
        self._probes.setdefault(self._stage, {})[name] = value
        self._see(name, value)
        upcoming = 0 if self._last_step is None else self._last_step + 1
        if any(s.stage == self._stage and (name in s.values or s.everything)
               and s.schedule.fires(upcoming, math.nan) for s in self.streams):
            self._probe_copies.setdefault(self._stage, {})[name] = to_host(value)

    def scan(self, body: Callable[..., Any], carry: Any, xs: Any = None,
             length: int | None = None) -> Any:
        """``jax.lax.scan(body, carry, xs, length)`` whose ``body`` may call ``step``."""
        return _compiled.scan(self, body, carry, xs, length)

    # ------------------------------------------------------------------ the end

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ScenarioError(f"expected an open recorder, given one closed into "
                                f"{self._closed}", key="record")

    def close(self, error: BaseException | None = None) -> Path | None:
        """Finish the file: ``last`` captures and the final state from the last step's values
        (copied now), then status ``complete``; with ``error``, or when finishing fails (a value
        missing, a full disk), keep what was written, status ``failed`` (``interrupted`` for
        Ctrl-C). Returns the file (None: nothing was captured)."""
        if self._closed is not None:
            return self._closed
        if error is not None:
            return self._abort(error)
        try:
            return self._finish()
        except BaseException as failure:
            self._abort(failure)
            raise

    def _finish(self) -> Path | None:
        step, time = self._last_step, self._last_time
        if step is None:  # nothing recorded: no file
            self._closed = self.path
            return None
        last = [s for s in self.streams if s.schedule.at_end
                and self._last_captured.get(s.name) != step]
        plain = [s for s in last if s.stage is None]
        if plain:
            self._capture(plain, step, time, _called(self._last_values, plain))
        for stream in last:
            if stream.stage is not None:
                self._capture([stream], step, time, self._last_probes.get(stream.stage, {}))
        self._write_held(required=True)
        return self._close_file(step, time, self._last_values)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        kept = self.close(error)
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, RunInterrupted) \
                and kept is not None:
            raise RunInterrupted(str(error) or "SIGINT", kept) from error


def _called(values: dict[str, Any], streams: list[RecordStream]) -> dict[str, Any]:
    """``values`` with the functions among those ``streams`` keep called."""
    if not any(map(callable, values.values())):
        return values
    needed = {n for s in streams for n in s.values}
    return {n: (v() if callable(v) and n in needed else v) for n, v in values.items()}


def _step_number(step: Any) -> int:
    """``step`` as a step number a file can hold.

    Raises:
        ScenarioError: it is not a whole number from 0 to ``MAX_STEP``.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) \
            or not 0 <= int(step) <= MAX_STEP:
        given = int(step) if isinstance(step, np.integer) else step
        raise ScenarioError(f"expected a whole step number from 0 to {MAX_STEP}, given "
                            f"{given!r}", key="step")
    return int(step)
