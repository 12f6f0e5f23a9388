"""The TensorFlow / Keras 3 adapter: any Keras classification model (the zoo's, a user's builder's) trained,
predicted, counted, stored and exported the one way the pipeline needs, plus the TFLite conversion and its LiteRT
runner. Images are fed channels-last (NHWC), feature vectors as (n, F).

TensorFlow fixes its thread counts when its runtime starts: ``set_threads`` (``runtimes.tf_function.
configure_threads``) must come before the first model is built or loaded when the count matters. (Named
``keras_adapter`` rather than ``keras``: Python 3's absolute imports would still find the real package, but a
module named like a package it uses reads as a shadow.)
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compression_pipeline.frameworks.base import Fit, Framework, History, pace
from compression_pipeline.types import InputSpec, Layout, ZooModel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported: no C++ info logs
TFLITE_MODES = ("fp32", "dynamic", "float16", "int8")
ONNX_OPSET = 17


def _feed(X: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Stored samples -> what a Keras model takes (normalized, images channels-last)."""
    from compression_pipeline.data import feed

    return feed(X, spec, spec.default_layout("tensorflow"))


class KerasFramework(Framework):
    name = "tensorflow"
    suffix = "keras"

    # --- models ---------------------------------------------------------------------------------------------------
    def build(self, source, spec: InputSpec, seed: int | None = None, data_root: Path | None = None) -> Any:
        from compression_pipeline.frameworks import keras_io, keras_zoo

        if isinstance(source, ZooModel):
            model = keras_zoo.build(source, spec, seed)
            keras_io.check(model, spec, f"zoo model {source.arch!r}")
            return model
        return keras_io.build_import(source, spec, seed, data_root)

    def save(self, model, path: Path) -> None:
        from compression_pipeline.frameworks import keras_io

        keras_io.save(model, path)

    def load(self, path: Path) -> Any:
        from compression_pipeline.frameworks import keras_io

        return keras_io.load(path)

    def copy(self, model) -> Any:
        from compression_pipeline.frameworks import keras_io

        return keras_io.copy(model)

    # --- data -----------------------------------------------------------------------------------------------------
    def set_threads(self, threads: int | None) -> None:
        """Intra-op threads (None: one per core); TF keeps its inter-op pool (training uses it). In a process where
        TensorFlow already runs, the running value stays (TF cannot change it): the step records what is in effect."""
        from compression_pipeline.runtimes.tf_function import configure_threads

        configure_threads(threads, inter_op=None)

    def kernels(self, model) -> dict[str, np.ndarray]:
        return {path: np.array(v) for path, v in _kernels(model).items()}

    def set_kernels(self, model, kernels: dict[str, np.ndarray]) -> None:
        variables = _kernels(model)
        unknown = sorted(set(kernels) - set(variables))
        if unknown:
            raise KeyError(f"no convolution or dense kernels named {unknown} in model {model.name!r}")
        for path, value in kernels.items():
            variables[path].assign(np.asarray(value, dtype=np.float32))

    def layout(self, spec: InputSpec) -> Layout:
        return spec.default_layout("tensorflow")

    def fit(self, model, splits: dict[str, np.ndarray], spec: InputSpec, fit: Fit, teacher=None,
            keep_zero: bool = False, log: Callable[[str], Any] | None = None) -> list[dict]:
        """Adam with a cosine schedule; the best validation epoch's weights kept. With a ``teacher`` (a Keras model),
        its logits are computed once (it sees no augmentation) and the loss is distillation's (``base.Fit``).
        ``keep_zero``: every kernel (a trainable variable of rank >= 2; biases and normalization scales may be
        zero by design) keeps its zeros: they are re-applied after every batch, since Adam's momentum would revive
        them. XLA is off: on this CPU it compiled MobileNetV2's train step ~30 s longer and ran epochs 3.5x slower."""
        import keras

        if fit.epochs < 1:
            return History()
        t_start = time.perf_counter()
        keras.utils.set_random_seed(fit.seed)
        X, y = _feed(splits["X_train"], spec), np.asarray(splits["y_train"])
        if teacher is not None:
            soft = self.predict(teacher, splits["X_train"], spec)
            # Keras losses see one target tensor: the label travels as column 0, the teacher's logits after it.
            y = np.concatenate([y.reshape(-1, 1).astype(np.float32), soft], axis=1)
            loss = _distill_loss(fit.temperature, fit.alpha)
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        steps = fit.epochs * math.ceil(len(X) / fit.batch_size)
        model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(fit.lr, steps)),
                      loss=loss, jit_compile=False)
        callbacks = [_zero_keeper(model)] if keep_zero else []
        history, best, train_s = History(), (-1.0, None), 0.0
        for epoch in range(fit.epochs):
            t0 = time.perf_counter()
            h = model.fit(X, y, epochs=1, batch_size=fit.batch_size, shuffle=True, verbose=0, callbacks=callbacks)
            train_s += time.perf_counter() - t0
            val = float((self.predict(model, splits["X_val"], spec).argmax(1) == splits["y_val"]).mean())
            history.append({"epoch": epoch + 1, "loss": float(h.history["loss"][-1]), "val_accuracy": val})
            if log:
                log(f"epoch {epoch + 1}/{fit.epochs}: loss {history[-1]['loss']:.4f}, val accuracy {val:.4f} "
                    f"({pace(epoch + 1, fit.epochs, t_start)})")
            if val > best[0]:
                best = (val, [w.copy() for w in model.get_weights()])
        model.set_weights(best[1])
        history.training = _training_record(fit, len(X), train_s, time.perf_counter() - t_start)
        return history

    def predict(self, model, X: np.ndarray, spec: InputSpec, batch_size: int = 256) -> np.ndarray:
        model.jit_compile = False  # an uncompiled model's "auto" means XLA on TensorFlow: slower here (see fit)
        out = model.predict(_feed(X, spec), batch_size=batch_size, verbose=0)
        return np.asarray(out, dtype=np.float32).reshape(len(X), spec.num_classes)

    # --- facts and exports ----------------------------------------------------------------------------------------
    def count_params(self, model) -> tuple[int, int]:
        """Every weight of the model, Keras' count_params() (normalization statistics included: PyTorch keeps those
        as buffers, not parameters), and how many are nonzero."""
        values = [np.asarray(w) for w in model.weights]
        return sum(v.size for v in values), sum(int(np.count_nonzero(v)) for v in values)

    def count_macs(self, model, spec: InputSpec) -> int:
        """Multiply-accumulates of one sample, read from the operations TensorFlow runs: every convolution
        (Conv2D, Conv3D, depthwise; Keras' SeparableConv2D is one of each) and matrix product one of whose operands
        is a weight variable (Dense, FactorizedDense, 1x1 projections), at their traced shapes. Any Keras model
        (subclassed, nested, layers called twice) counts alike; bias adds, activations, pooling, normalization and
        products of two activations (attention scores) are not counted."""
        import tensorflow as tf

        shape = (1, *spec.sample_shape(self.layout(spec)))
        graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec(shape, tf.float32)).graph
        macs = 0
        for op in graph.get_operations():
            if op.type in ("Conv2D", "Conv3D", "DepthwiseConv2dNative") and _is_weight(op.inputs[1]):
                kernel = op.inputs[1].shape.as_list()
                per_output = math.prod(kernel[:2] if op.type == "DepthwiseConv2dNative" else kernel[:-1])
                macs += math.prod(op.outputs[0].shape.as_list()) * per_output
            elif op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3") and any(_is_weight(t) for t in op.inputs):
                a = op.inputs[0].shape.as_list()
                transposed = any(op.get_attr(k) for k in ("transpose_a", "adj_x") if k in op.node_def.attr)
                macs += math.prod(op.outputs[0].shape.as_list()) * (a[-2] if transposed else a[-1])
        return int(macs)

    def export_onnx(self, model, path: Path, spec: InputSpec) -> Layout:
        """tf2onnx from a tf.function with a (None, ...) input named "input" (``from_keras`` fails on Keras 3); the
        flatten's run-time shape made constant (``onnx_tools.static_flatten``); the output renamed "logits", like
        the PyTorch exports'."""
        import onnx
        import tensorflow as tf
        import tf2onnx

        from compression_pipeline.onnx_tools import IR_VERSION, static_flatten

        layout = self.layout(spec)
        signature = (tf.TensorSpec((None, *spec.sample_shape(layout)), tf.float32, name="input"),)
        serve = tf.function(lambda x: model(x, training=False), input_signature=signature)
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=ONNX_OPSET,
                                                 output_path=None)
        proto = static_flatten(proto)
        _rename_output(proto, "logits")
        proto.ir_version = min(proto.ir_version, IR_VERSION)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        return layout


def _is_weight(tensor) -> bool:
    """Whether ``tensor`` is a variable's value (through casts and reshapes), i.e. a weight, not an activation."""
    op = tensor.op
    while op.type in ("Identity", "Cast", "ExpandDims", "Reshape", "Squeeze", "Transpose") and op.inputs:
        op = op.inputs[0].op
    return op.type == "ReadVariableOp"


def _rename_output(proto, name: str) -> None:
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


def _distill_loss(temperature: float, alpha: float):
    from keras import ops

    def loss(target, logits):
        labels = ops.cast(target[:, 0], "int32")
        t, s = target[:, 1:] / temperature, logits / temperature
        kl = ops.sum(ops.softmax(t) * (ops.log_softmax(t) - ops.log_softmax(s)), axis=-1)
        ce = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return alpha * temperature ** 2 * kl + (1 - alpha) * ce  # per sample; Keras averages over the batch

    return loss


def _training_record(fit: Fit, rows: int, train_s: float, wall_s: float) -> dict:
    """How a Keras model was trained, in the words of ``pytorch_train``'s record: one process, fp32, unaugmented
    (the recipe refuses the rest for Keras models); the device is the one TensorFlow placed the model on."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return {"framework": "tensorflow", "device": "cuda" if gpus else "cpu", "processes": 1, "backend": None,
            "precision": "fp32", "preload": True, "preload_reason": "Keras feeds the in-memory arrays",
            "augment": [], "epochs": fit.epochs, "train_s": round(train_s, 3), "wall_s": round(wall_s, 3),
            "samples": fit.epochs * rows, "samples_per_s": round(fit.epochs * rows / train_s, 1) if train_s else None}


def _zero_keeper(model):
    """A callback that re-zeroes, after every training batch, the weights of each kernel that are zero now."""
    import keras

    masks = []
    for v in model.trainable_variables:
        value = np.asarray(v)
        if value.ndim >= 2 and not value.all():
            masks.append((v, keras.ops.convert_to_tensor((value != 0).astype(value.dtype))))

    class KeepZero(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for v, mask in masks:
                v.assign(v * mask)

    return KeepZero()


# --- TFLite (LiteRT) --------------------------------------------------------------------------------------------
def to_tflite(model, path: Path, mode: str = "fp32", representative: np.ndarray | None = None) -> None:
    """Convert to TFLite: fp32, dynamic (int8 weights), float16 (weights), or int8 (full integer, calibrated on
    ``representative`` samples as the model is fed them: NHWC, normalized). Full integer keeps float32 inputs and
    outputs, so every runtime feeds every variant alike."""
    import tensorflow as tf

    if mode not in TFLITE_MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; allowed: {TFLITE_MODES}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative is None or not len(representative):
            raise ValueError("TFLite int8 (full integer) needs representative samples to calibrate on")
        samples = np.asarray(representative, dtype=np.float32)
        converter.representative_dataset = lambda: ([samples[i: i + 1]] for i in range(len(samples)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints every captured variable of its SavedModel export
        flatbuffer = converter.convert()
    Path(path).write_bytes(flatbuffer)


def tflite_interpreter(path: Path, threads: int | None = None):
    """A LiteRT interpreter of ``path`` on ``threads`` threads (None: one per core this process may use)."""
    from ai_edge_litert.interpreter import Interpreter

    from compression_pipeline.benchmark import resolve_threads

    return Interpreter(model_path=str(path), num_threads=resolve_threads(threads))


def predict_tflite(path_or_interpreter, X: np.ndarray, spec: InputSpec, threads: int | None = None,
                   batch_size: int = 256) -> np.ndarray:
    """Logits (n, classes) of a TFLite model (a file, or an interpreter already open) for stored samples ``X``."""
    interpreter = (path_or_interpreter if hasattr(path_or_interpreter, "invoke")
                   else tflite_interpreter(path_or_interpreter, threads))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    fed, results = _feed(X, spec), []
    for i in range(0, len(fed), batch_size):
        batch = fed[i: i + batch_size]
        interpreter.resize_tensor_input(inp["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results).astype(np.float32)


def _kernels(model) -> dict:
    """Every trainable weight of 2+ dimensions (convolution, dense and factorized kernels) by its path
    (``<layer>/<variable>``)."""
    return {v.path: v for v in model.trainable_weights if len(v.shape) >= 2}
