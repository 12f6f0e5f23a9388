"""Preprocessing: a seeded, stratified train/val/test split (a source's own test split is kept), values scaled by
1/value_max into float32 in the canonical layout, and the input specification (with its normalization) that travels
with the splits. Stored splits stay un-normalized, so the gates see the scaled values; ``batches.feed`` normalizes.
"""

from __future__ import annotations

import math

import numpy as np

from compression_pipeline.data.sources import BUILTIN_ROWS, RawData
from compression_pipeline.errors import DatasetError
from compression_pipeline.types import InputSpec

SPLITS = ("train", "val", "test")


def known_test_rows(dataset) -> int | None:
    """The test split's size when it is known without reading any file (a built-in dataset), else None."""
    n = BUILTIN_ROWS.get(dataset.source)
    if n is None:
        return None
    return math.ceil(dataset.split.test * min(n, dataset.max_rows or n))


def value_max(dataset, raw: RawData) -> float:
    """The declared value_max, else 255 for integer images and 1 for floating-point data or integer features."""
    if dataset.value_max:
        return float(dataset.value_max)
    return 255.0 if raw.kind == "image" and raw.X.dtype.kind in "iu" else 1.0


def preprocess(raw: RawData, dataset) -> tuple[dict[str, np.ndarray], InputSpec]:
    """The splits (X_train, y_train, X_val, y_val, X_test, y_test; X float32 (n, C, H, W) or (n, F), values scaled
    by 1/value_max) and their InputSpec. ``dataset`` is a ``recipe.Dataset``.

    A split that would be empty is an error here (the gates cannot judge an empty table); every other problem
    (labels, balance, duplicates, values) is left for the gates to report.
    """
    seed, source = dataset.seed, raw.source
    X, y, X_test, y_test = raw.X, raw.y, raw.X_test, raw.y_test
    if dataset.max_rows and dataset.max_rows < raw.rows:
        if X_test is None:
            keep = _subset(y, dataset.max_rows, seed)
        else:  # the same share of the source's train and test rows
            n_train = max(1, round(dataset.max_rows * len(X) / raw.rows))
            keep = _subset(y, n_train, seed)
            kept_test = _subset(y_test, max(1, dataset.max_rows - n_train), seed)
            X_test, y_test = X_test[kept_test], y_test[kept_test]
        X, y = X[keep], y[keep]
    if X_test is None:
        train, val, test = _split3(y, dataset, source)
        parts = {"train": train, "val": val, "test": test}
        arrays = {s: (X[i], y[i]) for s, i in parts.items()}
    else:
        train, val = _split2(y, dataset.split.val, seed, source)
        arrays = {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": (X_test, y_test)}
    vmax = value_max(dataset, raw)
    out = {}
    for s in SPLITS:
        out[f"X_{s}"], out[f"y_{s}"] = _scaled(arrays[s][0], vmax), arrays[s][1]
    mean = std = None
    if dataset.normalize == "train":
        mean, std = _train_stats(out["X_train"], source)
    elif not isinstance(dataset.normalize, str):
        mean, std = tuple(dataset.normalize.mean), tuple(dataset.normalize.std)
    spec = InputSpec(kind=raw.kind, shape=out["X_train"].shape[1:], scale=1.0 / vmax, mean=mean, std=std,
                     class_names=raw.class_names)
    return out, spec


def _scaled(X: np.ndarray, vmax: float) -> np.ndarray:
    if X.dtype.kind == "f":  # in the data's own precision, then float32 (what the splits held before)
        return np.ascontiguousarray((X / vmax).astype(np.float32))
    return np.ascontiguousarray(X.astype(np.float32) / np.float32(vmax))


def _stratified(idx: np.ndarray, y: np.ndarray, share, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, share) of ``idx``, stratified by ``y``; unstratified when some class has too few rows to stratify
    (the balance gates judge the result)."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(idx, test_size=share, random_state=seed, stratify=y)
    except ValueError:
        return train_test_split(idx, test_size=share, random_state=seed)


def _subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded, stratified choice of ``n`` of the rows (sorted)."""
    if n >= len(y):
        return np.arange(len(y))
    return np.sort(_stratified(np.arange(len(y)), y, n, seed)[1])


def _empty(source: str, n: int, sizes: dict, how: str) -> None:
    empty = [k for k, v in sizes.items() if v < 1]
    if empty:
        raise DatasetError(source, f"{n} rows leave the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
                                   f"empty ({how}); every split needs at least one row")


def _split3(y: np.ndarray, dataset, source: str):
    from sklearn.model_selection import train_test_split

    n, test, val = len(y), dataset.split.test, dataset.split.val
    val_share = val / (1 - test)
    n_test = math.ceil(test * n)  # the sizes train_test_split uses for a float test_size
    n_val = math.ceil(val_share * (n - n_test))
    _empty(source, n, {"train": n - n_test - n_val, "val": n_val, "test": n_test}, f"split val {val}, test {test}")
    idx = np.arange(n)

    def split(stratify):
        rest, te = train_test_split(idx, test_size=test, random_state=dataset.seed, stratify=stratify)
        tr, va = train_test_split(rest, test_size=val_share, random_state=dataset.seed,
                                  stratify=None if stratify is None else y[rest])
        return tr, va, te

    try:
        parts = split(y)
    except ValueError:  # too few rows of some class to stratify: split unstratified; the balance gates judge it
        parts = split(None)
    return tuple(np.sort(p) for p in parts)


def _split2(y: np.ndarray, val: float, seed: int, source: str):
    """Validation rows out of a source's training rows (its test split is kept as given)."""
    n, n_val = len(y), math.ceil(val * len(y))
    _empty(source, n, {"train": n - n_val, "val": n_val}, f"split val {val} of the source's training rows")
    train, val_idx = _stratified(np.arange(n), y, val, seed)
    return np.sort(train), np.sort(val_idx)


def _train_stats(X: np.ndarray, source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel (images) or feature (vectors) of the finite training values, in float64 over
    chunks of rows (a 50,000-image split never gets a float64 copy). A constant channel or feature (std 0) is
    centred but not scaled (std 1)."""
    axes = (0, 2, 3) if X.ndim == 4 else (0,)
    total = squares = count = 0
    step = max(1, (1 << 22) // max(1, math.prod(X.shape[1:])))
    for i in range(0, len(X), step):
        chunk = X[i: i + step].astype(np.float64)
        finite = np.isfinite(chunk)
        chunk[~finite] = 0.0
        total, squares, count = total + chunk.sum(axes), squares + (chunk * chunk).sum(axes), count + finite.sum(axes)
    if np.any(count == 0):
        what = "channel" if X.ndim == 4 else "feature"
        raise DatasetError(source, f"normalize: train: {what} {int(np.argmin(count))} has no finite value in the "
                                   f"training split, so it has no mean or std")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    std[std < 1e-12] = 1.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
