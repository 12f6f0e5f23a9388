"""Model gates: the accuracy floor, the accuracy drop within the recipe's tolerance, export parity.

Each gate returns a ``Gate`` with the numbers it judged, so a failure is shown with its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compression_pipeline.recipe import Tolerance, drop


@dataclass
class Gate:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def accuracy_floor(accuracy: float, floor: float, runtime: str) -> Gate:
    ok = accuracy >= floor
    return Gate("accuracy_gate", ok, f"{runtime} test accuracy {accuracy:.4f} {'>=' if ok else '<'} floor {floor:.4f}",
                {"accuracy": accuracy, "floor": floor, "runtime": runtime})


def accuracy_drop(accuracy: float, reference: float, tolerance: Tolerance, runtime: str) -> Gate:
    d_abs, d_rel = drop(reference, accuracy, "absolute"), drop(reference, accuracy, "relative")
    ok = tolerance.allows(reference, accuracy)
    unit = "points" if tolerance.mode == "absolute" else "of the baseline accuracy"
    return Gate("accuracy_gate", ok,
                f"{runtime} test accuracy {accuracy:.4f} vs baseline {reference:.4f}: drop {d_abs:+.4f} "
                f"({d_rel:+.2%} relative); allowed {tolerance.value} {unit} ({tolerance.mode})",
                {"accuracy": accuracy, "baseline_accuracy": reference, "drop_absolute": d_abs,
                 "drop_relative": d_rel, "tolerance": tolerance.value, "tolerance_mode": tolerance.mode,
                 "runtime": runtime})


def parity(max_abs_diff: float, atol: float, argmax_agreement: float, runtime: str = "ONNX Runtime",
           source: str = "source model") -> Gate:
    ok = max_abs_diff <= atol
    return Gate("parity", ok, f"max |logit difference| {runtime} vs {source} {max_abs_diff:.2e} "
                              f"{'<=' if ok else '>'} {atol:.1e}; argmax agreement {argmax_agreement:.4f}",
                {"max_abs_diff": max_abs_diff, "atol": atol, "argmax_agreement": argmax_agreement, "runtime": runtime})
