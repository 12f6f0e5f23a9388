"""Built-in compression methods. Importing this package registers them; no framework is imported."""

from compression_pipeline.methods import distill, fp16, low_rank, pruning, quantize, share, tflite  # noqa: F401
from compression_pipeline.methods import keras_methods  # noqa: F401,I001  (after the torch twins: same configs)
from compression_pipeline.methods.registry import (METHODS, Context, Method, MethodConfig, TorchContext, get_method,
                                                   methods_for, register)

__all__ = ["METHODS", "Context", "Method", "MethodConfig", "TorchContext", "get_method", "methods_for", "register"]
