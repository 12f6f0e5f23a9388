"""torchvision (and timm, which imports it) beside the CPU torch wheel this project pins."""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import sys

import torch

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
