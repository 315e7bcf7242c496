"""How reverse mode keeps the states it needs: store every step, or O(sqrt n) segment starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from simkit.errors import ScenarioError

CHECKPOINT_FORMS = ("all", "sqrt", "{binomial: N}")


@dataclass(frozen=True)
class Checkpointing:
    """A reverse-mode memory policy.

    ``all`` keeps what every step needs for its backward pass (n states); ``sqrt`` cuts the run
    into segments of about sqrt(n) steps, keeps only each segment's first state and recomputes a
    segment's steps while going backward through it, so about 2 sqrt(n) states are held at once
    for one extra forward pass. Binomial checkpointing (a given number of slots) is not available
    yet and is refused by name.
    """

    kind: Literal["all", "sqrt"] = "sqrt"

    def __post_init__(self) -> None:
        if self.kind not in ("all", "sqrt"):
            raise ScenarioError(f"expected one of {', '.join(CHECKPOINT_FORMS[:2])}, given "
                                f"{self.kind!r}", key="checkpoint")

    @classmethod
    def parse(cls, value: Any) -> Checkpointing:
        """The policy written as ``"all"``, ``"sqrt"`` or ``{"binomial": N}``.

        Raises:
            ScenarioError: naming ``checkpoint``, for any other value, and for binomial
                checkpointing, which is not implemented yet.
        """
        if isinstance(value, Checkpointing):
            return value
        if isinstance(value, dict) and list(value) == ["binomial"]:
            raise ScenarioError(f"binomial checkpointing is not available yet; expected 'sqrt' "
                                f"(O(sqrt n) states) or 'all', given {value!r}", key="checkpoint")
        if value not in ("all", "sqrt"):
            raise ScenarioError(f"expected one of {', '.join(CHECKPOINT_FORMS)}, given "
                                f"{value!r}", key="checkpoint")
        return cls(value)

    @property
    def remat(self) -> bool:
        """Whether segments are recomputed on the way back (else their states are stored)."""
        return self.kind == "sqrt"

    def segment_length(self, steps: int) -> int:
        """Steps per segment for a run of ``steps`` steps (both policies cut alike, so they
        compute the same arithmetic and differ only in what they store)."""
        return max(1, math.isqrt(max(steps, 1) - 1) + 1)

    def states_held(self, steps: int) -> int:
        """How many states the backward pass holds at most: segment starts plus one segment's
        states under ``sqrt``; every step's under ``all``."""
        if not self.remat:
            return steps + 1
        length = self.segment_length(steps)
        return -(-steps // length) + length
