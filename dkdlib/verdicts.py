"""One rule, used by every chapter, for "is this difference beyond the seed-to-seed spread?".

A student's accuracy moves from seed to seed (initial weights, batch order, augmentation). The rule:

    a difference between two recipes counts only if the gap between their mean accuracies is larger
    than the larger of their two seed ranges (max − min over seeds), and each has at least two seeds.

With one seed on either side the spread is unknown, and the verdict says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Verdict", "compare_seeds"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of `compare_seeds`: accuracies in the unit they were given (e.g. points)."""

    gap: float  # mean(b) − mean(a)
    spread: float | None  # the larger seed range (max − min) of the two; None with a single seed
    seeds: tuple[int, int]  # seeds of a and of b
    beyond: bool | None  # True: beyond the spread; False: within it; None: one seed, cannot tell
    names: tuple[str, str] = ("A", "B")

    @property
    def judgement(self) -> str:
        """The verdict without the gap: 'beyond the seed spread (…)', 'within …' or 'one seed …'."""
        if self.beyond is None:
            return "one seed is not enough to tell"
        side = "beyond" if self.beyond else "within"
        return f"{side} the seed spread (the larger seed range is {self.spread:.2f} points)"

    @property
    def text(self) -> str:
        a, b = self.names
        head = f"{b} − {a} = {self.gap:+.2f} points"
        if self.beyond is None:
            return f"{head} ({self.seeds[0]} and {self.seeds[1]} seed(s)): {self.judgement}"
        return f"{head} over {self.seeds[0]} and {self.seeds[1]} seeds: {self.judgement}"

    def __str__(self) -> str:
        return self.text


def compare_seeds(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("A", "B")) -> Verdict:
    """Is mean(b) − mean(a) beyond the seed spread? `a`, `b`: one accuracy per seed (same unit)."""
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_.size == 0 or b_.size == 0:
        raise ValueError("compare_seeds needs at least one accuracy on each side")
    gap = float(b_.mean() - a_.mean())
    seeds = (int(a_.size), int(b_.size))
    if min(seeds) < 2:
        return Verdict(gap, None, seeds, None, names)
    spread = float(max(np.ptp(a_), np.ptp(b_)))
    return Verdict(gap, spread, seeds, abs(gap) > spread, names)
