"""Statistics of accuracy on a finite test set: the paired drop of one model against another and its interval.

The interval is the Agresti-Min interval for a difference of paired proportions (Agresti & Min 2005: add 1/2 to
each cell of the 2x2 table of right/wrong, then a Wald interval). It depends only on the images where the two
models disagree, stays sensible when they never disagree, and needs no resampling.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class PairedDrop:
    """The accuracy drop of a model against a reference on the same ``n`` test images, with its interval."""

    n: int
    reference_accuracy: float
    accuracy: float
    worse: int  # images the reference gets right and the model wrong
    better: int  # images the model gets right and the reference wrong
    ci_low: float  # the drop's confidence interval, in points of accuracy (fractions)
    ci_high: float
    confidence: float

    @property
    def drop(self) -> float:
        return self.reference_accuracy - self.accuracy

    def in_mode(self, mode: str) -> tuple[float, float, float]:
        """(drop, low, high) in the tolerance's mode: points of accuracy, or a share of the reference accuracy."""
        scale = 1.0 if mode == "absolute" else 1.0 / max(self.reference_accuracy, 1e-12)
        return self.drop * scale, self.ci_low * scale, self.ci_high * scale

    def text(self) -> str:
        """'drop +1.67 pp (95% CI -0.31 .. +3.60, n=360; 9 images worse, 3 better)'."""
        return (f"drop {100 * self.drop:+.2f} pp ({100 * self.confidence:.0f}% CI {100 * self.ci_low:+.2f} .. "
                f"{100 * self.ci_high:+.2f}, n={self.n}; {self.worse} images worse, {self.better} better)")

    def as_dict(self) -> dict:
        return {"test_samples": self.n, "accuracy_drop": self.drop, "accuracy_drop_ci": [self.ci_low, self.ci_high],
                "confidence": self.confidence, "images_worse": self.worse, "images_better": self.better}


def paired_drop(pred: np.ndarray, reference_pred: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> PairedDrop:
    """The drop of ``pred`` against ``reference_pred`` (predicted labels for the same test labels ``y``)."""
    pred, reference_pred, y = (np.asarray(a).reshape(-1) for a in (pred, reference_pred, y))
    if not len(pred) == len(reference_pred) == len(y) or len(y) == 0:
        raise ValueError(f"paired predictions need the same non-empty test set: {len(pred)} model predictions, "
                         f"{len(reference_pred)} reference predictions, {len(y)} labels")
    ok, ref_ok = pred == y, reference_pred == y
    n, worse, better = len(y), int((ref_ok & ~ok).sum()), int((ok & ~ref_ok).sum())
    # Agresti-Min: half an observation added to each of the four cells (n + 2 in all), then Wald.
    n_adj, w, b = n + 2.0, worse + 0.5, better + 0.5
    centre = (w - b) / n_adj
    se = math.sqrt(max((w + b) - (w - b) ** 2 / n_adj, 0.0)) / n_adj
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return PairedDrop(n, float(ref_ok.mean()), float(ok.mean()), worse, better, centre - z * se, centre + z * se,
                      confidence)


def smallest_upper_bound(n: int, confidence: float = 0.95) -> float:
    """The lowest interval top any model can reach on ``n`` images (it agrees with the reference everywhere): an
    ``upper_bound`` tolerance below it can never pass."""
    return NormalDist().inv_cdf(0.5 + confidence / 2) / (n + 2.0)


# --- ratios of latencies measured in interleaved rounds ---------------------------------------------------------
def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, int, float] | None:
    """(k, l, coverage): the 1-based ranks of the order statistics that bound the median of ``n`` values with at
    least ``confidence`` (the sign-test interval: distribution-free, no resampling), and the exact coverage; None
    when ``n`` is too small for that confidence (below 6 values at 95 %)."""
    best = None
    for k in range(1, n // 2 + 1):
        tail = sum(math.comb(n, i) for i in range(k)) / 2.0 ** n  # P(Binomial(n, 1/2) <= k - 1)
        if 1 - 2 * tail >= confidence:
            best = (k, n - k + 1, 1 - 2 * tail)
    return best


def rounds_needed(confidence: float = 0.95) -> int:
    """The fewest values whose median has an interval at ``confidence``."""
    n = 1
    while median_ranks(n, confidence) is None:
        n += 1
    return n


@dataclass(frozen=True)
class RoundRatio:
    """The ratio of two cells' latencies (``reference / cell``: a speedup when above 1) from rounds in which both
    were timed: the median of the per-round ratios and its sign-test interval."""

    value: float
    ci_low: float
    ci_high: float
    rounds: int
    confidence: float  # the requested confidence; ``coverage`` is the interval's exact one
    coverage: float

    @property
    def half_width(self) -> float:
        """The interval's half-width relative to the ratio."""
        return (self.ci_high - self.ci_low) / (2 * self.value)

    @property
    def resolved(self) -> bool:
        """The interval excludes 1: one cell is faster than the other at this confidence."""
        return self.ci_low > 1.0 or self.ci_high < 1.0

    def as_dict(self) -> dict:
        return {"value": self.value, "ci": [self.ci_low, self.ci_high], "rounds": self.rounds,
                "confidence": self.confidence, "coverage": self.coverage, "resolved": self.resolved}


def round_ratio(reference_rounds, cell_rounds, confidence: float = 0.95, blocks=None) -> RoundRatio | None:
    """``reference / cell`` per round (the two lists pair by round), or None with too few rounds for an interval.

    ``blocks``: how many of the rounds each process timed, in order (the session runs its rounds in several
    processes). Each process's own median ratio then also lies inside the interval: what a process draws once (its
    memory placement, the core its threads start on) shifts all of its rounds alike, which no interval of pooled
    rounds can show, and the spread between processes is the measure of it."""
    a, b = np.asarray(reference_rounds, dtype=float), np.asarray(cell_rounds, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"per-round values pair by round: {len(a)} against {len(b)}")
    ranks = median_ranks(len(a), confidence)
    if ranks is None:
        return None
    per_round = a / b
    ratios = np.sort(per_round)
    k, j, coverage = ranks
    low, high = float(ratios[k - 1]), float(ratios[j - 1])
    if blocks and len(blocks) > 1 and sum(blocks) == len(a):
        edges = np.cumsum([0, *blocks])
        medians = [float(np.median(per_round[s:e])) for s, e in itertools.pairwise(edges) if e > s]
        low, high = min([low, *medians]), max([high, *medians])
    return RoundRatio(float(np.median(ratios)), low, high, len(a), confidence, coverage)
