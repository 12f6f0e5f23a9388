"""The framework adapters by name. Importing this package imports no framework: an adapter's module is imported when
it is first asked for."""

from __future__ import annotations

import importlib
from functools import cache

ADAPTERS = {  # framework name -> "module:class"
    "tensorflow": "compression_pipeline.frameworks.keras_adapter:KerasFramework",
}


@cache
def get(name: str):
    """The ``base.Framework`` of ``name`` ("torch", "tensorflow")."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown framework {name!r}; known: {sorted(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
