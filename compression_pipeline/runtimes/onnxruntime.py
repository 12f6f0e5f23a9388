"""ONNX Runtime: an ONNX file in an InferenceSession on the best provider that really loads.

Only providers that can load are asked for (``onnx_tools.providers_for``); the provider really used is recorded
(``provider``, ``providers_requested``, ``fallback``) and a fallback from a demanded CUDA is an error. On CUDA the
input and output are bound on the device (IOBinding, ``io_binding: true``) and each call waits for the outputs, so
the timing is compute, not copies; ``h2d_ms`` times the copy of one input batch apart. Device memory is the
process's after the cell (ORT's arena only grows, so that is its peak; it includes the CUDA context). The fp16
session is the model with float weights cast to fp16 (inputs and outputs stay fp32), on CUDA only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compression_pipeline.benchmark import resolve_threads
from compression_pipeline.runtimes.base import FP16_CPU_REASON, Cell, Session, check_input, copy_ms, device_memory
from compression_pipeline.types import InputSpec, Layout


def open(path: Path, spec: InputSpec, layout: Layout, device: str = "cpu",
         threads: int | None = None) -> OnnxRuntimeSession:
    """A session of the ONNX file at ``path``, whose input takes ``spec``'s samples in ``layout``, on ``device``
    (cpu, cuda: CUDA or an error, auto: CUDA where it really loads) with ``threads`` intra-op threads (None: one
    per core this process may use)."""
    from compression_pipeline import onnx_tools

    n_threads = resolve_threads(threads)
    asked = onnx_tools.providers_for(device)
    t0 = time.perf_counter()
    sess = onnx_tools.session(path, device, n_threads)
    load_s = time.perf_counter() - t0
    check_input(sess.get_inputs()[0].shape, spec, layout, path)
    provider = sess.get_providers()[0]
    if provider != asked[0] and device == "cuda":  # a fallback: an error when CUDA was demanded, a fact otherwise
        raise RuntimeError(f"ONNX Runtime was asked for {asked[0]} but runs on {provider}")
    return _wrap(sess, Path(path), spec, layout, n_threads, load_s,
                 {"providers_requested": asked, "fallback": provider != asked[0]})


def _wrap(sess, path, spec, layout, threads, load_s, fields, precision="fp32") -> OnnxRuntimeSession:
    provider = sess.get_providers()[0]
    on_gpu = provider != "CPUExecutionProvider"
    return OnnxRuntimeSession(session=sess, path=path, spec=spec, layout=layout, provider=provider,
                              device="cuda" if on_gpu else "cpu", threads=threads, load_s=load_s,
                              precision=precision, fields={**fields, "io_binding": on_gpu})


@dataclass(kw_only=True)
class OnnxRuntimeSession(Session):
    runtime: ClassVar[str] = "onnxruntime"
    session: Any  # onnxruntime.InferenceSession
    path: Path

    def cell(self, x: np.ndarray) -> Cell:
        sess = self.session
        name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
        if self.device == "cpu":
            return Cell(lambda: sess.run([out_name], {name: x}))
        import onnxruntime as ort

        binding = sess.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(out_name, "cuda", 0)

        def call():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return Cell(call, {"h2d_ms": copy_ms(lambda: ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))},
                    device_memory)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.session.get_inputs()[0].name: x})[0], dtype=np.float32)

    def half(self) -> Session | str:
        if self.provider != "CUDAExecutionProvider":
            return FP16_CPU_REASON
        from compression_pipeline import onnx_tools

        t0 = time.perf_counter()
        blob, why = _fp16_bytes(self.path)
        if blob is None:
            return why
        sess = onnx_tools.session(blob, "cuda", self.threads)
        return _wrap(sess, self.path, self.spec, self.layout, self.threads, time.perf_counter() - t0, self.fields,
                     "fp16")


def _is_quantized(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger", "ConvInteger",
                             "DynamicQuantizeLinear") for n in model.graph.node)


def _fp16_bytes(path: Path) -> tuple[bytes | None, str | None]:
    """The model with float weights cast to fp16 (inputs/outputs stay fp32), or the reason it cannot be."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    if _is_quantized(model):
        return None, "the model is int8-quantized; an fp16 cast applies to float models only"
    try:
        return convert_float_to_float16(model, keep_io_types=True).SerializeToString(), None
    except Exception as e:  # any failure: the fp16 cells are skipped with it as their reason, and it is logged
        logging.getLogger(__name__).exception("fp16 conversion of %s failed; its fp16 cells are skipped", path)
        return None, f"ORT's fp16 conversion failed: {type(e).__name__}: {e}"

