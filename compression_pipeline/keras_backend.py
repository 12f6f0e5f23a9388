"""TensorFlow / Keras 3: the zoo's CNN built in Keras, trained on the same splits, exported to ONNX and TFLite.

The Keras model has the same layers and parameter count as the PyTorch one (``zoo.build_torch``), in
channels-last layout: inputs are (n, h, w, 1). It is saved in Keras' own ``.keras`` format and loaded with
``safe_mode=True`` (no arbitrary code). ONNX export goes through ``tf2onnx.convert.from_function`` on a
``tf.function`` (``from_keras`` fails on Keras 3); TFLite through ``tf.lite.TFLiteConverter``, run with LiteRT.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from compression_pipeline.zoo import CNNSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TFLITE_MODES = ("fp32", "dynamic", "float16", "int8")


def images_nhwc(X: np.ndarray, image_shape) -> np.ndarray:
    h, w = image_shape
    return np.ascontiguousarray(X.reshape(len(X), h, w, 1), dtype=np.float32)


def build_keras(spec: CNNSpec, seed: int | None = None):
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    c0, c1, c2 = spec.channels
    _, h, w = spec.in_shape
    L = keras.layers
    return keras.Sequential([
        keras.Input((h, w, spec.in_shape[0]), name="input"),
        L.Conv2D(c0, 3, padding="same", activation="relu"),
        L.Conv2D(c1, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(c2, 3, padding="same", activation="relu"),
        # PyTorch flattens (c, h, w); Keras (h, w, c): the same parameter count, a different order.
        L.Flatten(),
        L.Dropout(spec.dropout), L.Dense(spec.hidden, activation="relu"),
        L.Dropout(spec.dropout), L.Dense(spec.num_classes),
    ], name="cnn")


def train_keras(model, splits: dict, image_shape, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                seed: int = 0, log=None) -> list[dict]:
    """Adam + cross-entropy with a cosine schedule; keeps the weights of the best validation epoch."""
    import keras

    keras.utils.set_random_seed(seed)
    X, y = images_nhwc(splits["X_train"], image_shape), splits["y_train"]
    Xv, yv = images_nhwc(splits["X_val"], image_shape), splits["y_val"]
    steps = epochs * int(np.ceil(len(X) / batch_size))
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history, best = [], (-1.0, None)
    for epoch in range(epochs):
        h = model.fit(X, y, epochs=1, batch_size=batch_size, shuffle=True, verbose=0)
        val = accuracy(predict_keras(model, splits["X_val"], image_shape), yv)
        history.append({"epoch": epoch + 1, "loss": float(h.history["loss"][-1]), "val_accuracy": val})
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, val accuracy {val:.4f}")
        if val > best[0]:
            best = (val, [w.copy() for w in model.get_weights()])
    if best[1] is not None:
        model.set_weights(best[1])
    return history


def predict_keras(model, X: np.ndarray, image_shape, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(images_nhwc(X, image_shape), batch_size=batch_size, verbose=0), dtype=np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def save_keras(model, path: Path) -> None:
    model.save(str(path))


def load_keras(path: Path):
    import keras

    return keras.models.load_model(str(path), safe_mode=True, compile=False)


def count_params(model) -> tuple[int, int]:
    total = nonzero = 0
    for w in model.get_weights():
        total += w.size
        nonzero += int(np.count_nonzero(w))
    return total, nonzero


def _serving_fn(model):
    import tensorflow as tf

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def serve(x):
        return model(x, training=False)

    return serve, spec


def export_onnx(model, path: Path, opset: int = 17) -> None:
    import onnx
    import tf2onnx

    from compression_pipeline.onnx_tools import IR_VERSION

    serve, spec = _serving_fn(model)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset, output_path=None)
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def to_tflite(model, path: Path, mode: str = "fp32", representative: np.ndarray | None = None) -> None:
    """Convert to TFLite: fp32, dynamic-range int8 weights, float16 weights, or full-integer int8 (needs
    ``representative`` samples, NHWC). Full-integer keeps float32 inputs/outputs so every runtime feeds it alike."""
    import tensorflow as tf

    if mode not in TFLITE_MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; allowed: {TFLITE_MODES}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "fp32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative is None:
            raise ValueError("full-integer int8 needs representative samples")
        reps = representative

        def gen():
            for i in range(len(reps)):
                yield [reps[i: i + 1]]

        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    Path(path).write_bytes(conv.convert())


def tflite_interpreter(path: Path, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())


def predict_tflite(interpreter, X: np.ndarray, image_shape, batch_size: int = 256) -> np.ndarray:
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for i in range(0, len(X), batch_size):
        xb = images_nhwc(X[i: i + batch_size], image_shape)
        interpreter.resize_tensor_input(inp["index"], xb.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], xb)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results).astype(np.float32)
