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
    """The Keras model of ``spec``, layers named like ``zoo.named_layers`` (conv1..conv3, fc1, fc2), so a recipe's
    ``layers: [fc1]`` means the same layer in both frameworks. A factorized fc (``spec.linear_ranks``) is two
    Dense layers, ``<fc>_a`` (in -> r, no bias) then ``<fc>_b`` (r -> out, bias, activation), like PyTorch's."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    c0, c1, c2 = spec.channels
    _, h, w = spec.in_shape
    (_, fc1_out), (_, fc2_out) = spec.linear_shapes()
    r1, r2 = spec.linear_ranks
    L = keras.layers
    return keras.Sequential([
        keras.Input((h, w, spec.in_shape[0]), name="input"),
        L.Conv2D(c0, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(c1, 3, padding="same", activation="relu", name="conv2"), L.MaxPooling2D(2, name="pool"),
        L.Conv2D(c2, 3, padding="same", activation="relu", name="conv3"),
        # PyTorch flattens (c, h, w); Keras (h, w, c): the same parameter count, a different order.
        L.Flatten(name="flatten"),
        L.Dropout(spec.dropout, name="drop1"), *_dense(L, "fc1", fc1_out, r1, "relu"),
        L.Dropout(spec.dropout, name="drop2"), *_dense(L, "fc2", fc2_out, r2, None),
    ], name="cnn")


def _dense(L, name: str, n_out: int, rank: int | None, activation):
    if rank is None:
        return [L.Dense(n_out, activation=activation, name=name)]
    # kernel (in x out) ~= A B with A: in x rank, B: rank x out; the bias and activation stay on the second factor.
    return [L.Dense(rank, use_bias=False, name=f"{name}_a"), L.Dense(n_out, activation=activation, name=f"{name}_b")]


def named_layers(model) -> dict:
    """The weight layers by stable name: conv1..conv3, fc1, fc2; a factorized fc is the tuple of its two Dense."""
    by_name = {layer.name: layer for layer in model.layers}
    out = {}
    for name in ("conv1", "conv2", "conv3", "fc1", "fc2"):
        if name in by_name:
            out[name] = by_name[name]
        elif f"{name}_a" in by_name and f"{name}_b" in by_name:
            out[name] = (by_name[f"{name}_a"], by_name[f"{name}_b"])
        else:
            raise ValueError(f"Keras model {model.name!r} has no layer {name!r} (nor {name}_a/{name}_b); "
                             f"layers: {sorted(by_name)}")
    return out


def spec_of(model, spec: CNNSpec) -> CNNSpec:
    """Read the widths and ranks back from a model built by ``build_keras`` (the Keras twin of ``zoo.spec_of``)."""
    layers = named_layers(model)
    fcs = [layers["fc1"], layers["fc2"]]
    return CNNSpec.model_validate({
        **spec.model_dump(), "channels": tuple(layers[f"conv{i}"].filters for i in (1, 2, 3)),
        "hidden": _last(fcs[0]).units, "num_classes": _last(fcs[1]).units,
        "linear_ranks": tuple(f[0].units if isinstance(f, tuple) else None for f in fcs)})


def _last(layer):
    return layer[1] if isinstance(layer, tuple) else layer


def dense_kernel(layer) -> tuple[np.ndarray, np.ndarray | None]:
    """(kernel (in x out), bias) of a dense or factorized fc layer as one dense matrix and its bias."""
    if isinstance(layer, tuple):
        a, b = layer
        return np.asarray(a.kernel) @ np.asarray(b.kernel), (np.asarray(b.bias) if b.use_bias else None)
    return np.asarray(layer.kernel), (np.asarray(layer.bias) if layer.use_bias else None)


def weight_layers(model) -> list:
    """Every Conv2D and Dense layer (both factors of a factorized fc): the layers whose kernels pruning ranks."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def train_keras(model, splits: dict, image_shape, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                seed: int = 0, log=None, teacher=None, temperature: float = 4.0, alpha: float = 0.7,
                masks: dict | None = None) -> list[dict]:
    """Adam with a cosine schedule; keeps the weights of the best validation epoch. Returns per-epoch history.

    With a ``teacher`` (a Keras model), the loss is ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha)
    * CE``, as ``train.train`` does for PyTorch; the teacher sees no augmentation, so its logits are computed once.
    ``masks`` ({layer name: 0/1 array shaped like its kernel}) keeps the masked weights at zero: they are reapplied
    after every batch (Adam's momentum would otherwise revive them).
    """
    import keras

    keras.utils.set_random_seed(seed)
    X, y = images_nhwc(splits["X_train"], image_shape), splits["y_train"]
    yv = splits["y_val"]
    steps = epochs * int(np.ceil(len(X) / batch_size))
    if teacher is not None:
        soft = predict_keras(teacher, splits["X_train"], image_shape)
        # Keras losses see one target tensor: the label travels as column 0, the teacher's logits after it.
        y = np.concatenate([y.reshape(-1, 1).astype(np.float32), soft], axis=1)
        loss = _distill_loss(temperature, alpha)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)), loss=loss)
    callbacks = []
    if masks:
        keep = _mask_keeper(model, masks)
        keep.apply()
        callbacks.append(keep)
    history, best = [], (-1.0, None)
    for epoch in range(epochs):
        h = model.fit(X, y, epochs=1, batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
        val = accuracy(predict_keras(model, splits["X_val"], image_shape), yv)
        history.append({"epoch": epoch + 1, "loss": float(h.history["loss"][-1]), "val_accuracy": val})
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, val accuracy {val:.4f}")
        if val > best[0]:
            best = (val, [w.copy() for w in model.get_weights()])
    if best[1] is not None:
        model.set_weights(best[1])
    return history


def _distill_loss(temperature: float, alpha: float):
    from keras import ops

    def loss(target, logits):
        labels = ops.cast(target[:, 0], "int32")
        t, s = target[:, 1:] / temperature, logits / temperature
        kl = ops.sum(ops.softmax(t) * (ops.log_softmax(t) - ops.log_softmax(s)), axis=-1)
        ce = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return alpha * temperature ** 2 * kl + (1 - alpha) * ce  # per sample; Keras averages over the batch

    return loss


def _mask_keeper(model, masks: dict):
    """A Keras callback that zeroes the masked kernel weights after every training batch."""
    import keras

    by_name = {layer.name: layer for layer in model.layers}
    unknown = sorted(set(masks) - set(by_name))
    if unknown:
        raise ValueError(f"masks name layers {unknown} that model {model.name!r} lacks")
    pairs = []
    for name, mask in masks.items():
        kernel = by_name[name].kernel
        if tuple(mask.shape) != tuple(kernel.shape):
            raise ValueError(f"mask of {name} is {tuple(mask.shape)}, its kernel {tuple(kernel.shape)}")
        pairs.append((kernel, keras.ops.convert_to_tensor(np.asarray(mask, dtype=np.float32))))

    class MaskKeeper(keras.callbacks.Callback):
        def apply(self):
            for kernel, mask in pairs:
                kernel.assign(kernel * mask)

        def on_train_batch_end(self, batch, logs=None):
            self.apply()

    return MaskKeeper()


def predict_keras(model, X: np.ndarray, image_shape, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(images_nhwc(X, image_shape), batch_size=batch_size, verbose=0), dtype=np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def save_keras(model, path: Path) -> None:
    """Architecture and weights only. A model compiled by ``train_keras`` would also store its optimizer's state
    (Adam's two moments: the file ~3x the weights) and its loss closure; a fresh copy has neither."""
    copy_keras(model).save(str(path))


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

    from compression_pipeline.onnx_tools import IR_VERSION, static_flatten

    serve, spec = _serving_fn(model)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset, output_path=None)
    proto = static_flatten(proto)  # a constant flatten shape, so ORT's int8 fusions reach the last convolution
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


def copy_keras(model):
    """An independent, uncompiled copy of ``model``: same architecture, layer names and weights, no shared variables.
    (``keras.models.clone_model`` would also recompile it from its compile config, which fails for the distillation
    loss, a closure.)"""
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone
