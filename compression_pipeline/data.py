"""Datasets: read the raw data, turn it into seeded, stratified, scaled train/val/test splits.

Raw data is an array ``X`` of shape (n, h*w) or (n, h, w) with raw pixel values and integer labels
``y``. Preprocessing scales pixels into [0, 1] and keeps everything else as it is: finding bad
values is the job of the data-quality gates, which must see them.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from compression_pipeline.errors import DatasetError, PipelineError
from compression_pipeline.settings import resolve_inside

SPLITS = ("train", "val", "test")


def load_raw(dataset, data_root: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (X, y, source description). ``dataset`` is a ``recipe.Dataset``."""
    if dataset.source == "sklearn_digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float64), d.target.astype(np.int64), "sklearn.datasets.load_digits"
    path = source_path(dataset, data_root)
    name = str(path)
    if not path.is_file():
        raise DatasetError(name, "not a file (an .npz dataset is one file)")
    # allow_pickle=False: an object array is a pickle, and unpickling a user's file runs the user's code.
    # Arrays are read inside the try: a corrupt or truncated member fails only when it is decompressed.
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetError(name, "not an .npz archive (a bare .npy array?); an .npz dataset holds 'X' and 'y'")
        with loaded as f:
            missing = {"X", "y"} - set(f.files)
            if missing:
                raise DatasetError(name, f"missing arrays {sorted(missing)}; an .npz dataset holds 'X' and 'y'")
            X, y = f["X"], f["y"]
    except DatasetError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise DatasetError(name, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    h, w = dataset.image_shape
    if X.ndim == 3:
        X = X.reshape(len(X), -1)
    if X.ndim != 2 or X.shape[1] != h * w:
        raise DatasetError(name, f"X has shape {X.shape}; expected (n, {h * w}) or (n, {h}, {w}) "
                                 f"for image_shape {h}x{w}")
    if y.ndim != 1 or len(y) != len(X):
        raise DatasetError(name, f"y has shape {y.shape}; expected ({len(X)},), one label per row of X")
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise DatasetError(name, f"X has dtype {X.dtype}; expected integer or floating-point pixel values")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(name, f"y has dtype {y.dtype}; expected integer class labels")
    if len(X) == 0:
        raise DatasetError(name, "the dataset has no rows")
    return X.astype(np.float64), y.astype(np.int64), name


BUILTIN_ROWS = {"sklearn_digits": 1797}


def known_test_rows(dataset) -> int | None:
    """The test split's size when it is known without reading any file (a built-in dataset), else None."""
    n = BUILTIN_ROWS.get(dataset.source)
    return None if n is None else math.ceil(dataset.split.test * n)


def source_path(dataset, data_root: str | Path) -> Path:
    """The file or folder a file-based dataset is read from: inside the data root, and present."""
    if not getattr(dataset, "path", None):
        raise DatasetError(dataset.source, "a built-in dataset has no source file")
    try:
        path = resolve_inside(Path(data_root), dataset.path)
    except PipelineError as e:  # '..' or a symlink that leaves the data root
        raise DatasetError(str(Path(data_root) / dataset.path), str(e)) from None
    if not path.exists():
        raise DatasetError(str(path), "file not found")
    return path


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def content_version(path: Path) -> str:
    """sha256 of a dataset file, or of a folder's relative file names and contents: the dataset's data version."""
    from compression_pipeline.artifacts import sha256_file

    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in _files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def content_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in _files(path))


def preprocess(X: np.ndarray, y: np.ndarray, dataset, source: str = "dataset") -> dict[str, np.ndarray]:
    """Seeded stratified split into train/val/test, pixels scaled into [0, 1] as float32.

    ``source`` names the file in errors. A split that would be empty is an error here (the gates cannot judge
    an empty table); every other problem (labels, balance, duplicates, values) is left for the gates to report.
    """
    from sklearn.model_selection import train_test_split

    n, test, val = len(X), dataset.split.test, dataset.split.val
    val_share = val / (1 - test)
    n_test = math.ceil(test * n)  # the sizes train_test_split uses for a float test_size
    n_val = math.ceil(val_share * (n - n_test))
    sizes = {"train": n - n_test - n_val, "val": n_val, "test": n_test}
    empty = [k for k, v in sizes.items() if v < 1]
    if empty:
        raise DatasetError(source, f"{n} rows leave the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
                                   f"empty (split val {val}, test {test}); every split needs at least one row")
    idx = np.arange(n)

    def split(stratify):
        rest, te = train_test_split(idx, test_size=test, random_state=dataset.seed, stratify=stratify)
        tr, va = train_test_split(rest, test_size=val_share, random_state=dataset.seed,
                                  stratify=None if stratify is None else y[rest])
        return tr, va, te

    try:
        train, val_idx, test_idx = split(y)
    except ValueError:  # too few rows of some class to stratify: split unstratified; the balance gates judge it
        train, val_idx, test_idx = split(None)
    Xs = (X / dataset.value_max).astype(np.float32)
    out = {}
    for name, part in zip(SPLITS, (np.sort(train), np.sort(val_idx), np.sort(test_idx))):
        out[f"X_{name}"], out[f"y_{name}"] = Xs[part], y[part]
    return out


def to_npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def as_images(X: np.ndarray, image_shape) -> np.ndarray:
    """(n, h*w) -> (n, 1, h, w) float32: the models' input layout."""
    h, w = image_shape
    return np.ascontiguousarray(X.reshape(len(X), 1, h, w), dtype=np.float32)
