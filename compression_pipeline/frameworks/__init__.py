"""The framework adapters by name. Importing this package imports no framework: an adapter's module is imported when
it is first asked for."""

from __future__ import annotations

import importlib
from functools import cache

from compression_pipeline.frameworks.base import Framework

ADAPTERS = {  # framework name -> "module:class"
    "torch": "compression_pipeline.frameworks.pytorch:PyTorch",
    "tensorflow": "compression_pipeline.frameworks.keras_adapter:KerasFramework",
}


@cache
def get(name: str) -> Framework:
    """The adapter of framework ``name`` (one of ``ADAPTERS``)."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown framework {name!r}; known: {sorted(ADAPTERS)}")
    module, _, cls = ADAPTERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
