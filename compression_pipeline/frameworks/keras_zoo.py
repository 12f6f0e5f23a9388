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


def padded(builder: str, input_shape: list[int], kwargs: dict | None = None, min_side: int = 32,
           bn_momentum: float | None = None):
    """``builder(input_tensor=..., **kwargs)`` on images smaller than it accepts: a keras.applications model (which
    refuses inputs under 32x32, e.g. MobileNetV2) built on ``input_shape`` (H, W, C) images zero-padded evenly to at
    least ``min_side`` x ``min_side``. The padding is a layer of the model, so the model takes the data as they are
    and its ONNX/TFLite exports do too. One flat functional model (no nested model): layer names, pruning and
    Keras' safe ``.keras`` format see every layer.

    E.g. ``{builder: "keras.applications:MobileNetV2", input_shape: [28, 28, 1], kwargs: {weights: null,
    classes: 10, alpha: 0.5, classifier_activation: null}}`` builds MobileNetV2 on 32x32x1 (2 pixels of zeros around
    each 28x28 image).

    ``bn_momentum``: every BatchNormalization layer's moving-average momentum. keras.applications sets 0.999 (made
    for fine-tuning ImageNet weights): trained from scratch, its inference-mode statistics lag behind, and
    MobileNetV2 on Fashion-MNIST predicted one class (validation 0.100) after 2 epochs of 422 steps that trained
    well (loss 0.44). 0.9 (PyTorch's 0.1) follows the weights within tens of steps."""
    import keras

    from compression_pipeline.frameworks.builders import import_callable
    from compression_pipeline.types import DOWNLOADING_KWARGS

    kwargs = dict(kwargs or {})
    for key in ("weights", *DOWNLOADING_KWARGS):
        if kwargs.get(key) not in (None, False, ""):
            raise ValueError(f"padded: kwargs.{key}={kwargs[key]!r} would download trained weights (no network "
                             f"here): set it to null and give trained weights as a file")
    for key in ("input_shape", "input_tensor"):
        if key in kwargs:
            raise ValueError(f"padded: kwargs.{key} is set by padded itself (from input_shape): leave it out")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"padded: input_shape is [height, width, channels], got {input_shape}")
    h, w, _ = input_shape
    inputs = keras.Input(tuple(input_shape), name="input")
    pad_h, pad_w = max(min_side - h, 0), max(min_side - w, 0)
    x = inputs
    if pad_h or pad_w:
        x = keras.layers.ZeroPadding2D(((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)),
                                       name="pad_to_min_side")(x)
    model = import_callable(builder)(input_tensor=x, **kwargs)
    if list(model.inputs) != [inputs]:  # an application that wraps input_tensor in its own Input is nested, refuse
        raise ValueError(f"padded: {builder} did not build on the given input tensor")
    if bn_momentum is not None:
        if not 0 < bn_momentum < 1:
            raise ValueError(f"padded: bn_momentum is in (0, 1), got {bn_momentum}")
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    # The same layers as a model of one input tensor (the application's takes a list of one, and warns when called
    # on a tensor).
    return keras.Model(inputs, model.outputs[0], name=model.name)
