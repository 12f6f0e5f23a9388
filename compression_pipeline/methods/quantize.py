"""int8 quantization with ONNX Runtime's own quantization tools (works on any framework's ONNX export)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from compression_pipeline.methods.registry import MethodConfig, register


class QuantizeStatic(MethodConfig):
    """Static int8 QDQ: weights and activations int8, activation ranges calibrated on training samples."""

    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    samples: int = Field(256, ge=1, description="training samples used for calibration")
    reduce_range: bool = False


class QuantizeDynamic(MethodConfig):
    """Dynamic int8: weights int8, activations quantized on the fly. Convs are left alone by default:
    ORT's ConvInteger is several times slower than fp32 Conv on CPU."""

    op_types: list[str] = Field(default_factory=lambda: ["MatMul", "Gemm"])
    per_channel: bool = False


def _preprocessed(src: Path, workdir: Path) -> Path:
    """ORT's recommended pre-processing (shape inference + graph optimization) before quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "pre.onnx"
    quant_pre_process(str(src), str(out))
    return out


@register("quantize_static", QuantizeStatic, "ONNX Runtime static int8 (QDQ), calibrated")("onnx")
def quantize_static(src: Path, dst: Path, config: QuantizeStatic, calibration: np.ndarray) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    samples = calibration[: config.samples]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples[i: i + 32] for i in range(0, len(samples), 32))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocessed(src, Path(tmp))
        ort_quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                            reduce_range=config.reduce_range, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method)
    return {"calibration_samples": len(samples)}


@register("quantize_dynamic", QuantizeDynamic, "ONNX Runtime dynamic int8 (weights int8)")("onnx")
def quantize_dynamic(src: Path, dst: Path, config: QuantizeDynamic, calibration: np.ndarray) -> dict:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocessed(src, Path(tmp))
        ort_quantize_dynamic(str(pre), str(dst), op_types_to_quantize=list(config.op_types),
                             per_channel=config.per_channel, weight_type=QuantType.QInt8)
    info = {"op_types": list(config.op_types)}
    if "Conv" not in config.op_types:
        info["note"] = (f"int8 weights for {'/'.join(config.op_types)} only; convolutions stay float32 (dynamic "
                        "ConvInteger is slower on CPU), so a conv-heavy model gains little speed")
    return info
