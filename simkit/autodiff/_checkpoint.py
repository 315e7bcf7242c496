"""How reverse mode keeps the states it needs: store every step, O(sqrt n) segment starts, or a
binomial schedule over a chosen number of stored states."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from simkit.autodiff._revolve import BinomialSchedule, binomial_schedule
from simkit.errors import ScenarioError

CHECKPOINT_FORMS = ("all", "sqrt", "{binomial: N}")


@dataclass(frozen=True)
class Checkpointing:
    """A reverse-mode memory policy.

    ``all`` keeps what every step needs for its backward pass (n states); ``sqrt`` cuts the run
    into segments of about sqrt(n) steps, keeps only each segment's first state and recomputes a
    segment's steps while going backward through it, so about 2 sqrt(n) states are held at once
    for one extra forward pass. ``binomial`` (Griewank's revolve) holds at most ``slots`` states
    (the initial one among them) plus the working state, and recomputes the fewest steps any
    schedule with that many can: with s slots and r repetitions it reverses C(s+r, s) steps.
    Fewer slots mean more recomputation (n(n-1)/2 steps with one); reverse mode only.
    """

    kind: Literal["all", "sqrt", "binomial"] = "sqrt"
    slots: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("all", "sqrt", "binomial"):
            raise ScenarioError(f"expected one of {', '.join(CHECKPOINT_FORMS)}, given "
                                f"{self.kind!r}", key="checkpoint")
        if self.kind == "binomial":
            slots = self.slots
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                raise ScenarioError(f"expected {{binomial: N}} with N an integer of at least 1 "
                                    f"(the states stored), given {{'binomial': {slots!r}}}",
                                    key="checkpoint")
        elif self.slots is not None:
            raise ScenarioError(f"expected slots only with binomial, given {self.kind!r} with "
                                f"slots {self.slots!r}", key="checkpoint")

    @classmethod
    def parse(cls, value: Any) -> Checkpointing:
        """The policy written as ``"all"``, ``"sqrt"`` or ``{"binomial": N}``.

        Raises:
            ScenarioError: naming ``checkpoint``, for any other value, and for N that is not an
                integer of at least 1.
        """
        if isinstance(value, Checkpointing):
            return value
        if isinstance(value, dict) and list(value) == ["binomial"]:
            return cls("binomial", value["binomial"])
        if value not in ("all", "sqrt"):
            raise ScenarioError(f"expected one of {', '.join(CHECKPOINT_FORMS)}, given "
                                f"{value!r}", key="checkpoint")
        return cls(value)

    @property
    def form(self) -> str | dict[str, int | None]:
        """The policy as written: ``"all"``, ``"sqrt"`` or ``{"binomial": N}``."""
        return {"binomial": self.slots} if self.kind == "binomial" else self.kind

    def __str__(self) -> str:
        return f"{{binomial: {self.slots}}}" if self.kind == "binomial" else self.kind

    @property
    def remat(self) -> bool:
        """Whether ``sqrt`` segments are recomputed on the way back (else their states are
        stored)."""
        return self.kind == "sqrt"

    def segment_length(self, steps: int) -> int:
        """Steps per segment for a run of ``steps`` steps under ``all`` and ``sqrt`` (both cut
        alike, so they compute the same arithmetic and differ only in what they store)."""
        return max(1, math.isqrt(max(steps, 1) - 1) + 1)

    def schedule(self, steps: int) -> BinomialSchedule:
        """The binomial schedule of a run of ``steps`` steps (at least 1)."""
        if self.slots is None:
            raise ValueError(f"expected a binomial policy, given {self.kind!r}")
        return binomial_schedule(steps, self.slots)

    def states_held(self, steps: int) -> int:
        """How many states the backward pass holds at most: every step's under ``all``; segment
        starts plus one segment's states under ``sqrt``; the stored states (at most N) plus the
        working state under ``binomial``."""
        if self.kind == "all":
            return steps + 1
        if self.kind == "binomial":
            return self.schedule(steps).states_held if steps >= 1 else 1
        length = self.segment_length(steps)
        return -(-steps // length) + length
