"""ONNX: export from PyTorch, ONNX Runtime sessions on the best device that really loads, predictions, parity."""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from compression_pipeline.data import as_images

# onnxruntime-gpu 1.31 reads IR version <= 13 (onnx 1.23 writes 14 by default); 10 is read by every current ORT.
IR_VERSION = 10


def export_torch(module, spec, path: Path) -> None:
    """Export with the dynamo exporter, a dynamic batch dimension, weights inside the one file."""
    import onnx
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    module = module.eval()
    example = torch.zeros((2, *spec.in_shape), dtype=torch.float32)
    program = torch.onnx.export(module, (example,), input_names=["input"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    model = program.model_proto
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def static_flatten(model):
    """Replace each Reshape whose target shape is computed at run time (Shape -> Gather -> ... -> Concat, as tf2onnx
    writes Keras' Flatten) but is really (batch, known dims...) with the constant (-1, known dims...), and drop the
    nodes that computed it. ONNX Runtime's int8 fusions stop at such a subgraph: measured on the digits CNN, the
    last convolution stayed float32 and the static int8 model ran 4x slower than PyTorch's export."""
    import numpy as np
    from onnx import numpy_helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.graph.value_info, *inferred.graph.input]}
    batch = dims[model.graph.input[0].name][0]
    constants = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        out = dims.get(node.output[0]) or []
        if node.op_type != "Reshape" or node.input[1] in constants or not out or out[0] != batch:
            continue
        if not all(isinstance(d, int) and d > 0 for d in out[1:]):
            continue
        name = f"{node.output[0]}__static_shape"
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, *out[1:]], dtype=np.int64), name))
        node.input[1] = name
    while True:  # nodes nobody reads any more (the shape computation)
        read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    read = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)
    return model


@lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True only when a CUDA driver really loads here (the onnxruntime-gpu wheel lists CUDA even without one)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels (torch's), when installed
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()
    # The driver loads, but the provider also needs the CUDA/cuDNN user libraries: open a real session on a
    # one-node model and see which provider it ends up with.
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any failure to start the provider means "not usable"
        return False
    return sess.get_providers()[0] == "CUDAExecutionProvider"


def providers_for(device: str) -> list[str]:
    """Providers to ask for: only those that can load, so nothing falls back silently."""
    if device == "cuda" and not cuda_usable():
        raise RuntimeError("device 'cuda' was asked for, but no usable CUDA driver/provider is present")
    if device in ("cuda", "auto") and cuda_usable():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: Path | str | bytes, device: str = "cpu", threads: int | None = None):
    """An InferenceSession of a file (or serialized model bytes); ``session.get_providers()[0]`` is the provider
    really used."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=providers_for(device))


def feed_layout(dims, image_shape) -> tuple[int, ...]:
    """The per-sample shape a model's input expects: (1, h, w) for PyTorch exports (NCHW), (h, w, 1) for Keras
    exports (NHWC). Read from the graph's input dims, so every caller feeds each model the way it was built."""
    h, w = image_shape
    return (h, w, 1) if list(dims[1:]) == [h, w, 1] else (1, h, w)


def input_layout(path: Path, image_shape) -> tuple[int, ...]:
    """``feed_layout`` of an ONNX file's first input, read from the graph without loading its weights."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return feed_layout([d.dim_value or None for d in dims], image_shape)


def predict(sess, X: np.ndarray, image_shape, batch_size: int = 256) -> np.ndarray:
    inp = sess.get_inputs()[0]
    layout = feed_layout(inp.shape, image_shape)
    out = [sess.run(None, {inp.name: as_images(X[i: i + batch_size], image_shape).reshape(-1, *layout)})[0]
           for i in range(0, len(X), batch_size)]
    return np.concatenate(out).astype(np.float32)


_COMPUTE_OPS = ("DequantizeLinear", "Conv", "Gemm", "MatMul", "Add", "QLinearConv", "QLinearMatMul", "ConvInteger",
                "MatMulInteger")


def param_count(path: Path) -> tuple[int, int]:
    """(parameters, nonzero parameters): the weight and bias initializers, float or quantized.

    Quantization scales and zero points (inputs 1 and 2 of Q/DQ nodes) and shape tensors are not parameters: an
    int32 initializer counts only when it feeds a computation (an int8 model's bias), not a shape (tf2onnx writes
    int32 shape constants for Concat/Slice/Reshape).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    qparams = {n for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
               for n in node.input[1:]}
    computed = {n for node in model.graph.node if node.op_type in _COMPUTE_OPS for n in node.input}
    kinds = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    total = nonzero = 0
    for init in model.graph.initializer:
        counted = init.data_type in kinds or (init.data_type == onnx.TensorProto.INT32 and init.name in computed)
        if counted and init.name not in qparams and len(init.dims) > 0:
            a = numpy_helper.to_array(init)
            total += a.size
            nonzero += int(np.count_nonzero(a))
    return total, nonzero
