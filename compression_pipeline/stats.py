"""Statistics of accuracy on a finite test set: the paired drop of one model against another and its interval.

The interval is the Agresti-Min interval for a difference of paired proportions (Agresti & Min 2005: add 1/2 to
each cell of the 2x2 table of right/wrong, then a Wald interval). It depends only on the images where the two
models disagree, stays sensible when they never disagree, and needs no resampling.
"""

from __future__ import annotations

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
