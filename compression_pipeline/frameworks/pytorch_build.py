"""Building PyTorch models from their sources: the zoo, or a ``module:callable`` the user names, with optional trained
weights (safetensors only), checked against the data's input specification."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from compression_pipeline.errors import ModelError
from compression_pipeline.frameworks import builders
from compression_pipeline.frameworks.torchvision_compat import prepare_torchvision
from compression_pipeline.settings import resolve_inside
from compression_pipeline.types import ImportModel, InputSpec, ZooModel


def import_callable(ref: str):
    """The builder ``module:callable`` names, torchvision made importable first (``torchvision_compat``)."""
    prepare_torchvision()
    return builders.import_callable(ref)


def construct(source, spec: InputSpec) -> nn.Module:
    """The module ``source`` declares, with the framework's default initialization (the caller seeds), not checked;
    the source and spec are kept on it (``origin``) so it can be saved and rebuilt."""
    from compression_pipeline.frameworks import pytorch_zoo

    if isinstance(source, ZooModel):
        if source.arch == "cnn":
            if spec.kind != "image":
                raise ModelError(f"zoo cnn takes images, but the data are {spec.kind} of shape {spec.shape}: use "
                                 f"arch 'mlp' for feature vectors")
            if min(spec.shape[1:]) < 2:
                raise ModelError(f"zoo cnn: images of at least 2x2 pixels (it pools 2x2), got {spec.shape}")
            model = pytorch_zoo.ZooCNN(spec.shape[0], spec.shape[1:], source.width, spec.num_classes)
        else:
            model = pytorch_zoo.ZooMLP(math.prod(spec.shape), source.width, spec.num_classes)
    elif isinstance(source, ImportModel):
        if source.framework != "torch":
            raise ModelError(f"builder {source.builder!r} is declared for framework {source.framework!r}, not torch")
        fn = import_callable(source.builder)
        try:
            model = fn(**source.kwargs)
        except Exception as e:
            raise ModelError(f"builder {source.builder!r} called with {source.kwargs} failed: "
                             f"{type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise ModelError(f"builder {source.builder!r} returned a {type(model).__name__}, not a torch.nn.Module")
    else:
        raise ModelError(f"a {type(source).__name__} cannot be built in PyTorch (an ONNX model is used as given)")
    model._pipeline_source, model._pipeline_spec = source, spec
    return model


def origin(model) -> tuple:
    """(source, spec) of a module ``construct`` built (kept through ``copy.deepcopy`` and in-place edits)."""
    if not hasattr(model, "_pipeline_source"):
        raise ModelError(f"this {type(model).__name__} was not built by the PyTorch adapter (no model source on it), "
                         f"so it cannot be rebuilt: build models with frameworks.get('torch').build")
    return model._pipeline_source, model._pipeline_spec


def describe(source) -> str:
    return f"builder {source.builder!r}" if isinstance(source, ImportModel) else f"zoo {source.arch}"


def device_of(model) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def check_io(model: nn.Module, spec: InputSpec, what: str) -> None:
    """A forward pass on 2 zero samples (eval mode, restored after) must return (2, classes) logits."""
    shape = (2, *spec.sample_shape(spec.default_layout("torch")))
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(shape, device=device_of(model)))
    except Exception as e:
        axes = "N, C, H, W" if spec.kind == "image" else "N, F"
        raise ModelError(f"{what}: a batch of the data's samples, shape {shape} ({axes}), fails in the model: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{what}: returned a {type(out).__name__} for input {shape}; a classifier returns one tensor "
                         f"of logits, shape (batch, {spec.num_classes})")
    if tuple(out.shape) != (2, spec.num_classes):
        raise ModelError(f"{what}: returned shape {tuple(out.shape)} for input {shape}; expected (2, "
                         f"{spec.num_classes}): one logit per class of the data ({spec.num_classes} classes; set the "
                         f"builder's number of classes, e.g. num_classes={spec.num_classes})")


def mismatches(expected: dict, found: dict) -> list[str]:
    """What differs between two name -> tensor dicts: missing and unexpected names, and shapes."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shapes = [f"{k}: {tuple(found[k].shape)} instead of {tuple(expected[k].shape)}"
              for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]

    def some(items):
        return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    return ([f"missing {len(missing)}: {some(missing)}"] if missing else []) + \
        ([f"unexpected {len(extra)}: {some(extra)}"] if extra else []) + \
        ([f"mis-shaped {len(shapes)}: {some(shapes)}"] if shapes else [])


def load_weights(model: nn.Module, data_root: Path | None, weights: str, what: str) -> None:
    """The user's trained weights (a safetensors file under ``data_root``), loaded with strict name and shape checks."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if data_root is None:
        raise ModelError(f"{what}: weights {weights!r} are given but no data root to find them under")
    path = resolve_inside(data_root, weights)
    if not path.is_file():
        raise ModelError(f"{what}: weights file {weights!r} not found under the data root {data_root}")
    try:
        state = load_file(str(path), device=str(device_of(model)))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{what}: weights {weights!r} are not a safetensors file ({e}); weights are never unpickled: "
                         f"convert a checkpoint with safetensors.torch.save_file(model.state_dict(), ...)") from None
    problems = mismatches(model.state_dict(), state)
    if problems:
        raise ModelError(f"{what}: weights {weights!r} do not fit the model it builds: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
