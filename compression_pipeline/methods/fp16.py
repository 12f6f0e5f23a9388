"""Half precision at the ONNX level: float32 weights and compute become float16, inputs and outputs stay float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from compression_pipeline.methods.registry import MethodConfig, register

FP16_NOTE = ("half-size weights, a GPU format: ONNX Runtime's CPU provider runs most float16 ops by casting back "
             "to float32, so on CPU expect no speedup")


class FP16(MethodConfig):
    """onnxruntime.transformers' float16 converter; ``keep_io_types`` keeps the model's interface float32."""

    keep_io_types: bool = True
    op_block_list: list[str] | None = Field(None, description="op types left in float32 (None: ORT's default list)")


@register("fp16", FP16, "ONNX float16 conversion (float32 inputs and outputs kept)")("onnx")
def fp16(src: Path, dst: Path, config: FP16, calibration: np.ndarray) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    from compression_pipeline import onnx_tools

    model = onnx.load(str(src))
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear") for n in model.graph.node):
        raise ValueError(f"fp16 converts a float32 model; {src} is already quantized (pick a float parent)")
    half = convert_float_to_float16(model, keep_io_types=config.keep_io_types, op_block_list=config.op_block_list)
    # The converter appends the float32 -> float16 input casts at the end of the node list; ONNX requires
    # topological order (ORT tolerates it, onnx.checker does not), so sort with ORT's own graph tool.
    wrapped = OnnxModel(half)
    wrapped.topological_sort()
    half = wrapped.model
    half.ir_version = min(half.ir_version, onnx_tools.IR_VERSION)
    onnx.checker.check_model(half)
    onnx.save(half, str(dst))
    onnx_tools.session(dst, "cpu", 1)  # fails here, not in the benchmark, if CPU ONNX Runtime cannot load it
    n_half = sum(1 for t in half.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return {"float16_initializers": n_half, "keep_io_types": config.keep_io_types, "note": FP16_NOTE}
