"""LiteRT: a .tflite file in the LiteRT interpreter, on the CPU.

Per batch size the input is resized and tensors are allocated outside the clock; the timed call is set_tensor +
invoke + get_tensor (a copy), since ORT's ``run`` includes feeding and fetching too. LiteRT applies its default
delegate, XNNPACK, when tensors are first allocated (at open, part of ``load_s``); the delegate's kernels then
appear as ``DELEGATE`` nodes in the interpreter's graph (``_get_ops_details``), which is how ``provider`` says
``litert-xnnpack`` rather than ``litert-cpu`` (built-in kernels only) and ``delegated_nodes`` counts them
(``litert`` and None where the interpreter cannot list its nodes).

``precision`` is that of the input and output tensors (fp32); what the weights hold (int8, float16) is the model's
own business, as for an int8 ONNX model. There is no fp16 session (``TFLITE_FP16_REASON``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compression_pipeline.benchmark import resolve_threads
from compression_pipeline.runtimes.base import Cell, Session, check_input
from compression_pipeline.types import InputSpec, Layout

TFLITE_FP16_REASON = ("the LiteRT interpreter runs on the CPU, where fp16 is no faster than fp32; a float16 "
                      "TFLite model (float16 weights, fp32 inputs) is benchmarked as its own variant")


def delegated_nodes(interpreter) -> int | None:
    """How many nodes of the allocated interpreter's graph a delegate (XNNPACK by default) runs; None where
    this LiteRT build does not list its nodes (``_get_ops_details`` is not public API)."""
    details = getattr(interpreter, "_get_ops_details", None)
    return None if details is None else sum(op["op_name"] == "DELEGATE" for op in details())


def provider_of(nodes: int | None) -> str:
    return "litert" if nodes is None else ("litert-xnnpack" if nodes else "litert-cpu")


def open(path: Path, spec: InputSpec, layout: Layout, threads: int | None = None) -> LiteRtSession:
    """An interpreter of the .tflite file at ``path``, whose input takes ``spec``'s samples in ``layout``, with
    ``threads`` threads (None: one per core this process may use), allocated for one sample."""
    from ai_edge_litert.interpreter import Interpreter

    n_threads = resolve_threads(threads)
    t0 = time.perf_counter()
    interp = Interpreter(model_path=str(path), num_threads=n_threads)
    inp = interp.get_input_details()[0]
    check_input(inp["shape_signature"], spec, layout, path)
    interp.resize_tensor_input(inp["index"], (1, *spec.sample_shape(layout)))
    interp.allocate_tensors()  # the first allocation applies the default delegate: part of loading
    load_s = time.perf_counter() - t0
    return LiteRtSession(interpreter=interp, spec=spec, layout=layout, provider=provider_of(delegated_nodes(interp)),
                         device="cpu", threads=n_threads, load_s=load_s)


@dataclass(kw_only=True)
class LiteRtSession(Session):
    runtime: ClassVar[str] = "tflite"
    interpreter: Any

    def _resized(self, shape) -> tuple[int, int]:
        interp = self.interpreter
        inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        interp.resize_tensor_input(inp, shape)
        interp.allocate_tensors()
        return inp, out

    def cell(self, x: np.ndarray) -> Cell:
        interp = self.interpreter
        inp, out = self._resized(x.shape)
        nodes = delegated_nodes(interp)

        def call():
            interp.set_tensor(inp, x)
            interp.invoke()
            interp.get_tensor(out).copy()

        def enter():  # the interpreter holds one input shape: another batch size's cell may have resized it
            if tuple(interp.get_input_details()[0]["shape"]) != x.shape:
                self._resized(x.shape)

        return Cell(call, {"provider": provider_of(nodes), "delegated_nodes": nodes}, enter=enter)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        inp, out = self._resized(x.shape)
        self.interpreter.set_tensor(inp, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(out).astype(np.float32)

    def half(self) -> Session | str:
        return TFLITE_FP16_REASON
