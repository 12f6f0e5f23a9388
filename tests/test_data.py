"""Dataset loading, preprocessing and the Great Expectations gates, on the real digits data."""

import numpy as np
import pytest

from compression_pipeline import data, quality
from compression_pipeline.errors import DatasetError, PipelineError
from compression_pipeline.recipe import Dataset
from compression_pipeline.types import InputSpec

from conftest import digits_npz

DIGITS_SPEC = InputSpec(kind="image", shape=(1, 8, 8), scale=1 / 16, class_names=[str(i) for i in range(10)])


def test_splits_are_seeded_stratified_and_scaled(digits_splits):
    s = digits_splits
    assert [len(s[f"y_{k}"]) for k in data.SPLITS] == [1167, 270, 360]
    assert all(s[f"X_{k}"].dtype == np.float32 and s[f"X_{k}"].shape[1:] == (1, 8, 8) for k in data.SPLITS)
    assert 0.0 <= s["X_train"].min() and s["X_train"].max() <= 1.0
    # stratified: every class within 1.5 points of its share in each split
    for k in data.SPLITS:
        shares = np.bincount(s[f"y_{k}"], minlength=10) / len(s[f"y_{k}"])
        assert np.abs(shares - 0.1).max() < 0.015
    again, spec = data.preprocess(data.load_raw(Dataset(), "."), Dataset())
    assert all(np.array_equal(again[k], s[k]) for k in s)
    assert spec == DIGITS_SPEC  # 1 channel of 8x8, values 0..16 scaled by 1/16, no normalization
    # the same numbers as before (flat (n, 64) rows, float64 / 16, the same seeded stratified split), reshaped
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    rest, test = train_test_split(np.arange(1797), test_size=0.2, random_state=0, stratify=d.target)
    train, val = train_test_split(rest, test_size=0.15 / 0.8, random_state=0, stratify=d.target[rest])
    for name, idx in (("train", train), ("val", val), ("test", test)):
        old = (d.data / 16.0).astype(np.float32)[np.sort(idx)]
        assert np.array_equal(s[f"X_{name}"].reshape(len(idx), 64), old)
        assert np.array_equal(s[f"y_{name}"], d.target[np.sort(idx)])


def test_npz_source_reads_inside_the_data_root_only(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    digits_npz(root / "d.npz")
    raw = data.load_raw(Dataset(source="npz", path="d.npz", image_shape=(8, 8)), root)
    assert raw.X.shape == (1797, 1, 8, 8) and raw.source.endswith("d.npz") and raw.kind == "image"
    assert data.load_raw(Dataset(source="npz", path="d.npz"), root).X.shape == (1797, 64)  # undeclared: vectors
    digits_npz(tmp_path / "outside.npz")
    # A recipe with '..' is refused when it loads (test_bad_recipes); the reader refuses it again on its own.
    with pytest.raises(PipelineError, match="outside the allowed root"):
        data.load_raw(Dataset.model_construct(source="npz", path="../outside.npz", image_shape=(8, 8)), root)
    (root / "link.npz").symlink_to(tmp_path / "outside.npz")
    with pytest.raises(PipelineError, match="outside the allowed root"):
        data.load_raw(Dataset(source="npz", path="link.npz"), root)


@pytest.mark.parametrize("make, problem", [
    (None, "file not found"),
    (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "not a readable .npz"),
    (lambda p: np.savez(p, X=np.zeros((5, 64))), "missing arrays ['y']"),
    (lambda p: np.savez(p, X=np.zeros((5, 10)), y=np.zeros(5, int)), "X has shape (5, 10)"),
    (lambda p: np.savez(p, X=np.zeros((5, 64)), y=np.zeros(4, int)), "y has shape (4,)"),
    (lambda p: np.savez(p, X=np.zeros((5, 64)), y=np.zeros(5)), "y has dtype float64"),
    (lambda p: np.savez(p, X=np.zeros((0, 64)), y=np.zeros(0, int)), "no rows"),
])
def test_bad_dataset_files_name_file_and_problem(tmp_path, make, problem):
    path = tmp_path / "bad.npz"
    if make:
        make(path)
    with pytest.raises(DatasetError) as exc:
        data.load_raw(Dataset(source="npz", path="bad.npz", image_shape=(8, 8)), tmp_path)
    assert str(path) in str(exc.value) and problem in str(exc.value)


def test_quality_gates_pass_on_clean_splits(digits_splits):
    out = quality.validate_splits(digits_splits, DIGITS_SPEC, 100, 0.05)
    assert set(out) == set(quality.GATES)
    assert all(o.passed for o in out.values()), {g: o.failed for g, o in out.items()}
    # per split 5 on the labels and 4 on the values, and one leakage expectation
    assert sum(len(o.expectations) for o in out.values()) == 28
    assert out["value_range"].notes == ["values on train 1167 of 1167, val 270 of 270, test 360 of 360 rows",
                                        "images in [0, 1]"]


def _broken(splits, **changes):
    s = {k: v.copy() for k, v in splits.items()}
    for fn in changes.values():
        fn(s)
    return quality.validate_splits(s, DIGITS_SPEC, 100, 0.05)


@pytest.mark.parametrize("change, gate, detail", [
    (lambda s: s["X_train"].__setitem__((3, 0, 0, 5), np.nan), "no_missing", {"row": "3", "channel": "0"}),
    (lambda s: s["X_val"].__setitem__((0, 0, 0, 0), np.inf), "value_range", {"row": "0", "channel": "0"}),
    (lambda s: s["X_test"].__setitem__((2, 0, 0, 7), 3.0), "value_range", {"row": "2", "channel": "0"}),
    (lambda s: s["y_val"].__setitem__(0, 11), "labels", {"row": "0", "label": "11"}),
    (lambda s: s["X_test"].__setitem__(0, s["X_train"][0]), "no_leakage", {"row": "0"}),
    (lambda s: s.update(X_train=s["X_train"][:50], y_train=s["y_train"][:50]), "row_counts", None),
    (lambda s: s.update(y_train=np.where(s["y_train"] < 5, 0, s["y_train"])), "class_balance", None),
    (lambda s: s.update(X_train=s["X_train"].astype(np.float64)), "schema", None),
])
def test_quality_gates_catch_bad_splits(digits_splits, change, gate, detail):
    out = _broken(digits_splits, c=change)
    assert not out[gate].passed
    failed = out[gate].failed
    assert failed and all(not e["success"] for e in failed)
    if detail:
        assert any(detail.items() <= ex.items() for e in failed for ex in e.get("examples", []) if isinstance(ex, dict))
    others = [g for g, o in out.items() if not o.passed and g != gate]
    assert set(others) <= {"labels", "class_balance", "schema", "no_missing", "value_range"}
