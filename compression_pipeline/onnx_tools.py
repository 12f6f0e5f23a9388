"""ONNX: graph fixes for exports, ONNX Runtime sessions on the best device that really loads, a model's input layout,
predictions and parameter counts."""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy as np

# onnxruntime-gpu 1.31 reads IR version <= 13 (onnx 1.23 writes 14 by default); 10 is read by every current ORT.
IR_VERSION = 10


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


def input_dims(path: Path) -> list[int | str | None]:
    """The first input's dimensions as the graph declares them (an int, a symbolic name, or None), read without
    loading the weights."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value or d.dim_param or None for d in dims]


def infer_layout(path: Path, spec) -> str:
    """The layout a user's ONNX model takes, read from its input's shape against the data's ``InputSpec``: NF for
    feature vectors; NCHW or NHWC for images when the dimensions tell them apart. Anything else is an error that
    says to declare ``input_layout``."""
    dims = input_dims(path)[1:]
    fixed = [d if isinstance(d, int) else None for d in dims]

    def fits(layout):
        want = spec.sample_shape(layout)
        return len(fixed) == len(want) and all(d is None or d == w for d, w in zip(fixed, want))

    candidates = [lay for lay in (("NF",) if spec.kind == "features" else ("NCHW", "NHWC")) if fits(lay)]
    if len(candidates) == 1:
        return candidates[0]
    shown = "x".join(str(d) for d in dims)
    if not candidates:
        raise ValueError(f"{path.name}: its input is (batch, {shown}), which takes none of the data's samples "
                         f"{spec.sample_shape('NCHW' if spec.kind == 'image' else 'NF')} in NCHW"
                         + (f" or {spec.sample_shape('NHWC')} in NHWC" if spec.kind == "image" else ""))
    raise ValueError(f"{path.name}: its input (batch, {shown}) could be NCHW or NHWC: declare "
                     "'baseline.input_layout'")


def predict(sess, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``X``, samples already in the layout (and normalization) the model takes (``data.feed``)."""
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: np.ascontiguousarray(X[i: i + batch_size])})[0] for i in range(0, len(X), batch_size)]
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
