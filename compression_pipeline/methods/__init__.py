"""Built-in compression methods. Importing this package registers them; no framework is imported."""

# Each import registers a method (keras_methods adds the Keras implementations to the PyTorch twins' configs).
from compression_pipeline.methods import distill, fp16, keras_methods, low_rank, pruning, quantize, share, tflite
from compression_pipeline.methods.registry import (
    METHODS,
    Context,
    Method,
    MethodConfig,
    TorchContext,
    get_method,
    methods_for,
    register,
)

__all__ = ["METHODS", "Context", "Method", "MethodConfig", "TorchContext", "distill", "fp16", "get_method",
           "keras_methods", "low_rank", "methods_for", "pruning", "quantize", "register", "share", "tflite"]
