"""Counter-based random numbers written once against the Array API.

A hash of (seed, counter, site) gives the same numbers on every backend and device, needs no
generator state (a resumed run draws exactly what an uninterrupted one would), and runs inside a
compiled loop. The hash is Wellons' "lowbias32", on 64-bit integers holding 32-bit values; the
multiplications are split so no backend ever overflows.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1


def _mul32(x: Any, constant: int) -> Any:
    """(x * constant) mod 2^32 for 0 <= x < 2^32, without 64-bit overflow."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK


def hash32(x: Any) -> Any:
    """lowbias32 on integers (Python ints or int64 arrays) in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(index: Any, seed: Any, counter: Any, like: Any) -> Any:
    """Uniform numbers in [0, 1), one per entry of the int64 array ``index``.

    Args:
        index: int64 array of site numbers (< 2^32), on the state's device.
        seed: the run's seed.
        counter: distinct per draw (e.g. 2 * step + sub-step); may be traced.
        like: an array whose dtype the result takes.
    """
    xp = array_namespace(index)
    key = hash32((_mul32(seed & _MASK, _GOLDEN) ^ hash32(counter & _MASK)) & _MASK)
    bits = hash32(hash32(index ^ key))
    return xp.astype(bits >> 8, like.dtype) * (1.0 / (1 << 24))
