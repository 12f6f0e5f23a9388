"""Bytes on disk: arrays to and from .npz (never unpickled), and the content version of a dataset file or folder."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np


def to_npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    # allow_pickle=False: an object array is a pickle, and unpickling a file runs its code.
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def content_version(path: Path) -> str:
    """sha256 of a dataset file, or of a folder's relative file names and contents (an image folder, an IDX folder):
    the dataset's data version. A renamed, added, removed or changed file changes it."""
    from compression_pipeline.artifacts import sha256_file

    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in _files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def content_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in _files(path))
