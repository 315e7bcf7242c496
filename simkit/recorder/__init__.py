"""Recording any Python loop: the schedules, host copies, writer, checksums and crash safety of a
run, for values the loop passes (NumPy, JAX or torch arrays, or Python numbers).

    with simkit.record("out.nc", outputs={"snap": {"every": 10, "fields": ["u"]}}) as rec:
        for i in range(n):
            u = update(u)
            rec.step(i, time=i * dt, u=u)
"""

from __future__ import annotations

from simkit.recorder._recorder import Recorder

#: Record values of any loop into one run file, on the schedules of ``outputs``; returns a
#: ``Recorder`` to use as a context manager, or to ``close()`` (arguments: ``Recorder``).
record = Recorder

__all__ = ["Recorder", "record"]
