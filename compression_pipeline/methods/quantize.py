"""int8 quantization with ONNX Runtime's own quantization tools (works on any framework's ONNX export, and on a
user's ONNX file).

Static QDQ's activation type decides its speed, by CPU and model: measured on an Intel Xeon with AVX-512 VNNI and
AMX, ResNet-18 ran 0.35-0.44x fp32 with int8 activations (S8S8) and 1.2-1.4x with uint8 ones (U8S8), while the
digits CNN ran about 2.5x either way. ``activation_type: auto`` (the default) quantizes both ways and keeps the one
that runs faster here, on a calibration batch, and records both timings; ``uint8`` or ``int8`` fixes it.
"""

from __future__ import annotations

import shutil
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
    activation_type: Literal["auto", "uint8", "int8"] = Field(
        "auto", description="int8 weights with uint8 (U8S8) or int8 (S8S8) activations; auto: the faster here")


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
    samples = calibration[: config.samples]
    kinds = ["uint8", "int8"] if config.activation_type == "auto" else [config.activation_type]
    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocessed(src, Path(tmp))
        built = {kind: Path(tmp) / f"{kind}.onnx" for kind in kinds}
        for kind, out in built.items():
            _quantize(pre, out, config, samples, kind)
        info = {"calibration_samples": len(samples)}
        if len(kinds) == 1:
            chosen = kinds[0]
            info.update(activation_type=chosen, activation_type_choice="declared")
        else:
            timings = {kind: _p50_ms(out, samples) for kind, out in built.items()}
            chosen = min(timings, key=timings.get)
            info.update(activation_type=chosen, activation_type_choice="measured: the faster on this machine",
                        activation_type_p50_ms=timings)
        shutil.copyfile(built[chosen], dst)
    info["note"] = (f"{'U8S8' if chosen == 'uint8' else 'S8S8'} static QDQ ({chosen} activations, int8 weights"
                    + (f"; {info['activation_type_p50_ms']['uint8']:.3g} ms uint8 vs "
                       f"{info['activation_type_p50_ms']['int8']:.3g} ms int8 on a calibration batch here)"
                       if "activation_type_p50_ms" in info else ", as declared)"))
    return info


def _quantize(pre: Path, dst: Path, config: QuantizeStatic, samples: np.ndarray, activations: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples[i: i + 32] for i in range(0, len(samples), 32))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    ort_quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                        reduce_range=config.reduce_range,
                        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method)


def _p50_ms(path: Path, samples: np.ndarray, runs: int = 30) -> float:
    """Median latency of one calibration batch (up to 32 samples) after a short warm-up: enough to tell two
    activation types apart when one is several times slower, as they are where it matters."""
    import time

    from compression_pipeline import onnx_tools

    sess = onnx_tools.session(path, "cpu")
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(samples[:32])}
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


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
