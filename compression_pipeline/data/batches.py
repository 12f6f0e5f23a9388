"""The one place that turns stored samples into what a model takes."""

from __future__ import annotations

import numpy as np

from compression_pipeline.types import InputSpec, Layout


def feed(X: np.ndarray, spec: InputSpec, layout: Layout) -> np.ndarray:
    """Stored samples ``X`` ((n, C, H, W) images or (n, F) vectors, as the splits hold them) as a model of ``layout``
    takes them: ``(X - mean) / std`` per channel or feature when ``spec`` has a normalization, then NCHW -> NHWC when
    asked; float32 and C-contiguous."""
    X = np.asarray(X)
    if X.shape[1:] != spec.shape:
        raise ValueError(f"samples of shape {X.shape[1:]} do not match the input specification's {spec.shape} "
                         f"(stored splits are (n, C, H, W) images or (n, F) vectors)")
    spec.sample_shape(layout)  # refuses a layout the data cannot take (NHWC feature vectors, say)
    out = X.astype(np.float32, copy=spec.mean is None)
    if spec.mean is not None:
        per = (1, -1, 1, 1) if spec.kind == "image" else (1, -1)
        out = (out - np.asarray(spec.mean, np.float32).reshape(per)) / np.asarray(spec.std, np.float32).reshape(per)
    if layout == "NHWC":
        out = out.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def as_images(X: np.ndarray, image_shape) -> np.ndarray:
    """1-channel images (n, h*w) or (n, 1, h, w) -> (n, 1, h, w) float32: the old code paths' input layout (they pass
    ``recipe.dataset.image_shape``); new code uses ``feed``."""
    h, w = image_shape
    return np.ascontiguousarray(X.reshape(len(X), 1, h, w), dtype=np.float32)
