"""Shared fixtures: tiny recipes and datasets, temporary roots, a temporary Dagster instance."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from compression_pipeline.settings import PROJECT_ROOT, Settings

DEFAULT_RECIPE = PROJECT_ROOT / "assets" / "digits.yaml"

# A recipe small enough for unit tests: a width-8 CNN, three epochs, a short benchmark protocol (a session of the
# 6 rounds an interval needs, 10 ms slices, in the 2 processes of the default).
TINY = {
    "name": "tiny",
    "dataset": {"source": "sklearn_digits", "seed": 0},
    "baseline": {"arch": "cnn", "width": 8, "epochs": 3, "lr": 0.003, "frameworks": ["torch"]},
    "gates": {"accuracy_floor": 0.3, "max_accuracy_drop": {"value": 0.2, "mode": "absolute"}},
    "variants": {"int8": {"from": "baseline", "method": "quantize_static", "samples": 64}},
    "benchmark": {"batch_sizes": [1, 4], "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0,
                  "slice_s": 0.01, "budget_s": 1.0},
}


# The digits written by ``digits_npz`` as a recipe's dataset: flat (n, 64) float rows of 8x8 images, values 0..16,
# labels 0..9 (declared, so a label outside them is a gate failure rather than a load error).
NPZ_DIGITS = {"source": "npz", "path": "digits.npz", "image_shape": [8, 8], "value_max": 16, "classes": list(range(10))}


def pytest_collection_modifyitems(config, items):
    """The long tests first, longest first: `make test` runs the suite on two pytest-xdist workers that steal work
    from each other, so the minutes-long ones start at once and the short ones fill the gaps around them."""

    def minutes(item) -> float:
        marks = [m for name in ("e2e", "browser") for m in item.iter_markers(name)]
        return max((m.kwargs.get("minutes", 1) for m in marks), default=0)

    items.sort(key=minutes, reverse=True)  # stable: file order among equals


@pytest.fixture
def tiny_recipe_dict():
    return copy.deepcopy(TINY)


@pytest.fixture
def roots(tmp_path) -> Settings:
    """Settings with empty recipe, data and artifact roots under tmp_path."""
    s = Settings(recipes_dir=tmp_path / "recipes", data_root=tmp_path / "data", artifact_root=tmp_path / "artifacts")
    for p in (s.recipes_dir, s.data_root, s.artifact_root):
        p.mkdir()
    return s


def write_recipe(settings: Settings, recipe: dict, filename: str | None = None) -> Path:
    path = settings.recipes_dir / (filename or f"{recipe['name']}.yaml")
    path.write_text(yaml.safe_dump(recipe))
    return path


def digits_npz(path: Path, mutate=None) -> Path:
    """Write scikit-learn's digits as an .npz dataset file, optionally mutated (X, y) -> (X, y)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(np.float64), d.target.astype(np.int64)
    if mutate:
        X, y = mutate(X.copy(), y.copy())
    np.savez(path, X=X, y=y)
    return path


@pytest.fixture(scope="session")
def digits_data():
    """(splits, InputSpec) of scikit-learn's digits as the default recipe prepares them."""
    from compression_pipeline import data
    from compression_pipeline.recipe import Dataset

    ds = Dataset()
    return data.preprocess(data.load_raw(ds, "."), ds)


@pytest.fixture(scope="session")
def digits_splits(digits_data):
    return digits_data[0]


@pytest.fixture(scope="session")
def digits_spec(digits_data):
    return digits_data[1]


def zoo_cnn_counts(channels: int, height: int, width: int, w: int, classes: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of the zoo CNN: conv3x3(w) conv3x3(2w) pool2 conv3x3(2w) fc(8w) fc(classes),
    counted by hand (weight MACs: biases and activations are not counted). Both frameworks build exactly this."""
    flat = 2 * w * (height // 2) * (width // 2)
    params = (9 * channels * w + w) + (9 * w * 2 * w + 2 * w) + (9 * 2 * w * 2 * w + 2 * w) + (flat * 8 * w + 8 * w) \
        + (8 * w * classes + classes)
    macs = height * width * 9 * (channels * w + w * 2 * w) + (height // 2) * (width // 2) * 9 * 2 * w * 2 * w \
        + flat * 8 * w + 8 * w * classes
    return params, macs


def fit(epochs: int, lr: float = 3e-3, seed: int = 0):
    from compression_pipeline.frameworks.base import Fit

    return Fit(epochs=epochs, lr=lr, seed=seed)


@pytest.fixture(scope="session")
def tiny_cnn(digits_data):
    """A factory of width-8 zoo CNNs (PyTorch) trained 3 epochs on digits (about 0.8 accuracy): trained once, and
    every call returns a fresh copy, so a test that compresses it in place never changes another test's model."""
    from compression_pipeline.frameworks import get
    from compression_pipeline.types import ZooModel

    parts, spec = digits_data
    fw = get("torch")
    model = fw.build(ZooModel(arch="cnn", width=8), spec, seed=0)
    fw.fit(model, parts, spec, fit(3))
    return lambda: fw.copy(model).eval()
