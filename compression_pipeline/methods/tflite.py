"""TFLite post-training quantization of a Keras model: TensorFlow's own converter, run by the LiteRT interpreter.

The result is a ``tflite`` model (a deployable flatbuffer), not a Keras model: it is evaluated and benchmarked
with LiteRT only. Inputs and outputs stay float32 in every mode, so each runtime feeds it the same samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from compression_pipeline.methods.registry import Context, MethodConfig, register

NOTES = {
    "dynamic": "int8 weights, float activations quantized on the fly (dynamic range): 4x smaller weights",
    "float16": "float16 weights: half the size; on CPU LiteRT computes in float32 (fp16 compute is a GPU-delegate "
               "feature), so expect no CPU speedup",
    "int8": "full-integer int8: weights and activations int8, ranges calibrated on representative training samples",
}


class TFLiteQuantize(MethodConfig):
    """TFLiteConverter post-training quantization: ``dynamic`` range, ``float16`` weights or full-integer ``int8``."""

    mode: Literal["dynamic", "float16", "int8"] = "int8"
    samples: int = Field(256, ge=1, description="representative training samples (full-integer int8 only)")


@register("tflite_quantize", TFLiteQuantize, "TFLite post-training quantization (dynamic range, float16, int8)")(
    "tensorflow", produces="tflite")
def tflite_quantize(model, dst: Path, config: TFLiteQuantize, ctx: Context) -> dict:
    from compression_pipeline.data import feed
    from compression_pipeline.frameworks import keras_adapter as K

    reps = None
    if config.mode == "int8":  # as the Keras model takes them (NHWC images, normalized when the data is)
        reps = feed(ctx.splits["X_train"][: config.samples], ctx.spec, ctx.framework.layout(ctx.spec))
    K.to_tflite(model, dst, config.mode, representative=reps)
    info = {"tflite_mode": config.mode, "note": NOTES[config.mode]}
    if reps is not None:
        info["representative_samples"] = len(reps)
    return info
