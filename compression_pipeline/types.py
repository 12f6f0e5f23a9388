"""The shared vocabulary: the input specification and the model sources.

The input specification says what the models of a family take, carried from the dataset to every model, export and
runtime, so nothing downstream assumes an architecture, an image size or a channel count.

Model sources say where a model comes from (the zoo, a builder the user names, the user's ONNX file): the recipe's
baseline and a distillation student are one.

Splits are stored in one canonical layout: images as (n, C, H, W) float32 with values ``raw * scale`` (in [0, 1]
for images), feature vectors as (n, F) float32 (``raw * scale``). What a model is fed is ``(stored - mean) / std``
(per channel for images, per feature for vectors; no normalization when ``mean`` is None) in the layout its
framework takes: NCHW for PyTorch and its ONNX exports, NHWC for Keras and its exports, (n, F) for vectors. The one
function that does that is ``compression_pipeline.data.batches.feed``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Layout = Literal["NCHW", "NHWC", "NF"]
LAYOUTS = ("NCHW", "NHWC", "NF")
Framework = Literal["torch", "tensorflow"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def relative_path(v: str | None) -> str | None:
    """A user file's path: relative to the data root and never climbing out of it, refused at load time, before
    anything runs. (Symlinks that leave the root are refused when the file is read: ``settings.resolve_inside``.)"""
    if v is not None:
        if not v.strip() or "\x00" in v:
            raise ValueError("must be a non-empty file name relative to the data root")
        if v.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", v):
            raise ValueError("must be relative to the data root, not an absolute path")
        if ".." in re.split(r"[/\\]", v):
            raise ValueError("may not contain '..': user files live inside the data root")
    return v


# --- model sources: where a model comes from (the baseline's, a distillation student's) ------------------------
class ZooModel(Strict):
    """A built-in architecture, built alike in every framework: ``cnn`` (images: three 3x3 convolutions, a 2x2
    pool, two dense layers; ``width`` channels) or ``mlp`` (feature vectors, or images flattened: two hidden
    layers of ``width`` units)."""

    source: Literal["zoo"] = "zoo"
    arch: Literal["cnn", "mlp"] = "cnn"
    width: int = Field(64, ge=1, le=4096)


# Builder arguments that make torchvision, timm or keras.applications download trained weights: offline they fail
# after long retries, so they are refused when the recipe loads (bring trained weights as a file instead).
DOWNLOADING_KWARGS = {"weights": "torchvision/keras.applications", "pretrained": "timm",
                      "pretrained_cfg_overlay": "timm", "checkpoint_path": "timm"}
WEIGHT_SUFFIXES = {"torch": (".safetensors",), "tensorflow": (".keras", ".weights.h5")}


class ImportModel(Strict):
    """A model built by a function the user names, ``module:callable``, called with ``kwargs`` (e.g.
    ``torchvision.models:resnet18`` with ``{num_classes: 10}``, ``keras.applications:MobileNetV2`` with
    ``{weights: null, input_shape: [32, 32, 3], classes: 10}``, or a function in the user's own module), in
    ``framework``; optionally with trained ``weights`` (a file under the data root: safetensors for PyTorch,
    ``.keras`` or ``.weights.h5`` for Keras; never a pickle)."""

    source: Literal["import"]
    builder: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    framework: Framework
    weights: str | None = None

    _weights_path = field_validator("weights")(classmethod(lambda cls, v: relative_path(v)))

    @field_validator("builder")
    @classmethod
    def _module_colon_callable(cls, v):
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError("a builder is 'module:callable', e.g. 'torchvision.models:resnet18' or "
                             "'my_models:build' (a module importable from the project root)")
        return v

    @model_validator(mode="after")
    def _offline_and_safe(self):
        for key, who in DOWNLOADING_KWARGS.items():
            value = self.kwargs.get(key)
            if key in self.kwargs and value not in (None, False, ""):
                raise ValueError(f"kwargs.{key}={value!r} makes {who} download trained weights, which cannot work "
                                 f"here (no network at run time): set it to null/false and give trained weights as "
                                 f"a file instead ('weights: <file under the data root>')")
        if self.weights and not self.weights.endswith(WEIGHT_SUFFIXES[self.framework]):
            raise ValueError(f"weights {self.weights!r}: a {self.framework} model's weights are a "
                             f"{' or '.join(WEIGHT_SUFFIXES[self.framework])} file (never a pickle: .pt/.pth/.pkl "
                             f"files are refused, since loading one runs its code)")
        return self


class OnnxModel(Strict):
    """A user's ONNX file (under the data root): evaluated and benchmarked as given; only ONNX-level methods apply."""

    source: Literal["onnx"]
    path: str
    input_layout: Literal["auto", "NCHW", "NHWC", "NF"] = "auto"  # auto: read from the graph's input shape

    _path = field_validator("path")(classmethod(lambda cls, v: relative_path(v)))


SOURCE_TAGS = ("zoo", "import", "onnx")


def source_of(value) -> str:
    return value.get("source", "zoo") if isinstance(value, dict) else getattr(value, "source", "zoo")


ModelSource = Annotated[Annotated[ZooModel, Tag("zoo")] | Annotated[ImportModel, Tag("import")],
                        Discriminator(source_of)]



# --- how a model is trained: devices, processes, precision, data placement, augmentation -------------------------
class RandomCrop(Strict):
    """Pad every image by ``padding`` pixels on each side (zeros or a reflection), then cut a random window of the
    image's own size: a shift of up to ``padding`` pixels."""

    op: Literal["random_crop"]
    padding: int = Field(4, ge=1, le=64)
    fill: Literal["zeros", "reflect"] = "zeros"


class Flip(Strict):
    """Mirror each image left-right (``hflip``) or top-bottom (``vflip``) with probability ``p``."""

    op: Literal["hflip", "vflip"]
    p: float = Field(0.5, gt=0, le=1)


class Noise(Strict):
    """Add Gaussian noise of standard deviation ``std`` (in the fed, normalized values) to every sample."""

    op: Literal["noise"]
    std: float = Field(gt=0, le=10)


Augmentation = Annotated[RandomCrop | Flip | Noise, Field(discriminator="op")]


class TrainingSetup(Strict):
    """Where and how a PyTorch model trains (the recipe's ``training`` block, per family, overridable per variant).

    The defaults are the single-process CPU loop: one process, fp32, the training split in memory, no augmentation.
    ``device``: ``cpu``, ``cuda`` (an error where CUDA is absent) or ``auto`` (CUDA when usable). ``processes``: data
    parallel workers (torch.distributed DistributedDataParallel), one device each on CUDA (``devices``: their
    indices, default 0..processes-1); ``backend`` ``auto`` is NCCL on CUDA and gloo on CPU. ``precision``: ``fp32``,
    ``bf16`` or ``fp16`` autocast (fp16 with loss scaling, CUDA only), ``auto`` (bf16 where the GPU has it, else
    fp16; fp32 on CPU). ``preload``: ``auto`` moves the whole training split to the device once when it fits in
    ``memory_fraction`` of the device's memory, else batches travel from pinned host memory with non-blocking copies,
    ``prefetch`` batches ahead; ``always`` / ``never`` force one way. ``augment``: tensor operations run on the
    device on every training batch, seeded by ``augment_seed`` (default: the dataset's seed). ``pool``: the Dagster
    concurrency pool a step training on CUDA claims.
    """

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    processes: int = Field(1, ge=1, le=64)
    devices: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    preload: Literal["auto", "always", "never"] = "auto"
    memory_fraction: float = Field(0.5, gt=0, le=0.95)
    prefetch: int = Field(2, ge=1, le=16)
    augment: list[Augmentation] = Field(default_factory=list)
    augment_seed: int | None = None
    pool: str = Field("gpu", pattern=r"^[A-Za-z0-9_.-]+$")
    timeout_s: float = Field(1800.0, gt=0)  # how long a worker waits for the others at a collective

    @model_validator(mode="after")
    def _consistent(self):
        if self.backend == "nccl" and self.device == "cpu":
            raise ValueError("backend 'nccl' needs CUDA devices, but device is 'cpu': use backend 'gloo' (or "
                             "'auto') on CPU, or device 'cuda'")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision 'fp16' (autocast with loss scaling) is for CUDA; on CPU use 'bf16' or "
                             "'fp32' (fp16 convolutions are slower than fp32 on CPUs)")
        if self.devices is not None:
            if self.device == "cpu":
                raise ValueError("devices lists CUDA device indices, but device is 'cpu'")
            if len(set(self.devices)) != len(self.devices):
                raise ValueError(f"each CUDA device may appear once, got {self.devices}")
            if self.processes > len(self.devices):
                raise ValueError(f"{self.processes} processes but {len(self.devices)} devices {self.devices}: one "
                                 f"device per process (fewer processes, or more devices)")
        return self

    @property
    def distributed(self) -> bool:
        return self.processes > 1

    def defaults(self) -> bool:
        """True when nothing differs from the single-process CPU fp32 loop."""
        return self == TrainingSetup()


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
