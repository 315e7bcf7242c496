"""What is due, decided on the device inside a user's compiled JAX code.

The host evaluator (``schedule.due``, asked by ``Recorder.step``) stays the one that decides what
a file holds. The device only decides *when the host must be asked*: at every step where a
stream may capture, a superset of the host's answer that is exact for steps known in advance
(read from the schedule's ``next_step``/``step_count``, never from its kind), for ``while``
conditions (the same comparison as ``Condition.holds`` on the value's own dtype, rounded so
that both agree bit for bit) and for ``when`` conditions (every step where the condition
changes, so the host's edge memory sees every edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkit.errors import ScenarioError
from simkit.recorder._streams import RecordStream
from simkit.schedule import MAX_STEP, AbstractSchedule, Condition

#: Steps of a finite step schedule held in a table on the device at most; beyond, a schedule
#: must be periodic (``every``, a ``while``'s candidates).
TABLE_MAX = 1 << 16
#: Values of at most this many elements travel in the per-step buffers of ``rec.scan``;
#: larger ones (fields) go to the host at the steps that keep them.
SMALL_MAX = 64


@dataclass(frozen=True)
class Steps:
    """The steps a member fires at: a table (``period`` 0) or ``start + k * period``."""

    start: int
    period: int
    table: tuple[int, ...] = ()

    def on_device(self, step: Any) -> Any:
        """Whether traced ``step`` is one of them."""
        import jax.numpy as jnp

        limit = int(np.iinfo(np.dtype(step.dtype)).max)
        if self.period:
            if self.start > limit:
                return jnp.zeros((), bool)
            return (step >= self.start) & ((step - self.start) % self.period == 0)
        table = [s for s in self.table if s <= limit]
        if not table:
            return jnp.zeros((), bool)
        steps = jnp.asarray(table, dtype=step.dtype)
        if len(table) <= 32:
            return jnp.any(steps == step)
        at = jnp.clip(jnp.searchsorted(steps, step), 0, len(table) - 1)
        return steps[at] == step


def steps_of(schedule: AbstractSchedule, key: str) -> Steps:
    """The steps a member known by step count fires at, from its protocol alone.

    Raises:
        ScenarioError: it has more steps than a table holds and they are not periodic.
    """
    count = schedule.step_count(MAX_STEP)
    first = schedule.next_step(-1)
    if first is None:
        return Steps(0, 0, ())
    if count <= TABLE_MAX:
        table, step = [first], schedule.next_step(first)
        while step is not None:
            table.append(step)
            step = schedule.next_step(step)
        return Steps(0, 0, tuple(table))
    second = schedule.next_step(first)
    period = 0 if second is None else second - first
    probes = (first, first + period, first + period * (count // 2 - 1), MAX_STEP - 2 * period)
    periodic = period > 0 and count == (MAX_STEP - first) // period + 1 and all(
        schedule.next_step(after) == first + ((after - first) // period + 1) * period
        for after in probes if after >= first)
    if not periodic:
        raise ScenarioError(f"expected at most {TABLE_MAX} steps or steps at a fixed interval "
                            f"for a stream recorded inside compiled code, given {count} steps "
                            "that are not", key=key)
    return Steps(first, period)


def _threshold(condition: Condition, dtype: Any) -> tuple[bool, Any]:
    """``(above, t)`` such that ``value >= t`` (above) or ``value <= t`` (below) in the
    value's ``dtype`` says exactly what ``condition.holds(float(value))`` says on the host."""
    above = condition.above is not None
    limit = float(condition.above if above else condition.below)  # type: ignore[arg-type]
    kind = np.dtype(dtype).kind
    if kind in "iub":
        bound = math.floor(limit) + 1 if above else math.ceil(limit) - 1
        return above, bound
    near = np.asarray(limit, dtype)
    if above:
        return above, near if float(near) > limit else np.nextafter(near, np.asarray(np.inf, dtype))
    return above, near if float(near) < limit else np.nextafter(near, np.asarray(-np.inf, dtype))


def holds_on_device(condition: Condition, value: Any) -> Any:
    """``condition.holds`` of a traced scalar, as the host says it of the same value."""
    import jax.numpy as jnp

    value = jnp.reshape(value, ())
    if jnp.issubdtype(value.dtype, jnp.floating) and np.dtype(value.dtype).itemsize < 4:
        value = value.astype(jnp.float32)  # exactly: float16 and bfloat16 widen without loss
    if value.dtype == jnp.bool_:
        value = value.astype(jnp.int32)
    above, bound = _threshold(condition, np.dtype(value.dtype))
    if np.dtype(value.dtype).kind in "iu":
        info = np.iinfo(np.dtype(value.dtype))
        if bound > info.max:  # above: never; below: always
            return jnp.asarray(not above)
        if bound < info.min:  # above: always; below: never
            return jnp.asarray(above)
    bound = jnp.asarray(bound, value.dtype)
    return value >= bound if above else value <= bound


@dataclass(frozen=True)
class StreamDue:
    """One stream as the device sees it."""

    stream: RecordStream
    known: tuple[Steps, ...]
    level: tuple[tuple[Condition, Steps], ...]
    edge: tuple[Condition, ...]
    at_end: bool


def plan(streams: tuple[RecordStream, ...]) -> tuple[StreamDue, ...]:
    """The device's view of ``streams``.

    Raises:
        ScenarioError: a schedule the device cannot follow (wall clock, simulated time), or a
            stream of a stage (``probe`` inside compiled code is not available).
    """
    out = []
    for stream in streams:
        key = f"outputs.{stream.name}"
        if stream.stage is not None:
            raise ScenarioError(f"expected streams without a stage inside compiled code (probes "
                                f"are recorded on the host only), given stage {stream.stage!r}",
                                key=f"{key}.stage")
        known, level, edge, at_end = [], [], [], False
        for member in stream.schedule.members():
            if member.wall_clock is not None or member.next_time(-1.0) is not None:
                raise ScenarioError("expected a schedule by steps or conditions inside compiled "
                                    f"code, given {member.kind}", key=f"{key}.{member.kind}")
            if member.edge is not None:
                edge.append(member.edge)
            elif member.level is not None:
                level.append((member.level, steps_of(member, key)))
            elif member.at_end:
                at_end = True
            else:
                known.append(steps_of(member, key))
        out.append(StreamDue(stream, tuple(known), tuple(level), tuple(edge), at_end))
    return tuple(out)


def conditions(streams: tuple[StreamDue, ...]) -> tuple[Condition, ...]:
    """Every condition of ``streams``, once."""
    found = [c for s in streams for c in (*s.edge, *(c for c, _ in s.level))]
    return tuple(dict.fromkeys(found))


def check_values(streams: tuple[StreamDue, ...], values: dict[str, Any]) -> None:
    """Refuse, while tracing, a condition whose value is not passed or not one number.

    Raises:
        ScenarioError: naming the stream, the value expected and what was given.
    """
    for due in streams:
        for condition in conditions((due,)):
            name = condition.diagnostic
            given = values.get(name)
            if given is None:
                raise ScenarioError(f"expected the value {name!r} that the condition of stream "
                                    f"{due.stream.name!r} reads, given "
                                    f"{', '.join(values) or 'none'}",
                                    key=f"outputs.{due.stream.name}")
            if int(np.prod(np.shape(given))) != 1:
                raise ScenarioError(f"expected one number for {name!r}, which the condition of "
                                    f"stream {due.stream.name!r} reads, given shape "
                                    f"{tuple(np.shape(given))}",
                                    key=f"outputs.{due.stream.name}")


def is_big(due: StreamDue, small: set[str]) -> bool:
    """Whether a capture of the stream needs a value too big for the per-step buffers."""
    return due.stream.everything or any(n not in small for n in due.stream.values)
