"""The model zoo: architectures as explicit specs, so any model (pruned ones too) is rebuilt from its spec.

A spec lists every layer width. A structurally pruned model is just the same architecture with smaller
widths, so it is saved as (spec, safetensors weights) and loaded without unpickling anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class CNNSpec(BaseModel):
    """conv3x3(c0) - conv3x3(c1) - maxpool2 - conv3x3(c2) - flatten - linear(hidden) - linear(classes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str = "cnn"
    in_shape: tuple[int, int, int] = (1, 8, 8)
    channels: tuple[int, int, int] = (64, 128, 128)
    hidden: int = 512
    num_classes: int = 10
    dropout: float = Field(0.3, ge=0, lt=1)


def cnn_spec(width: int, image_shape=(8, 8), num_classes: int = 10) -> CNNSpec:
    """The family's CNN at a given width: about 1.3M parameters at width 64 on 8x8 digits."""
    return CNNSpec(in_shape=(1, *image_shape), channels=(width, 2 * width, 2 * width), hidden=8 * width,
                   num_classes=num_classes)


def build_torch(spec: CNNSpec, seed: int | None = None):
    """The module of ``spec``; with ``seed``, its initial weights are reproducible."""
    import torch
    import torch.nn as nn

    if seed is not None:
        torch.manual_seed(seed)
    c0, c1, c2 = spec.channels
    _, h, w = spec.in_shape
    flat = c2 * (h // 2) * (w // 2)
    return nn.Sequential(
        nn.Conv2d(spec.in_shape[0], c0, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c0, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(spec.dropout), nn.Linear(flat, spec.hidden), nn.ReLU(),
        nn.Dropout(spec.dropout), nn.Linear(spec.hidden, spec.num_classes),
    )


def spec_of(module, spec: CNNSpec) -> CNNSpec:
    """Read the (possibly pruned) widths back from a module built by ``build_torch``."""
    convs = [m for m in module if type(m).__name__ == "Conv2d"]
    linears = [m for m in module if type(m).__name__ == "Linear"]
    return spec.model_copy(update={"channels": tuple(c.out_channels for c in convs), "hidden": linears[0].out_features})


def save_torch(module, spec: CNNSpec, path: Path) -> None:
    """Weights as safetensors with the spec in the file's metadata: one file, no pickle."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"spec": spec.model_dump_json()})


def load_torch(path: Path):
    """Rebuild the module from the spec stored in the file and load its weights; returns (module, spec)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from compression_pipeline.errors import ArtifactError

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:  # e.g. a pickle (torch.save) put in its place: refused, never run
        raise ArtifactError(f"{path} is not a safetensors model file ({e}); model files are never unpickled") from None
    if "spec" not in meta:
        raise ArtifactError(f"{path} has no architecture spec in its metadata; not a model file of this project")
    spec = CNNSpec.model_validate(json.loads(meta["spec"]))
    module = build_torch(spec)
    module.load_state_dict(load_file(str(path)), strict=True)
    module.eval()
    return module, spec


def count_params(module) -> tuple[int, int]:
    """(parameters, nonzero parameters)."""
    total = nonzero = 0
    for p in module.parameters():
        total += p.numel()
        nonzero += int((p != 0).sum())
    return total, nonzero
