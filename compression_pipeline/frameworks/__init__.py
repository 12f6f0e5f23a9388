"""The framework adapters by name, imported only when asked for (importing this package imports no framework)."""

from __future__ import annotations

import importlib

from compression_pipeline.frameworks.base import Framework

ADAPTERS = {
    "torch": "compression_pipeline.frameworks.pytorch:PyTorch",
}


def get(name: str) -> Framework:
    """The adapter of framework ``name`` (one of ``ADAPTERS``)."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown framework {name!r}: one of {sorted(ADAPTERS)}")
    module, _, cls = ADAPTERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
