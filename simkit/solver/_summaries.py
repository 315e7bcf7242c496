"""Summaries of a field, computed on its device: moments, extremes, L2 norm, quantiles and
fixed-bin histograms, each a generated diagnostic (a scalar, or a short vector with a coordinate
of its own) that streams store as ``(step,)`` or ``(step, bin)``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    device,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)

from simkit.errors import ScenarioError, did_you_mean
from simkit.solver._base import Coordinate, Diagnostic

#: Summaries named by a plain word; ``quantiles`` and ``histogram`` take their settings.
SCALAR_KINDS = ("mean", "min", "max", "std", "l2")
KINDS = (*SCALAR_KINDS, "quantiles", "histogram")
_LONG = {"mean": "mean", "min": "minimum", "max": "maximum", "std": "standard deviation",
         "l2": "L2 norm (root of the sum of squares)"}
#: The dtypes a histogram is made in (as ``numpy.histogram`` in the values' own); anything else
#: is summarized in float64.
DTYPES = ("float64", "float32", "float16")
#: At most this many histogram bins or quantiles: summaries are short vectors.
MAX_LENGTH = 4096


@dataclass(frozen=True)
class Summary:
    """One summary of one field.

    Args:
        field: the summarized field (or probe, or value a recorder is given).
        kind: one of ``KINDS``.
        quantiles: the probabilities of ``quantiles`` (linear interpolation, as
            ``numpy.quantile``'s default).
        bins: the number of equal bins of ``histogram``.
        range: the histogram's lower and upper edge; None: fixed from the first value summarized
            (``with_range_of``), as ``numpy.histogram`` chooses it.
        dtype: the floating dtype of the summarized values; a histogram's edges are made and
            compared in it, as ``numpy.histogram`` does (float32 values, float32 edges).
        fitted: the range was taken from the values (``with_range_of``): numpy then makes the
            edges from extremes of the values' dtype, not from numbers given to it, which rounds
            them differently in float32.
    """

    field: str
    kind: str
    quantiles: tuple[float, ...] = ()
    bins: int = 0
    range: tuple[float, float] | None = None
    dtype: str = "float64"
    fitted: bool = False

    def __post_init__(self) -> None:
        key = f"summaries.{self.field}"
        if self.kind not in KINDS:
            raise ScenarioError(f"unknown summary{did_you_mean(str(self.kind), KINDS)}; expected "
                                f"one of {', '.join(KINDS)}, given {self.kind!r}", key=key)
        if self.dtype not in DTYPES:
            raise ScenarioError(f"expected dtype {', '.join(DTYPES)}, given {self.dtype!r}",
                                key=f"{key}.dtype")
        if self.kind == "quantiles":
            qs = self.quantiles
            if (not isinstance(qs, tuple) or not 0 < len(qs) <= MAX_LENGTH
                    or not all(_number(q) and 0 <= q <= 1 for q in qs)):
                raise ScenarioError(f"expected a list of 1 to {MAX_LENGTH} probabilities in "
                                    f"[0, 1], given {list(qs) if isinstance(qs, tuple) else qs!r}",
                                    key=f"{key}.quantiles")
        if self.kind == "histogram":
            if isinstance(self.bins, bool) or not isinstance(self.bins, int) \
                    or not 1 <= self.bins <= MAX_LENGTH:
                raise ScenarioError(f"expected a whole number of bins from 1 to {MAX_LENGTH}, "
                                    f"given {self.bins!r}", key=f"{key}.histogram.bins")
            low_high = self.range
            if low_high is not None and (len(low_high) != 2 or not all(map(_number, low_high))
                                         or not low_high[0] < low_high[1]):
                raise ScenarioError(f"expected [low, high] with finite low < high, given "
                                    f"{list(low_high)!r}", key=f"{key}.histogram.range")

    @property
    def name(self) -> str:
        """The variable it is stored as, e.g. ``u_mean``, ``u_histogram``."""
        return f"{self.field}_{self.kind}"

    @property
    def dims(self) -> tuple[str, ...]:
        """``()`` for a scalar; the quantile or bin dimension of a vector."""
        if self.kind == "quantiles":
            return (f"{self.field}_quantile",)
        if self.kind == "histogram":
            return (f"{self.field}_bin",)
        return ()

    def with_range_of(self, value: Any) -> Summary:
        """This summary, with a histogram range taken from ``value`` where none was given: its
        minimum and maximum in ``dtype`` (a constant ``c`` gives ``[c - 0.5, c + 0.5]``), exactly
        as ``numpy.histogram`` chooses them."""
        if self.kind != "histogram" or self.range is not None:
            return self
        host = np.asarray(value, dtype=self.dtype)
        low, high = host.min(), host.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ScenarioError(f"expected finite values to fix the histogram range from, given "
                                f"{low}..{high}", key=f"summaries.{self.field}.histogram.range")
        if low == high:
            low, high = low - 0.5, high + 0.5  # in the values' dtype, as numpy
        return replace(self, range=(float(low), float(high)), fitted=True)

    def bounds(self) -> tuple[Any, Any]:
        """The histogram's range as NumPy takes it: numbers as given, or the values' extremes
        (``fitted``) in ``dtype``."""
        if self.range is None:
            raise ValueError(f"summary {self.name}: the histogram range is not fixed yet")
        low, high = self.range
        if self.fitted:
            low, high = np.asarray([low, high], dtype=self.dtype)
        return low, high

    def edges(self) -> np.ndarray:
        """The histogram's bin edges (``bins + 1``, in ``dtype``): ``numpy.histogram``'s own, of
        values of ``dtype`` with this range (numbers given, or the values' extremes).

        Raises:
            ScenarioError: a range too narrow for its bins in ``dtype``.
        """
        low, high = self.bounds()
        try:
            return np.histogram_bin_edges(np.empty(0, dtype=self.dtype), self.bins,
                                          range=(low, high))
        except ValueError as error:
            raise ScenarioError(f"expected a range wide enough for {self.bins} distinct bin "
                                f"edges in {self.dtype}, given {list(self.range)}",
                                key=f"summaries.{self.field}.histogram.range") from error

    def coordinates(self, units: str) -> list[Coordinate]:
        """The coordinates of a vector summary: quantile probabilities, or bin centres and edges
        (``<field>_bin_edge``, one more than the bins)."""
        if self.kind == "quantiles":
            return [Coordinate(self.dims[0], np.asarray(self.quantiles, dtype=np.float64), "1",
                               f"probability of a quantile of {self.field}")]
        if self.kind == "histogram":
            edges = self.edges().astype(np.float64)
            return [Coordinate(self.dims[0], (edges[:-1] + edges[1:]) / 2, units,
                               f"centre of a bin of the histogram of {self.field}"),
                    Coordinate(f"{self.field}_bin_edge", edges, units,
                               f"edges of the bins of the histogram of {self.field}")]
        return []

    def units(self, field_units: str) -> str:
        """CF units of the stored summary."""
        return "1" if self.kind == "histogram" else field_units

    def long_name(self, field_long_name: str | None = None) -> str:
        what = field_long_name or self.field
        if self.kind == "histogram":
            return (f"histogram of {what}: values per bin, bins [edge, next edge), the last "
                    f"closed (edges {self.field}_bin_edge)")
        if self.kind == "quantiles":
            return f"quantiles of {what} (linear interpolation)"
        return f"{_LONG[self.kind]} of {what}"

    def compute(self, value: Any) -> Any:
        """The summary of ``value`` (any shape), on its device, as float64 (also for JAX arrays
        while JAX's x64 is off, its default)."""
        if is_jax_array(value):
            import jax

            if not jax.config.jax_enable_x64:
                with _jax_x64(jax):
                    return self._compute(value)
        return self._compute(value)

    def _compute(self, value: Any) -> Any:
        xp = array_namespace(value)
        x = xp.reshape(value, (-1,))
        # Moments in float64; a histogram compares in its edges' dtype, as NumPy does.
        wanted = getattr(xp, self.dtype) if self.kind == "histogram" else xp.float64
        if x.dtype != wanted:
            x = xp.astype(x, wanted)
        if self.kind == "mean":
            return xp.mean(x)
        if self.kind == "min":
            return xp.min(x)
        if self.kind == "max":
            return xp.max(x)
        if self.kind == "std":
            return xp.std(x)
        if self.kind == "l2":
            return xp.sqrt(xp.sum(x * x))
        where = device(x)
        if self.kind == "histogram":
            return _histogram(xp, x, self, where)
        return _quantiles(xp, xp.sort(x), self.quantiles, where)

    def diagnostic(self, field_units: str, field_long_name: str | None = None) -> Diagnostic:
        """The summary as a diagnostic of a solver's state."""
        name = self.field
        return Diagnostic(self.name, lambda state: self.compute(state[name]),
                          self.units(field_units), self.long_name(field_long_name), self.dims)


def _jax_x64(jax: Any) -> Any:
    """JAX's context that enables float64 (``jax.enable_x64``; ``jax.experimental`` before)."""
    enable = getattr(jax, "enable_x64", None)
    if enable is None:
        from jax.experimental import enable_x64 as enable
    return enable(True)


def _histogram(xp: Any, x: Any, summary: Summary, where: Any) -> Any:
    """Counts of ``x`` (in the summary's dtype) in the bins ``[edge, next edge)`` (the last
    closed), exactly as ``numpy.histogram``: a bin index from the bin width, in the arithmetic
    and dtypes NumPy uses for it, corrected by comparing with the edges themselves, then one pass
    counting (no sort)."""
    host_edges = summary.edges()
    bins = summary.bins
    edges = xp.asarray(host_edges, dtype=x.dtype, device=where)
    # NumPy's operands: the range as given (numbers) or as the values' extremes (fitted); the
    # width is their difference in their own dtype, and the guess takes the wider dtype of
    # ``x - low`` and the width (float64 for float32 values and a range given as numbers).
    low, high = summary.bounds()
    width = np.subtract(high, low, dtype=np.result_type(high, low))
    kind = ((np.zeros(1, dtype=host_edges.dtype) - low) / width * bins).dtype
    shifted = x - xp.asarray(host_edges[0], dtype=x.dtype, device=where)
    if kind != host_edges.dtype:
        shifted = xp.astype(shifted, getattr(xp, kind.name))
    guess = xp.floor(shifted / xp.asarray(width, dtype=shifted.dtype, device=where) * bins)
    index = xp.astype(xp.clip(xp.where(xp.isnan(guess), 0.0, guess), 0, bins - 1), xp.int64)
    index = index - xp.astype(x < xp.take(edges, index), xp.int64)
    index = xp.clip(index, 0, bins - 1)
    index = index + xp.astype((x >= xp.take(edges, index + 1)) & (index != bins - 1), xp.int64)
    inside = (x >= edges[0]) & (x <= edges[-1])
    index = xp.where(inside, index, xp.asarray(bins, dtype=xp.int64, device=where))
    return xp.astype(_bincount(xp, index, bins + 1)[:bins], xp.float64)


def _bincount(xp: Any, index: Any, length: int) -> Any:
    """How many times each of ``0 .. length - 1`` occurs in ``index`` (the one operation the
    Array API lacks: each library's own, else a comparison per value)."""
    if is_numpy_array(index):
        return np.bincount(index, minlength=length)
    if is_jax_array(index):
        import jax.numpy as jnp

        return jnp.bincount(index, length=length)
    if is_torch_array(index):
        import torch

        return torch.bincount(index, minlength=length)
    values = xp.arange(length, dtype=index.dtype, device=device(index))
    return xp.sum(xp.astype(index[:, None] == values[None, :], xp.int64), axis=0)


def _quantiles(xp: Any, ordered: Any, qs: Sequence[float], where: Any) -> Any:
    """``numpy.quantile(x, qs)`` (linear) of the sorted ``ordered``: positions on the host,
    values gathered and interpolated on the device."""
    n = ordered.shape[0]
    pos = np.asarray(qs, dtype=np.float64) * (n - 1)
    low = np.floor(pos)
    gamma = pos - low
    low_i = low.astype(np.int64)
    high_i = np.minimum(low_i + 1, n - 1)
    a = xp.take(ordered, xp.asarray(low_i, device=where))
    b = xp.take(ordered, xp.asarray(high_i, device=where))
    g = xp.asarray(gamma, dtype=xp.float64, device=where)
    diff = b - a
    # NumPy's lerp: from the nearer end, so that gamma 1 gives b exactly.
    return xp.where(g >= 0.5, b - diff * (1 - g), a + diff * g)


def _number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def parse_summaries(spec: Any, key: str = "summaries") -> tuple[Summary, ...]:
    """Summaries from stream data: ``{field: [mean, std, {quantiles: [0.1, 0.9]},
    {histogram: {bins: 32, range: [0, 1]}}], ...}`` (a single item need not be in a list).

    Raises:
        ScenarioError: naming the key, what was expected and what was given.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ScenarioError(f"expected a mapping of field names to summaries ({', '.join(KINDS)}),"
                            f" given {spec!r}", key=key)
    found: list[Summary] = []
    for field, items in spec.items():
        if not isinstance(field, str):
            raise ScenarioError(f"expected a field name, given {field!r}", key=key)
        where = f"{key}.{field}"
        for item in items if isinstance(items, list) else [items]:
            try:
                found.append(_parse_one(field, item, where))
            except ScenarioError as error:
                if error.key and error.key.startswith("summaries."):
                    raise ScenarioError(error.message,
                                        key=where + error.key.removeprefix(f"summaries.{field}")
                                        ) from None
                raise
    names = [s.name for s in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScenarioError(f"expected each summary once per field, given {twice[0]} twice",
                            key=key)
    return tuple(found)


def _parse_one(field: str, item: Any, key: str) -> Summary:
    if isinstance(item, str):
        if item in ("quantiles", "histogram"):
            raise ScenarioError(f"expected {{{item}: ...}} with its settings, given {item!r}",
                                key=key)
        return Summary(field, item)
    if isinstance(item, Mapping) and len(item) == 1:
        (kind, value), = item.items()
        if kind == "quantiles":
            if not isinstance(value, list):
                raise ScenarioError(f"expected a list of probabilities, given {value!r}",
                                    key=f"{key}.quantiles")
            return Summary(field, "quantiles", quantiles=tuple(value))
        if kind == "histogram":
            if not isinstance(value, Mapping) or "bins" not in value \
                    or set(value) - {"bins", "range"}:
                raise ScenarioError(f"expected {{bins: N[, range: [low, high]]}}, given {value!r}",
                                    key=f"{key}.histogram")
            low_high = value.get("range")
            if low_high is not None and not isinstance(low_high, list):
                raise ScenarioError(f"expected [low, high], given {low_high!r}",
                                    key=f"{key}.histogram.range")
            return Summary(field, "histogram", bins=value["bins"],
                           range=tuple(low_high) if low_high is not None else None)
        return Summary(field, str(kind))
    raise ScenarioError(f"expected a summary ({', '.join(SCALAR_KINDS)}, {{quantiles: [...]}}, "
                        f"{{histogram: {{bins: N, range: [low, high]}}}}), given {item!r}", key=key)

