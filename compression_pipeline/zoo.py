"""The model zoo: architectures as explicit specs, so any model (pruned ones too) is rebuilt from its spec.

A spec lists every layer width. A structurally pruned model is just the same architecture with smaller
widths, so it is saved as (spec, safetensors weights) and loaded without unpickling anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CNNSpec(BaseModel):
    """conv3x3(c0) - conv3x3(c1) - maxpool2 - conv3x3(c2) - flatten - linear(hidden) - linear(classes).

    ``linear_ranks`` (fc1, fc2): ``None`` builds a dense Linear; a rank ``r`` builds the layer factorized as
    Linear(in, r, bias=False) followed by Linear(r, out) (what ``low_rank`` produces), so a factorized model is
    rebuilt from its spec like any other.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str = "cnn"
    in_shape: tuple[int, int, int] = (1, 8, 8)
    channels: tuple[int, int, int] = (64, 128, 128)
    hidden: int = 512
    num_classes: int = 10
    dropout: float = Field(0.3, ge=0, lt=1)
    linear_ranks: tuple[int | None, int | None] = (None, None)

    @field_validator("linear_ranks")
    @classmethod
    def _positive_ranks(cls, v):
        if any(r is not None and r < 1 for r in v):
            raise ValueError("a rank is a positive integer or null (dense)")
        return v

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of fc1 and fc2."""
        _, h, w = self.in_shape
        return [(self.channels[2] * (h // 2) * (w // 2), self.hidden), (self.hidden, self.num_classes)]


def cnn_spec(width: int, image_shape=(8, 8), num_classes: int = 10) -> CNNSpec:
    """The family's CNN at a given width: about 1.3M parameters at width 64 on 8x8 digits."""
    return CNNSpec(in_shape=(1, *image_shape), channels=(width, 2 * width, 2 * width), hidden=8 * width,
                   num_classes=num_classes)


def build_torch(spec: CNNSpec, seed: int | None = None):
    """The module of ``spec``; with ``seed``, its initial weights are reproducible."""
    import torch
    from torch import nn

    if seed is not None:
        torch.manual_seed(seed)
    c0, c1, c2 = spec.channels
    (fc1_in, fc1_out), (fc2_in, fc2_out) = spec.linear_shapes()
    r1, r2 = spec.linear_ranks
    # Layers are created in forward order: the seeded initial weights depend on it.
    return nn.Sequential(
        nn.Conv2d(spec.in_shape[0], c0, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c0, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(spec.dropout), _linear(nn, fc1_in, fc1_out, r1), nn.ReLU(),
        nn.Dropout(spec.dropout), _linear(nn, fc2_in, fc2_out, r2),
    )


def _linear(nn, n_in: int, n_out: int, rank: int | None):
    if rank is None:
        return nn.Linear(n_in, n_out)
    # W (out x in) ~= B A with A: rank x in, B: out x rank; the bias stays on the second factor.
    return nn.Sequential(nn.Linear(n_in, rank, bias=False), nn.Linear(rank, n_out))


def named_layers(module) -> dict:
    """The weight layers of a ``build_torch`` module by stable name: conv1..conv3, fc1, fc2 (a factorized fc is
    the nn.Sequential of its two factors)."""
    out, convs, fcs = {}, 0, 0
    for child in module:
        kind = type(child).__name__
        if kind == "Conv2d":
            convs += 1
            out[f"conv{convs}"] = child
        elif kind in ("Linear", "Sequential"):
            fcs += 1
            out[f"fc{fcs}"] = child
    return out


def spec_of(module, spec: CNNSpec) -> CNNSpec:
    """Read the (possibly pruned or factorized) widths and ranks back from a module built by ``build_torch``."""
    layers = named_layers(module)
    fcs = [layers["fc1"], layers["fc2"]]
    out_features = [f[-1].out_features if type(f).__name__ == "Sequential" else f.out_features for f in fcs]
    ranks = tuple(f[0].out_features if type(f).__name__ == "Sequential" else None for f in fcs)
    channels = tuple(layers[f"conv{i}"].out_channels for i in (1, 2, 3))
    return CNNSpec.model_validate({**spec.model_dump(), "channels": channels, "hidden": out_features[0],
                                   "num_classes": out_features[1], "linear_ranks": ranks})


def dense_linear(layer):
    """(weight, bias) of a dense or factorized fc layer as one dense (out x in) matrix and its bias."""
    if type(layer).__name__ == "Sequential":
        first, second = layer[0], layer[1]
        return second.weight.detach() @ first.weight.detach(), second.bias
    return layer.weight.detach(), layer.bias


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


def count_macs(spec: CNNSpec) -> int:
    """Multiply-accumulates of one sample's forward pass, from the spec alone, so PyTorch and Keras models count
    alike (weight MACs; bias adds and activations are not counted): 3x3 'same' convolutions at full
    resolution (conv1, conv2) and after the 2x2 pool (conv3), then the (possibly factorized) dense layers."""
    cin, h, w = spec.in_shape
    c0, c1, c2 = spec.channels
    macs = h * w * 9 * (cin * c0 + c0 * c1) + (h // 2) * (w // 2) * 9 * c1 * c2
    for (n_in, n_out), rank in zip(spec.linear_shapes(), spec.linear_ranks):
        macs += n_in * n_out if rank is None else rank * (n_in + n_out)
    return int(macs)
