"""Serves the chapters: one rule, used by every chapter, for "is this difference beyond the seed spread?".

A difference between two recipes counts only if the gap between their mean accuracies is larger than
the larger of their two seed ranges (max − min over seeds), and each has at least two seeds; with one
seed on either side the spread is unknown, and the verdict says so. `remarks` says what a comparison
should not hide: a student above its teacher, validation and test images that disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Verdict:
    """The outcome of `compare_seeds`: accuracies in the unit they were given (e.g. points)."""

    gap: float  # mean(b) − mean(a)
    spread: float | None  # the larger seed range (max − min) of the two; None with a single seed
    seeds: tuple[int, int]  # seeds of a and of b
    beyond: bool | None  # True: beyond the spread; False: within it; None: one seed, cannot tell
    names: tuple[str, str] = ("A", "B")

    @property
    def text(self) -> str:
        head = f"{self.names[1]} − {self.names[0]} = {self.gap:+.2f} points"
        if self.beyond is None:
            return f"{head} ({self.seeds[0]} and {self.seeds[1]} seed(s)): one seed is not enough to tell"
        side = "beyond" if self.beyond else "within"
        return (f"{head} over {self.seeds[0]} and {self.seeds[1]} seeds: {side} the seed spread "
                f"(the larger seed range is {self.spread:.2f} points)")  # fmt: skip

    def __str__(self) -> str:
        return self.text


def compare_seeds(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("A", "B")) -> Verdict:
    """Is mean(b) − mean(a) beyond the seed spread? `a`, `b`: one accuracy per seed (same unit)."""
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_.size == 0 or b_.size == 0:
        raise ValueError("compare_seeds needs at least one accuracy on each side")
    gap, seeds = float(b_.mean() - a_.mean()), (int(a_.size), int(b_.size))
    if min(seeds) < 2:
        return Verdict(gap, None, seeds, None, names)
    spread = float(max(np.ptp(a_), np.ptp(b_)))
    return Verdict(gap, spread, seeds, abs(gap) > spread, names)


def signed(value: float, digits: int = 2) -> str:
    """'+1.25' or '-0.40', '0.00' (never '-0.00' or '+0.00') where it rounds to zero; 'nan' if missing."""
    value = float(value)
    if not np.isfinite(value):
        return "nan"
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def remarks(frame: Any, baseline: str = "CE") -> list[str]:
    """Sentences about what a comparison of recipes should not hide, computed from the runs.

    `frame`: one row per run with the columns `row` ("teacher" for the teacher), `test_acc` and `val_acc`
    (fractions), as `reports.runs_frame` gives them. Says which student recipe ends above its teacher
    (means over seeds), and where validation and test images disagree about the sign of a recipe's gap
    to `baseline` or about the best recipe.
    """
    if frame is None or len(frame) == 0:
        return []
    test = frame.groupby("row", sort=False)["test_acc"].mean().astype(float) * 100
    teacher = test.pop("teacher") if "teacher" in test else np.inf
    lines = [
        f"{row} ends above its teacher: {acc:.2f}% against {teacher:.2f}% on the test set "
        f"({signed(acc - teacher)} points). A student can pass a teacher it learns from: the labels teach it "
        "too, and the teacher's soft targets are a regulariser, not a ceiling."
        for row, acc in test.items() if acc > teacher
    ]  # fmt: skip
    if "val_acc" not in frame or baseline not in test:
        return lines
    val = frame[frame["row"] != "teacher"].groupby("row", sort=False)["val_acc"].mean().astype(float) * 100
    if val.isna().any():
        return lines
    for row in test.index.drop(baseline):
        a, b = signed(val[row] - val[baseline]), signed(test[row] - test[baseline])
        if a != "0.00" and b != "0.00" and (a[0] == "-") != (b[0] == "-"):
            lines.append(
                f"{row} − {baseline} is {a} points on the validation images but {b} on the test images: "
                "the two held-out sets disagree about which is better, so the gap is smaller than what "
                "one set of images can measure."
            )
    if len(test) > 1 and val.idxmax() != test.idxmax():
        lines.append(
            f"The best recipe on the validation images is {val.idxmax()} ({val.max():.2f}%), on the test "
            f"images {test.idxmax()} ({test.max():.2f}%): choosing by validation, as one should, picks "
            f"{val.idxmax()}."
        )
    return lines
