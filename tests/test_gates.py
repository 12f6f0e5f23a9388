"""Accuracy gates on a finite test set: the paired drop, its interval, the decision rule, and tolerances a test set
cannot resolve (refused when the recipe loads, where the test set's size is known then)."""

import numpy as np
import pytest

from compression_pipeline import gates as G
from compression_pipeline.errors import RecipeError
from compression_pipeline.recipe import Tolerance, parse_recipe
from compression_pipeline.stats import paired_drop, smallest_upper_bound


def _pair(n: int, worse: int, better: int, wrong_both: int = 0):
    """Predictions on n images (labels all 0): the reference right except ``better + wrong_both`` images; the model
    wrong on ``worse`` images the reference gets right, right on ``better`` it gets wrong."""
    y = np.zeros(n, dtype=int)
    ref, pred = y.copy(), y.copy()
    ref[:better] = 1
    ref[better:better + wrong_both] = pred[better:better + wrong_both] = 1
    pred[better + wrong_both:better + wrong_both + worse] = 1
    return pred, ref, y


def test_paired_drop_counts_and_interval():
    p = paired_drop(*_pair(360, worse=9, better=3))
    assert (p.n, p.worse, p.better) == (360, 9, 3)
    assert p.drop == pytest.approx(6 / 360)
    # Agresti-Min by hand: cells + 1/2, n + 2, Wald with z = 1.96
    w, b, n = 9.5, 3.5, 362
    se = np.sqrt((w + b) - (w - b) ** 2 / n) / n
    assert (p.ci_low, p.ci_high) == pytest.approx(((w - b) / n - 1.959964 * se, (w - b) / n + 1.959964 * se))
    assert p.ci_low < 0 < p.drop < p.ci_high  # six images net on 360: not distinguishable from no drop
    assert "n=360" in p.text() and "9 images worse, 3 better" in p.text()


def test_interval_shrinks_with_the_test_set_and_is_sensible_without_disagreement():
    small, large = paired_drop(*_pair(360, 9, 3)), paired_drop(*_pair(36000, 900, 300))
    assert small.drop == pytest.approx(large.drop)
    assert (large.ci_high - large.ci_low) < 0.15 * (small.ci_high - small.ci_low)
    same = paired_drop(*_pair(360, 0, 0))
    assert same.drop == 0 and same.ci_low < 0 < same.ci_high  # identical predictions: a narrow interval, not [0, 0]
    assert same.ci_high == pytest.approx(smallest_upper_bound(360))


def test_paired_drop_needs_the_same_test_set():
    with pytest.raises(ValueError, match="same non-empty test set"):
        paired_drop(np.zeros(5), np.zeros(6), np.zeros(5))


@pytest.mark.parametrize("decide, value, passed", [("point", 0.02, True), ("point", 0.01, False),
                                                   ("upper_bound", 0.02, False), ("upper_bound", 0.04, True)])
def test_decision_rules(decide, value, passed):
    p = paired_drop(*_pair(360, worse=9, better=3))  # drop 1.67 pp, interval top about 3.6 pp
    gate = G.accuracy_drop(p, Tolerance(value=value, decide=decide), "onnxruntime")
    assert gate.passed is passed
    assert f"rule {decide}" in gate.description and "95% CI" in gate.description and "n=360" in gate.description
    assert gate.metadata["test_samples"] == 360 and gate.metadata["decide"] == decide
    assert gate.metadata["drop_ci_low"] < gate.metadata["drop_absolute"] < gate.metadata["drop_ci_high"]


def test_relative_mode_scales_the_drop_and_its_interval():
    p = paired_drop(*_pair(1000, worse=30, better=10, wrong_both=490))  # reference 0.5 accuracy, drop 2 pp
    gate = G.accuracy_drop(p, Tolerance(value=0.05, mode="relative"), "torch")
    assert gate.metadata["drop_relative"] == pytest.approx(0.04) and gate.passed
    assert gate.metadata["drop_ci_high"] == pytest.approx(p.ci_high / p.reference_accuracy)
    assert not G.accuracy_drop(p, Tolerance(value=0.03, mode="relative"), "torch").passed


def test_a_tolerance_below_one_image_is_said_loudly_in_the_gate():
    p = paired_drop(*_pair(100, 0, 0))
    gate = G.accuracy_drop(p, Tolerance(value=0.005), "torch")
    assert "smaller than one test image" in gate.description and "1/100" in gate.description


def _recipe(tiny_recipe_dict, **tolerance):
    tiny_recipe_dict["gates"]["max_accuracy_drop"] = tolerance
    return tiny_recipe_dict


def test_unresolvable_tolerances_are_refused_at_load(tiny_recipe_dict):
    # digits' test split is 360 images: one image is 0.28 points
    with pytest.raises(RecipeError, match="smaller than one test image \\(1/360") as e:
        parse_recipe(_recipe(tiny_recipe_dict, value=0.001))
    assert e.value.location == "gates.max_accuracy_drop.value"
    with pytest.raises(RecipeError, match="can never pass on 360 test images") as e:
        parse_recipe(_recipe(tiny_recipe_dict, value=0.004, decide="upper_bound"))
    assert e.value.location == "gates.max_accuracy_drop.decide"
    assert parse_recipe(_recipe(tiny_recipe_dict, value=0.0)).gates.max_accuracy_drop.value == 0.0  # no drop at all
    assert parse_recipe(_recipe(tiny_recipe_dict, value=0.03, decide="upper_bound"))


def test_a_variant_tolerance_is_checked_too(tiny_recipe_dict):
    tiny_recipe_dict["variants"]["int8"]["max_accuracy_drop"] = {"value": 0.002}
    with pytest.raises(RecipeError) as e:
        parse_recipe(tiny_recipe_dict)
    assert e.value.location == "variants.int8.max_accuracy_drop.value"
