"""Model gates: the accuracy floor, the accuracy drop within the recipe's tolerance, export parity.

Each gate returns a ``Gate`` with the numbers it judged, so a failure is shown with its reasons.

The drop gate compares two models on the same test images (paired predictions) and states the drop with its
confidence interval (``stats.paired_drop``) and the number of test images. The recipe's ``decide`` says how the
interval is used: ``point`` passes when the measured drop is within the tolerance; ``upper_bound`` only when the whole
interval is, i.e. when the test set shows the drop is within tolerance at that confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compression_pipeline.recipe import Tolerance
from compression_pipeline.stats import PairedDrop


@dataclass
class Gate:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def accuracy_floor(accuracy: float, floor: float, runtime: str, n: int | None = None) -> Gate:
    ok = accuracy >= floor
    on = f" on {n} test images" if n else ""
    return Gate("accuracy_gate", ok,
                f"{runtime} test accuracy {accuracy:.4f}{on} {'>=' if ok else '<'} floor {floor:.4f}",
                {"accuracy": accuracy, "floor": floor, "runtime": runtime, **({"test_samples": n} if n else {})})


def accuracy_drop(paired: PairedDrop, tolerance: Tolerance, runtime: str) -> Gate:
    """Pass or fail the drop against the tolerance, by the tolerance's decision rule, with every number shown."""
    d, lo, hi = paired.in_mode(tolerance.mode)
    judged = d if tolerance.decide == "point" else hi
    ok = judged <= tolerance.value + 1e-12
    unit = "pp" if tolerance.mode == "absolute" else "% of the baseline accuracy"
    scale = 100.0
    rule = (f"rule point: the measured drop {scale * d:+.2f} {unit}" if tolerance.decide == "point" else
            f"rule upper_bound: the interval's top {scale * hi:+.2f} {unit}")
    text = (f"{runtime} test accuracy {paired.accuracy:.4f} vs baseline {paired.reference_accuracy:.4f}: "
            f"{paired.text()}; allowed {scale * tolerance.value:.2f} {unit} ({tolerance.mode}); {rule} "
            f"{'<=' if ok else '>'} {scale * tolerance.value:.2f}")
    if 0 < tolerance.value < 1.0 / paired.n and tolerance.mode == "absolute":
        text += (f". NOTE: the tolerance is smaller than one test image (1/{paired.n} = {100 / paired.n:.2f} pp): "
                 "the test set cannot resolve it")
    return Gate("accuracy_gate", ok, text,
                {"accuracy": paired.accuracy, "baseline_accuracy": paired.reference_accuracy,
                 "drop_absolute": paired.drop, "drop_relative": paired.in_mode("relative")[0],
                 "drop_ci_low": lo, "drop_ci_high": hi, "ci_mode": tolerance.mode, "confidence": paired.confidence,
                 "test_samples": paired.n, "images_worse": paired.worse, "images_better": paired.better,
                 "tolerance": tolerance.value, "tolerance_mode": tolerance.mode, "decide": tolerance.decide,
                 "runtime": runtime})


def parity(max_abs_diff: float, atol: float, argmax_agreement: float, runtime: str = "ONNX Runtime",
           source: str = "source model") -> Gate:
    ok = max_abs_diff <= atol
    return Gate("parity", ok, f"max |logit difference| {runtime} vs {source} {max_abs_diff:.2e} "
                              f"{'<=' if ok else '>'} {atol:.1e}; argmax agreement {argmax_agreement:.4f}",
                {"max_abs_diff": max_abs_diff, "atol": atol, "argmax_agreement": argmax_agreement, "runtime": runtime})
