"""The input specification: what the models of a family take, carried from the dataset to every model, export and
runtime, so nothing downstream assumes an architecture, an image size or a channel count.

Splits are stored in one canonical layout: images as (n, C, H, W) float32 with values ``raw * scale`` (in [0, 1]
for images), feature vectors as (n, F) float32 (``raw * scale``). What a model is fed is ``(stored - mean) / std``
(per channel for images, per feature for vectors; no normalization when ``mean`` is None) in the layout its
framework takes: NCHW for PyTorch and its ONNX exports, NHWC for Keras and its exports, (n, F) for vectors. The one
function that does that is ``compression_pipeline.data.batches.feed``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Layout = Literal["NCHW", "NHWC", "NF"]
LAYOUTS = ("NCHW", "NHWC", "NF")


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["image", "features"]
    shape: tuple[int, ...] = Field(description="one stored sample: (C, H, W) for images, (F,) for feature vectors")
    scale: float = Field(1.0, gt=0, description="stored = raw * scale")
    mean: tuple[float, ...] | None = Field(None, description="fed = (stored - mean) / std; per channel or feature")
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] = Field(min_length=2, description="the name of each label 0..n-1")

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "image" and len(self.shape) != 3:
            raise ValueError(f"an image sample is (channels, height, width), got shape {self.shape}")
        if self.kind == "features" and len(self.shape) != 1:
            raise ValueError(f"a feature vector is (features,), got shape {self.shape}")
        if any(d < 1 for d in self.shape):
            raise ValueError(f"every dimension is at least 1, got shape {self.shape}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std come together (or neither)")
        if self.mean is not None:
            n = self.shape[0]
            if len(self.mean) != n or len(self.std) != n:
                raise ValueError(f"mean and std need one value per {'channel' if self.kind == 'image' else 'feature'}"
                                 f" ({n}), got {len(self.mean)} and {len(self.std)}")
            if any(s <= 0 for s in self.std):
                raise ValueError(f"std values must be positive, got {self.std}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.shape[0] if self.kind == "image" else 1

    def default_layout(self, framework: str) -> Layout:
        """The layout a framework's models take: PyTorch NCHW, Keras NHWC; feature vectors are (n, F) in both."""
        if self.kind == "features":
            return "NF"
        return "NHWC" if framework == "tensorflow" else "NCHW"

    def sample_shape(self, layout: Layout) -> tuple[int, ...]:
        """One sample's shape in ``layout`` (without the batch dimension)."""
        if self.kind == "features":
            if layout != "NF":
                raise ValueError(f"feature vectors are fed as NF, not {layout}")
            return self.shape
        c, h, w = self.shape
        if layout == "NCHW":
            return (c, h, w)
        if layout == "NHWC":
            return (h, w, c)
        raise ValueError(f"images are fed as NCHW or NHWC, not {layout}")
