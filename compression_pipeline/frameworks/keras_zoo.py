"""The zoo's architectures in Keras, for any input specification: layer names and parameter counts equal to their
PyTorch twins', so a recipe's ``layers: [fc1]`` means the same layer in both frameworks. Inputs are channels-last.
"""

from __future__ import annotations

from compression_pipeline.errors import PipelineError
from compression_pipeline.types import InputSpec, ZooModel

DROPOUT = 0.3  # zoo.CNNSpec's


def build(source: ZooModel, spec: InputSpec, seed: int | None = None):
    """The zoo model ``source`` for inputs ``spec`` and ``spec.num_classes`` logits, its weights seeded."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)  # layers draw their initial weights from Keras' global seed
    if source.arch == "cnn":
        return _cnn(keras, spec, source.width)
    return _mlp(keras, spec, source.width)


def _cnn(keras, spec: InputSpec, width: int):
    """conv3x3(w) - conv3x3(2w) - maxpool2 - conv3x3(2w) - flatten - dense(8w) - dense(classes), 'same' padding,
    ReLU, dropout before each dense layer: ``zoo.CNNSpec`` at ``zoo.cnn_spec``'s widths."""
    if spec.kind != "image":
        raise PipelineError(f"zoo model 'cnn' takes images (channels, height, width); this dataset's samples are "
                            f"feature vectors of shape {spec.shape}: use arch 'mlp'")
    c, h, w = spec.shape
    if h < 2 or w < 2:
        raise PipelineError(f"zoo model 'cnn' pools 2x2, so images must be at least 2x2; got {h}x{w}")
    L = keras.layers
    return keras.Sequential([
        keras.Input((h, w, c), name="input"),
        L.Conv2D(width, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(2, name="pool"),
        L.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv3"),
        L.Flatten(name="flatten"),  # flattens (h, w, c), PyTorch (c, h, w): a different order, the same count
        L.Dropout(DROPOUT, name="drop1"), L.Dense(8 * width, activation="relu", name="fc1"),
        L.Dropout(DROPOUT, name="drop2"), L.Dense(spec.num_classes, name="fc2"),
    ], name="cnn")


def _mlp(keras, spec: InputSpec, width: int):
    """dense(w) - dense(w) - dense(classes), ReLU between; images are flattened first."""
    L = keras.layers
    flatten = [L.Flatten(name="flatten")] if spec.kind == "image" else []
    return keras.Sequential([
        keras.Input(spec.sample_shape(spec.default_layout("tensorflow")), name="input"), *flatten,
        L.Dense(width, activation="relu", name="fc1"),
        L.Dense(width, activation="relu", name="fc2"),
        L.Dense(spec.num_classes, name="fc3"),
    ], name="mlp")
