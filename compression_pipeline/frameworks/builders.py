"""A model builder the user names, ``module:callable``, imported the one way every framework does."""

from __future__ import annotations

import importlib
import sys

from compression_pipeline.errors import ModelError
from compression_pipeline.settings import PROJECT_ROOT


def import_callable(ref: str):
    """The callable ``module:name`` names, imported with the project root on ``sys.path`` (after the installed
    packages, so it never shadows one) so that a user's module in the project imports."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelError(f"builder {ref!r}: a builder is 'module:callable', e.g. 'torchvision.models:resnet18'")
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.append(str(PROJECT_ROOT))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ModelError(f"builder {ref!r}: cannot import module {module_name!r} ({e}); a builder's module is an "
                         f"installed package or a module in the project root {PROJECT_ROOT}") from None
    except Exception as e:  # the module's own code fails: the builder is unusable, and the error says why
        raise ModelError(f"builder {ref!r}: importing {module_name!r} failed: {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise ModelError(f"builder {ref!r}: module {module_name!r} has no attribute {attr!r} (the module: "
                         f"{getattr(module, '__file__', '?')})")
    if not callable(fn):
        raise ModelError(f"builder {ref!r}: {attr!r} is a {type(fn).__name__}, not a callable")
    return fn
