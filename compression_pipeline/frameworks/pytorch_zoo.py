"""The built-in PyTorch architectures (their Keras twins have the same layer names and parameter counts), and
``adapted``: a builder that fits a torchvision/timm classifier's stem to other inputs (channels, small images)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from compression_pipeline.types import DOWNLOADING_KWARGS


class ZooCNN(nn.Module):
    """conv3x3(w)-relu-conv3x3(2w)-relu-maxpool2-conv3x3(2w)-relu-flatten-dropout-linear(8w)-relu-dropout-linear
    (classes), as ``zoo.build_torch``: the layers are created in the same (forward) order, so a seed gives the same
    initial weights. Any image of at least 2x2 pixels."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], width: int, num_classes: int,
                 dropout: float = 0.3):
        super().__init__()
        h, w = image_size
        self.dropout = dropout
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (h // 2) * (w // 2), 8 * width)
        self.fc2 = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.dropout(F.relu(self.conv3(x)).flatten(1), self.dropout, self.training)
        x = F.dropout(F.relu(self.fc1(x)), self.dropout, self.training)
        return self.fc2(x)


class ZooMLP(nn.Module):
    """linear(w)-relu-linear(w)-relu-linear(classes) on feature vectors (images are flattened C, H, W)."""

    def __init__(self, in_features: int, width: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def adapted(builder: str, kwargs: dict | None = None, in_channels: int = 3, small_input: bool = False,
            stem_stride: int | None = None, max_pool: bool | None = None) -> nn.Module:
    """``builder(**kwargs)`` with its stem fitted to the data: the stem convolution (the model's first ``nn.Conv2d``)
    rebuilt to take ``in_channels``. ``stem_stride`` sets that convolution's stride and ``max_pool=False`` removes a
    stem max-pool held as a ``maxpool`` attribute (torchvision and timm ResNets; an error where there is none).
    ``small_input`` (e.g. 28x28 or 32x32 images) is both, stride 1 and no max-pool where there is one, so small images
    are not shrunk 4x before the first block; a ResNet with ``max_pool=False`` alone shrinks them 2x (28x28 ->
    14x14) at about a quarter of ``small_input``'s cost. The new stem keeps kernel, padding and bias; its weights
    are freshly initialized.

    Checked with torchvision ResNets, MobileNetV3 and timm models whose first ``nn.Conv2d`` is the stem (ResNets,
    EfficientNets, MobileNets). Not for stems that are not an ``nn.Conv2d`` (a ViT's patch embedding convolution is,
    but changing its stride changes the token count: pass ``img_size``/``in_chans`` to timm instead)."""
    from compression_pipeline.frameworks.builders import import_callable
    from compression_pipeline.frameworks.torchvision_compat import prepare_torchvision

    prepare_torchvision()

    kwargs = dict(kwargs or {})
    for key in DOWNLOADING_KWARGS:
        if kwargs.get(key) not in (None, False, ""):
            raise ValueError(f"adapted: kwargs.{key}={kwargs[key]!r} would download trained weights (no network "
                             f"here): set it to null/false and give trained weights as a file")
    if stem_stride is not None and (isinstance(stem_stride, bool) or not isinstance(stem_stride, int)
                                    or stem_stride < 1):
        raise ValueError(f"adapted: stem_stride must be a positive integer, got {stem_stride!r}")
    stride = stem_stride if stem_stride is not None else (1 if small_input else None)
    pool = max_pool if max_pool is not None else not small_input
    model = import_callable(builder)(**kwargs)
    name, stem = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if stem is None:
        raise ValueError(f"adapted: {builder} builds no nn.Conv2d, so there is no stem to adapt")
    if stem.groups != 1:
        raise ValueError(f"adapted: the stem {name} of {builder} is a grouped convolution ({stem.groups} groups)")
    has_pool = isinstance(getattr(model, "maxpool", None), nn.MaxPool2d)
    if max_pool is False and not has_pool:
        raise ValueError(f"adapted: max_pool=False, but {builder} has no stem max-pool (an nn.MaxPool2d named "
                         f"maxpool) to remove")
    if stem.in_channels != in_channels or stride is not None:
        # The stem's own class (timm's Conv2dSame pads at run time); padding_mode only when set, as such subclasses
        # do not all take it.
        extra = {} if stem.padding_mode == "zeros" else {"padding_mode": stem.padding_mode}
        model.set_submodule(name, type(stem)(
            in_channels, stem.out_channels, stem.kernel_size, stride=stride or stem.stride,
            padding=stem.padding, dilation=stem.dilation, bias=stem.bias is not None, **extra))
    if not pool and has_pool:
        model.maxpool = nn.Identity()
    return model
