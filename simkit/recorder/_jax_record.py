"""``rec.step`` and ``rec.scan`` inside compiled JAX code (``jax.jit``, ``lax.scan``,
``fori_loop``, ``while_loop``).

The device decides at which steps the host must be asked (``_jax_due``); only then does an
ordered ``io_callback`` run, inside ``lax.cond``: no callback at a step where nothing may be due.
``rec.scan`` carries device buffers for the values of at most ``SMALL_MAX`` elements (per-step
scalars) and hands them over a block per callback; a step that keeps a larger value (a field)
goes at once, after the rows before it. Callbacks run when the compiled code runs, never while
it is traced: a retrace captures nothing twice, and running the same steps again is refused by
the recorder as steps out of order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from simkit.errors import ScenarioError
from simkit.recorder._jax_due import (
    SMALL_MAX,
    StreamDue,
    check_values,
    conditions,
    holds_on_device,
    is_big,
    plan,
)
from simkit.recorder._jax_host import Form, host_of

if TYPE_CHECKING:
    from simkit.recorder._recorder import Recorder

#: Rows of per-step values ``rec.scan`` buffers on the device before handing them over.
BLOCK_ROWS = 1024


@dataclass
class _Slot:
    """What one traced call of the body passed to ``rec.step``."""

    calls: int = 0
    step: Any = None
    time: Any = None
    timed: bool = True
    values: dict[str, Any] = field(default_factory=dict)


_ACTIVE = threading.local()


@contextlib.contextmanager
def _collecting(rec: Recorder) -> Iterator[_Slot]:
    """While tracing a ``rec.scan`` body: ``rec.step`` calls of ``rec`` fill the slot."""
    slots = getattr(_ACTIVE, "slots", None)
    if slots is None:
        slots = _ACTIVE.slots = {}
    before, slot = slots.get(id(rec)), _Slot()
    slots[id(rec)] = slot
    try:
        yield slot
    finally:
        if before is None:
            del slots[id(rec)]
        else:
            slots[id(rec)] = before


def _device_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of one step as JAX arrays (None: not computed at this step, left out).

    Raises:
        ScenarioError: a function given as a value, or a value under ``jax.vmap``.
    """
    import jax.numpy as jnp

    out = {}
    for name, value in values.items():
        if value is None:
            continue
        if callable(value):
            raise ScenarioError(f"expected an array for {name!r} inside compiled code, given a "
                                "function (pass the value: the device decides when it is "
                                "copied)", key=name)
        if any(kind.__name__ == "BatchTracer" for kind in type(value).__mro__):
            raise ScenarioError(f"expected values of one member inside compiled code, given "
                                f"{name!r} under jax.vmap (record each member's loop, or "
                                "record outside vmap)", key=name)
        out[name] = jnp.asarray(value)
    return out


def _step_value(step: Any) -> Any:
    import jax.numpy as jnp

    step = jnp.asarray(step)
    if step.shape != () or not jnp.issubdtype(step.dtype, jnp.integer):
        raise ScenarioError(f"expected a whole step number (one integer) inside compiled code, "
                            f"given an array of {step.dtype} of shape {step.shape}", key="step")
    return step


def step(rec: Recorder, step: Any, time: Any, values: Mapping[str, Any]) -> None:
    """``rec.step`` with traced values: held for ``rec.scan`` inside its body, else asked of
    the host at the steps the device says may be due."""
    slot = getattr(_ACTIVE, "slots", {}).get(id(rec))
    step = _step_value(step)
    given = _device_values(values)
    if slot is not None:
        slot.calls += 1
        if slot.calls > 1:
            raise ScenarioError("expected one rec.step call per step of rec.scan's body, given "
                                f"{slot.calls}", key="step")
        slot.step, slot.timed, slot.values = step, time is not None, given
        slot.time = step if time is None else time
        return
    _plain_step(rec, step, time, given)


def _known_or_level(due: StreamDue, step: Any, holds: Mapping[Any, Any]) -> Any:
    """Whether a stream is due at ``step`` by its steps or its ``while`` conditions."""
    import jax.numpy as jnp

    out = jnp.zeros((), bool)
    for steps in due.known:
        out = out | steps.on_device(step)
    for condition, steps in due.level:
        out = out | (steps.on_device(step) & holds[condition])
    return out


def _plain_step(rec: Recorder, step: Any, time: Any, values: dict[str, Any]) -> None:
    """``rec.step`` in a user's own compiled loop: one callback at each step that may capture
    (with ``when`` conditions, a callback of the condition values each step asks the host
    whether one changed)."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import io_callback

    struct: Any = jax.ShapeDtypeStruct
    dues = plan(rec.streams)
    for due in dues:
        if due.at_end:
            raise ScenarioError(f"expected rec.scan for stream {due.stream.name!r} (last: its "
                                "last step is known to rec.scan, not to rec.step inside a loop "
                                "of your own), given rec.step inside compiled code",
                                key=f"outputs.{due.stream.name}")
    check_values(dues, values)
    host, conds = host_of(rec), conditions(dues)
    holds = {c: holds_on_device(c, values[c.diagnostic]) for c in conds}
    need = jnp.zeros((), bool)
    for due in dues:
        need = need | _known_or_level(due, step, holds)
    edges = tuple(dict.fromkeys(c for d in dues for c in d.edge))
    if edges:
        scalars = {c.diagnostic: values[c.diagnostic] for c in edges}
        need = need | io_callback(partial(host.edge_check, edges),
                                  struct((), jnp.bool_), scalars, ordered=True)
    deliver = partial(host.deliver_now, Form(time is not None, conds, tuple(values)))
    t = step if time is None else jnp.asarray(time)
    jax.lax.cond(need, lambda: io_callback(deliver, None, step, t, values, ordered=True),
                 lambda: None)


# ---------------------------------------------------------------------- rec.scan

def _first_of(xs: Any) -> Any:
    import jax

    struct: Any = jax.ShapeDtypeStruct
    return jax.tree.map(lambda a: struct(a.shape[1:], a.dtype), xs)


def _length(xs: Any, length: int | None) -> int:
    import jax

    leaves = jax.tree.leaves(xs)
    if length is None and not leaves:
        raise ScenarioError("expected xs or length for rec.scan, given neither", key="length")
    return int(length if length is not None else leaves[0].shape[0])


def _traced_body(rec: Recorder, body: Callable[..., Any], carry: Any, x: Any
                 ) -> tuple[Any, Any, _Slot]:
    with _collecting(rec) as slot:
        carry, y = body(carry, x)
    if slot.calls != 1:
        raise ScenarioError(f"expected one rec.step call per step of rec.scan's body, given "
                            f"{slot.calls}", key="step")
    return carry, y, slot


def scan(rec: Recorder, body: Callable[..., Any], carry: Any, xs: Any = None,
         length: int | None = None) -> Any:
    """``lax.scan(body, carry, xs, length)`` whose body calls ``rec.step`` once per step: the
    loop runs ``length - 1`` steps with device buffers, its last step outside the loop, so the
    host gets the last step's values (``last`` streams, the final state) with the last rows."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import io_callback

    n = _length(xs, length)
    if n == 0:
        return jax.lax.scan(body, carry, xs, length=0)
    timed: list[tuple[bool, tuple[str, ...]]] = []

    def shape_of(c: Any, x: Any) -> dict[str, Any]:
        slot = _traced_body(rec, body, c, x)[2]
        timed.append((slot.timed, tuple(slot.values)))
        return {"step": slot.step, "time": jnp.asarray(slot.time), "values": slot.values}

    shapes = jax.eval_shape(shape_of, carry, _first_of(xs))
    dues = plan(rec.streams)
    check_values(dues, {name: shapes["values"][name] for name in timed[0][1]})
    blocks = _Blocks(rec, dues, timed[0], min(BLOCK_ROWS, max(n - 1, 1)), shapes)

    def looped(state: Any, x: Any) -> Any:
        inner, buf = state
        inner, y, slot = _traced_body(rec, body, inner, x)
        return (inner, blocks.advance(buf, slot)), y

    buf: Any = None
    ys: Any = None
    if n > 1:
        head = jax.tree.map(lambda a: a[:-1], xs)
        state, ys = jax.lax.scan(looped, (carry, blocks.empty()), head, length=n - 1)
        carry, buf = state
    carry, y_last, slot = _traced_body(rec, body, carry, jax.tree.map(lambda a: a[-1], xs))
    io_callback(blocks.finish_host, None, buf, slot.step, jnp.asarray(slot.time), slot.values,
                ordered=True)
    if n == 1:
        return carry, jax.tree.map(lambda a: jnp.asarray(a)[None], y_last)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, jnp.asarray(b)[None]]),
                               ys, y_last)


class _Blocks:
    """The per-step buffers of ``rec.scan`` and what each step does with them."""

    def __init__(self, rec: Recorder, dues: tuple[StreamDue, ...],
                 called: tuple[bool, tuple[str, ...]], rows: int, shapes: Mapping[str, Any]
                 ) -> None:
        self.host, self.dues, self.shapes = host_of(rec), dues, shapes
        self.small = {k for k, v in shapes["values"].items() if v.size <= SMALL_MAX}
        #: No rows at all where every stream keeps a large value (nothing is buffered).
        self.buffered = not all(is_big(due, self.small) for due in dues)
        self.rows = rows if self.buffered else 0
        self.conds = conditions(dues)
        self.form = Form(called[0], self.conds, called[1])
        self.edges = tuple(dict.fromkeys(c for d in dues for c in d.edge))

    def empty(self) -> dict[str, Any]:
        """Buffers of ``rows`` rows: steps, times and the small values."""
        import jax.numpy as jnp

        def rows(v: Any) -> Any:
            return jnp.zeros((self.rows, *v.shape), v.dtype)

        return {"count": jnp.zeros((), jnp.int32),
                "prev": jnp.full((len(self.edges),), -1, jnp.int8),
                "steps": rows(self.shapes["step"]), "times": rows(self.shapes["time"]),
                "values": {k: rows(v) for k, v in self.shapes["values"].items()
                           if k in self.small}}

    def _due(self, buf: dict[str, Any], slot: _Slot) -> tuple[Any, Any, Any]:
        """Whether a stream keeping a large value, or only small ones, may be due at the
        slot's step; and the edge conditions now."""
        import jax.numpy as jnp

        holds = {c: holds_on_device(c, slot.values[c.diagnostic]) for c in self.conds}
        now = jnp.stack([holds[c].astype(jnp.int8) for c in self.edges]) if self.edges \
            else buf["prev"]
        changed = now != buf["prev"]
        big, small = jnp.zeros((), bool), jnp.zeros((), bool)
        for due in self.dues:
            due_now = _known_or_level(due, slot.step, holds)
            for condition in due.edge:
                due_now = due_now | changed[self.edges.index(condition)]
            if is_big(due, self.small):
                big = big | due_now
            else:
                small = small | due_now
        return big, small, now

    def advance(self, buf: dict[str, Any], slot: _Slot) -> dict[str, Any]:
        """One step: nothing, a row in the buffers (a block handed over when they are full),
        or the rows so far and this step's every value at once."""
        import jax
        import jax.numpy as jnp
        from jax.experimental import io_callback

        big, small, now = self._due(buf, slot)
        step, time, values = slot.step, jnp.asarray(slot.time), slot.values
        rows = partial(self.host.later, self.host.rows, self.form)

        def keep(b: dict[str, Any]) -> dict[str, Any]:
            return b

        def flush(b: dict[str, Any]) -> dict[str, Any]:
            io_callback(rows, None, b["count"], b["steps"], b["times"], b["values"],
                        ordered=True)
            return {**b, "count": jnp.zeros((), jnp.int32)}

        def append(b: dict[str, Any]) -> dict[str, Any]:
            at = b["count"]
            b = {**b, "count": at + 1, "steps": b["steps"].at[at].set(step),
                 "times": b["times"].at[at].set(time),
                 "values": {k: v.at[at].set(values[k]) for k, v in b["values"].items()}}
            kept: dict[str, Any] = jax.lax.cond(b["count"] == self.rows, flush, keep, b)
            return kept

        def at_once(b: dict[str, Any]) -> dict[str, Any]:
            io_callback(partial(self.host.later, self.host.rows_then, self.form), None,
                        b["count"], b["steps"], b["times"], b["values"], step, time, values,
                        ordered=True)
            return {**b, "count": jnp.zeros((), jnp.int32)}

        if not self.buffered:  # no rows: one branch
            buf = jax.lax.cond(big, at_once, keep, buf)
        else:
            branch = jnp.where(big, 2, jnp.where(small, 1, 0))
            buf = jax.lax.switch(branch, [keep, append, at_once], buf)
        return {**buf, "prev": now}

    def finish_host(self, buf: Any, step: Any, time: Any, values: Mapping[str, Any]) -> None:
        """The rows left and the scan's last step (its every value)."""
        if buf is not None:
            self.host.later(self.host.rows, self.form, buf["count"], buf["steps"],
                            buf["times"], buf["values"])
        self.host.later(self.host.deliver, self.form, step, time, values)
        self.host.settle()
