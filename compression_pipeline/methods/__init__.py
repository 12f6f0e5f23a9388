"""Built-in compression methods. Importing this package registers them; no framework is imported."""

# Each import registers a method's implementations (one module per method, every framework's side by side).
from compression_pipeline.methods import distill, fp16, low_rank, pruning, quantize, share, tflite
from compression_pipeline.methods.registry import (
    METHODS,
    Context,
    Method,
    MethodConfig,
    get_method,
    methods_for,
    register,
)

__all__ = ["METHODS", "Context", "Method", "MethodConfig", "distill", "fp16", "get_method", "low_rank",
           "methods_for", "pruning", "quantize", "register", "share", "tflite"]
