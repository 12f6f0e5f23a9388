"""Building PyTorch models from their sources: the zoo, or a ``module:callable`` the user names, with optional trained
weights (safetensors only), checked against the data's input specification."""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import math
import sys
from pathlib import Path

import torch
from torch import nn

from compression_pipeline.errors import ModelError
from compression_pipeline.settings import PROJECT_ROOT, resolve_inside
from compression_pipeline.types import ImportModel, InputSpec, ZooModel

# torchvision's C++ operators whose fake (shape) functions torchvision registers when it is imported: they must exist.
_TORCHVISION_SCHEMAS = {"nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                        "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"}


@functools.cache
def prepare_torchvision() -> None:
    """Make ``import torchvision`` (and timm, which imports it) work with the CPU torch wheel this project pins.

    The torchvision on PyPI that matches torch 2.13.0 is a CUDA build: its ``_C.so`` needs ``libc10_cuda.so``, which
    the CPU torch lacks, so it does not load, and torchvision's import then fails on registering fake functions for
    ``torchvision::nms``/``qnms``, operators only ``_C.so`` defines. Chosen here: load ``_C.so`` exactly as
    torchvision does (same file, ``torch.ops.load_library``); only when that fails, define the two operators' schemas
    (no kernels) so the import succeeds. Classification models (every ``torchvision.models`` and timm classifier)
    then build, train and export; torchvision's detection ops (nms, roi_align, deform_conv) stay unavailable and say
    so when called. Where ``_C.so`` loads (a CUDA torch on a GPU host, a CPU torchvision build) nothing is defined and
    the real operators are used. Rejected: a CUDA torch everywhere (gigabytes on every CPU machine and CI), and a
    fallback that retries a failed import (it leaves half-imported modules behind).

    Every builder import goes through ``import_callable``, which calls this first, so it holds in every process that
    builds or loads a model (Dagster step workers too). Call it before importing torchvision anywhere else.
    """
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    package_dir = importlib.util.find_spec("torchvision").submodule_search_locations[0]
    finder = importlib.machinery.FileFinder(
        package_dir, (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
    extension = finder.find_spec("_C")
    if extension is not None:
        try:
            torch.ops.load_library(extension.origin)
            return
        except OSError:
            pass
    for op, schema in _TORCHVISION_SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, op):
            torch.library.define(f"torchvision::{op}", schema)


def import_callable(ref: str):
    """The callable ``module:name`` names (a builder), imported with the project root on ``sys.path`` (after the
    installed packages) so a user's module in the project imports."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelError(f"builder {ref!r}: a builder is 'module:callable', e.g. 'torchvision.models:resnet18'")
    prepare_torchvision()
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.append(str(PROJECT_ROOT))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ModelError(f"builder {ref!r}: cannot import module {module_name!r} ({e}); a builder's module is an "
                         f"installed package or a module in the project root {PROJECT_ROOT}") from None
    except Exception as e:
        raise ModelError(f"builder {ref!r}: importing {module_name!r} failed: {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise ModelError(f"builder {ref!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ModelError(f"builder {ref!r}: {attr!r} is a {type(fn).__name__}, not a callable")
    return fn


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
