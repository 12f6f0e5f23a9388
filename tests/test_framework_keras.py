"""The Keras adapter's contract on the zoo's cnn and mlp, keras.applications' MobileNetV2 and a user's builder module:
build, train, predict, store, replace a layer, count, export; and the clear errors of bad declarations."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from compression_pipeline.errors import ArtifactError, PipelineError
from compression_pipeline.frameworks import get
from compression_pipeline.frameworks.base import Fit
from compression_pipeline.runtimes.tf_function import configure_threads
from compression_pipeline.types import ImportModel, InputSpec, ZooModel

from conftest import zoo_cnn_counts

configure_threads(1, None)  # before TensorFlow starts (it fixes its thread count then): 2 shared cores

F = get("tensorflow")
IMAGES = InputSpec(kind="image", shape=(3, 8, 8), class_names=("a", "b", "c", "d"), mean=(0.5, 0.4, 0.3),
                   std=(0.2, 0.25, 0.3))
FEATURES = InputSpec(kind="features", shape=(12,), class_names=("x", "y", "z"))
CIFAR = InputSpec(kind="image", shape=(3, 32, 32), class_names=tuple("abcdefghij"))
MOBILENET = ImportModel(source="import", builder="keras.applications:MobileNetV2", framework="tensorflow",
                        kwargs={"weights": None, "input_shape": [32, 32, 3], "classes": 10, "alpha": 0.35,
                                "classifier_activation": None})
USER_MODULE = "user_models_kerasfw"
USER_CODE = '''
import keras

L = keras.layers


def small_net(classes=4, width=8, extra=False):
    """A user's Functional model: convolution, batch norm, a separable convolution, global pooling, a dense head
    (with ``extra``, one more dense layer after it)."""
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(width, 3, padding="same", name="stem")(inputs)))
    x = L.GlobalAveragePooling2D()(L.SeparableConv2D(width, 3, padding="same", name="sep")(x))
    x = L.Dense(classes, name="head")(x)
    return keras.Model(inputs, L.Dense(classes, name="more")(x) if extra else x, name="small_net")


def probabilities():
    return keras.Sequential([keras.Input((8, 8, 3)), L.Flatten(), L.Dense(4, activation="softmax")])


def with_lambda():
    return keras.Sequential([keras.Input((8, 8, 3)), L.Lambda(lambda x: x * 2.0), L.Flatten(), L.Dense(4)])


def not_a_model():
    return {"layers": 3}


def explodes(depth=3):
    raise RuntimeError(f"depth {depth} is too deep")
'''


def user(builder: str, weights: str | None = None, **kwargs) -> ImportModel:
    return ImportModel(source="import", builder=f"{USER_MODULE}:{builder}", kwargs=kwargs, framework="tensorflow",
                       weights=weights)


@pytest.fixture(scope="module", autouse=True)
def user_module(tmp_path_factory):
    """The user's builder module, importable as a module under the project root would be."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{USER_MODULE}.py").write_text(USER_CODE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield folder
        sys.modules.pop(USER_MODULE, None)


def splits(spec: InputSpec, n: int = 160, seed: int = 0) -> dict:
    """Random samples whose label is a function of the input, so one epoch moves the loss."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, *spec.shape), dtype=np.float32)
    y = (X.reshape(n, -1)[:, : spec.num_classes].argmax(1)).astype(np.int64)
    cut = n * 3 // 4
    return {"X_train": X[:cut], "y_train": y[:cut], "X_val": X[cut:], "y_val": y[cut:], "X_test": X[cut:]}


# --- the four kinds of model ----------------------------------------------------------------------------------------
CASES = {  # name: (source, spec, the Dense layer a method factorizes, multiply-accumulates of one sample)
    "cnn": (ZooModel(arch="cnn", width=4), IMAGES, "fc1",
            zoo_cnn_counts(3, 8, 8, 4, 4)[1]),
    "mlp": (ZooModel(arch="mlp", width=16), FEATURES, "fc2", 12 * 16 + 16 * 16 + 16 * 3),
    "user": (user("small_net"), IMAGES, "head", 64 * (9 * 3 * 8 + 9 * 8 + 8 * 8) + 8 * 4),
    "mobilenet": (MOBILENET, CIFAR, "predictions", None),  # counted from its layers below
}


# MobileNetV2's calibrated batch norms include near-dead channels (variance ~1e-9: scaled by 1/sqrt(eps) ~ 31), which
# amplify float32 rounding over 17 blocks: measured at logits up to 1.8, TensorFlow eager vs graph differed by 3e-5,
# ONNX Runtime with vs without graph optimizations by 6e-5, TensorFlow vs ONNX Runtime by 1.5e-4.
ONNX_TOLERANCE = {"mobilenet": 5e-4}


@pytest.fixture(scope="module")
def models():
    return {}


def built(models, name):
    if name not in models:
        source, spec, _, _ = CASES[name]
        models[name] = F.build(source, spec, seed=0)
        if name == "mobilenet":
            calibrate_batchnorm(models[name], splits(spec, 32)["X_train"], spec)
    return models[name]


def calibrate_batchnorm(model, X, spec):
    """Give every batch norm the statistics of real inputs, as training would. Built with weights=None, MobileNetV2's
    batch norms hold mean 0 and variance 1 while its activations shrink layer after layer: its logits are ~1e-11,
    too small for any parity check to mean something. One training-mode pass with momentum 0 stores each layer's
    batch statistics."""
    import keras

    from compression_pipeline.frameworks.keras_adapter import _feed

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(_feed(X, spec), training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


@pytest.mark.parametrize("name", CASES)
def test_build_predict_and_counts(models, name):
    _, spec, _, macs = CASES[name]
    model = built(models, name)
    X = splits(spec, 8)["X_val"]
    logits = F.predict(model, X, spec)
    assert logits.shape == (len(X), spec.num_classes)
    assert 0.01 < np.abs(logits).max() < 100  # a scale at which the parity checks below mean something
    total, nonzero = F.count_params(model)
    assert total == model.count_params() and 0 < nonzero <= total
    if name == "mobilenet":
        assert total == 423_018  # keras.applications' own count at alpha 0.35, 10 classes (BN statistics included)
        macs = layer_macs(model)
    assert F.count_macs(model, spec) == macs


def layer_macs(model) -> int:
    """MobileNetV2's MACs computed independently, from its layers' output shapes."""
    import keras

    macs = 0
    for layer in model.layers:
        out = layer.output.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            macs += out[1] * out[2] * out[3] * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            macs += out[1] * out[2] * out[3] * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return macs


def test_zoo_cnn_is_the_pytorch_twins_architecture(models):
    model = built(models, "cnn")
    names = [layer.name for layer in model.layers]
    assert names == ["conv1", "conv2", "pool", "conv3", "flatten", "drop1", "fc1", "drop2", "fc2"]
    again = F.build(CASES["cnn"][0], IMAGES, seed=0)  # seeded: the same initial weights
    assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), model.get_weights()))
    assert F.count_params(model)[0] == zoo_cnn_counts(3, 8, 8, 4, 4)[0]  # = PyTorch's (test_framework_torch)
    mlp = F.build(ZooModel(arch="mlp", width=16), IMAGES)  # images are flattened first
    assert [layer.name for layer in mlp.layers] == ["flatten", "fc1", "fc2", "fc3"]
    assert F.count_macs(mlp, IMAGES) == 192 * 16 + 16 * 16 + 16 * 4
    assert F.layout(IMAGES) == "NHWC" and F.layout(FEATURES) == "NF"


@pytest.mark.parametrize("name", ["cnn", "user"])
def test_fit_keeps_zeros_and_the_best_epoch(models, name, tmp_path):
    _, spec, _, _ = CASES[name]
    model = F.copy(built(models, name))
    kernel = next(v for v in model.trainable_variables if len(v.shape) >= 2)
    start = np.asarray(kernel)
    pruned = np.where(np.abs(start) < np.median(np.abs(start)), 0.0, start).astype(np.float32)
    kernel.assign(pruned)
    data, lines = splits(spec), []
    history = F.fit(model, data, spec, Fit(epochs=1, batch_size=32, lr=3e-3), keep_zero=True, log=lines.append)
    assert [h["epoch"] for h in history] == [1] and np.isfinite(history[0]["loss"])
    assert len(lines) == 1 and re.fullmatch(
        rf"epoch 1/1: loss {history[0]['loss']:.4f}, val accuracy {history[0]['val_accuracy']:.4f} "
        r"\([0-9.]+ s/epoch, 0 s left\)", lines[0]), lines
    after = np.asarray(kernel)
    assert np.all(after[pruned == 0] == 0)  # the masked half stayed zero ...
    assert np.any(after[pruned != 0] != pruned[pruned != 0])  # ... while the rest trained
    acc = float((F.predict(model, data["X_val"], spec).argmax(1) == data["y_val"]).mean())
    assert acc == history[0]["val_accuracy"]
    F.save(model, tmp_path / "m.keras")  # a trained model is compiled: its optimizer's state is not stored
    assert (tmp_path / "m.keras").stat().st_size < 4 * F.count_params(model)[0] + 40_000


def test_distillation_loss(models):
    """loss = alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(labels, s), checked against numpy; and
    through fit: zero when the student is a copy of its teacher and alpha is 1 (the mlp has neither dropout nor batch
    norm, so both compute the same function)."""
    from compression_pipeline.frameworks.keras_adapter import _distill_loss

    rng = np.random.default_rng(0)
    s, t, labels = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), np.array([0, 2, 1, 1, 0])
    T, alpha = 4.0, 0.7

    def log_softmax(z):
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    kl = (np.exp(log_softmax(t / T)) * (log_softmax(t / T) - log_softmax(s / T))).sum(1)
    want = alpha * T ** 2 * kl - (1 - alpha) * log_softmax(s)[np.arange(5), labels]
    target = np.concatenate([labels[:, None], t], axis=1).astype(np.float32)
    got = np.asarray(_distill_loss(T, alpha)(target, s.astype(np.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5)

    teacher = built(models, "mlp")
    before = teacher.get_weights()
    history = F.fit(F.copy(teacher), splits(FEATURES), FEATURES, Fit(epochs=1, batch_size=40, alpha=1.0),
                    teacher=teacher)
    assert history[0]["loss"] < 1e-6
    for a, b in zip(before, teacher.get_weights()):  # the copy trained, the teacher did not
        np.testing.assert_array_equal(a, b)


def names(model) -> list[str]:
    import keras

    return [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def factorize(model, layer_name: str):
    """Replace a Dense by a full-rank FactorizedDense (kernel = U S V^T split as U sqrt(S), sqrt(S) V^T)."""
    from compression_pipeline.frameworks.keras_layers import FactorizedDense, replace_layers

    def swap(layer):
        if layer.name != layer_name:
            return None
        kernel, bias = layer.get_weights()
        u, s, vh = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
        root = np.sqrt(s)
        new = FactorizedDense(layer.units, len(s), layer.activation, name=layer.name)
        return new, [(u * root).astype(np.float32), (root[:, None] * vh).astype(np.float32), bias]

    return replace_layers(model, swap)


@pytest.mark.parametrize("name", CASES)
def test_factorized_dense_replacement_saves_loads_and_exports_exactly(models, name, tmp_path):
    import onnxruntime as ort

    from compression_pipeline.frameworks.keras_adapter import _feed

    _, spec, dense, macs = CASES[name]
    model = built(models, name)
    new = factorize(model, dense)
    assert type(new.get_layer(dense)).__name__ == "FactorizedDense"
    assert names(new) == names(model)
    X = splits(spec, 16)["X_val"]
    before, after = F.predict(model, X, spec), F.predict(new, X, spec)
    assert np.abs(before - after).max() <= 1e-4 * max(1.0, np.abs(before).max())  # full rank: the same function
    n_in, n_out = model.get_layer(dense).kernel.shape
    rank = min(n_in, n_out)
    if macs is not None:  # MobileNetV2's count: checked in test_build_predict_and_counts (a trace costs seconds)
        assert F.count_macs(new, spec) == macs - n_in * n_out + rank * (n_in + n_out)

    F.save(new, tmp_path / "m.keras")
    loaded = F.load(tmp_path / "m.keras")
    assert np.abs(F.predict(loaded, X, spec) - after).max() == 0.0
    assert F.count_params(loaded) == F.count_params(new)

    assert F.export_onnx(loaded, tmp_path / "m.onnx", spec) == F.layout(spec)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_outputs()[0].name == "logits"
    tolerance = ONNX_TOLERANCE.get(name, 1e-4) * max(1.0, np.abs(after).max())
    assert np.abs(session.run(None, {"input": _feed(X, spec)})[0] - after).max() <= tolerance


def test_replace_layers_inside_a_nested_model_and_not_a_subclassed_one(models):
    import keras

    mlp = built(models, "mlp")
    outer = keras.Sequential([keras.Input((12,)), mlp, keras.layers.Dense(3, name="extra")], name="outer")
    new = factorize(outer, "fc2")
    assert type(new.layers[0].get_layer("fc2")).__name__ == "FactorizedDense"
    X = splits(FEATURES, 8)["X_val"]
    assert np.abs(F.predict(new, X, FEATURES) - F.predict(outer, X, FEATURES)).max() <= 1e-5

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(3)

        def call(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="subclassed model's call"):
        factorize(Sub(), "fc")


@pytest.mark.parametrize("name", ["cnn", "user"])  # the mlp: converted in the int8 test
def test_tflite_fp32_parity(models, name, tmp_path):
    from compression_pipeline.frameworks.keras_adapter import predict_tflite, to_tflite

    _, spec, _, _ = CASES[name]
    model = built(models, name)
    to_tflite(model, tmp_path / "m.tflite", "fp32")
    X = splits(spec, 16)["X_val"]
    assert np.abs(predict_tflite(tmp_path / "m.tflite", X, spec, threads=1) - F.predict(model, X, spec)).max() <= 1e-4


def test_tflite_int8_full_integer_keeps_float_io(models, tmp_path):
    from compression_pipeline.frameworks.keras_adapter import _feed, predict_tflite, tflite_interpreter, to_tflite

    model, data = built(models, "mlp"), splits(FEATURES)
    to_tflite(model, tmp_path / "q.tflite", "int8", representative=_feed(data["X_train"][:32], FEATURES))
    interpreter = tflite_interpreter(tmp_path / "q.tflite", 1)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    got, want = predict_tflite(interpreter, data["X_val"], FEATURES), F.predict(model, data["X_val"], FEATURES)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.1 * np.abs(want).max()
    with pytest.raises(ValueError, match="representative"):
        to_tflite(model, tmp_path / "x.tflite", "int8")
    with pytest.raises(ValueError, match="allowed"):
        to_tflite(model, tmp_path / "x.tflite", "int4")


# --- user weights ---------------------------------------------------------------------------------------------------
def test_trained_weights_from_keras_and_h5_files(tmp_path):
    trained = F.build(user("small_net"), IMAGES, seed=1)
    trained.get_layer("bn").moving_mean.assign(np.arange(8, dtype=np.float32))  # not the initial value
    trained.save(str(tmp_path / "t.keras"))
    trained.save_weights(str(tmp_path / "t.weights.h5"))
    X = splits(IMAGES, 8)["X_val"]
    want = F.predict(trained, X, IMAGES)
    for name in ("t.keras", "t.weights.h5"):
        model = F.build(user("small_net", weights=name), IMAGES, seed=2, data_root=tmp_path)
        assert np.abs(F.predict(model, X, IMAGES) - want).max() == 0.0, name

    other = F.build(user("small_net", width=4), IMAGES)  # the same layers, narrower
    other.save(str(tmp_path / "narrow.keras"))
    other.save_weights(str(tmp_path / "narrow.weights.h5"))
    with pytest.raises(PipelineError, match=r"do not fit.*layer stem \[\(3, 3, 3, 8\)") as e:
        F.build(user("small_net", weights="narrow.keras"), IMAGES, data_root=tmp_path)
    assert "value=" not in str(e.value)
    with pytest.raises(PipelineError, match=r"narrow.weights.h5 do not fit.*stem") as e:
        F.build(user("small_net", weights="narrow.weights.h5"), IMAGES, data_root=tmp_path)
    assert "value=" not in str(e.value)
    bigger = F.build(user("small_net", extra=True), IMAGES)  # Keras would ignore the extra layer's arrays
    bigger.save_weights(str(tmp_path / "bigger.weights.h5"))
    with pytest.raises(PipelineError, match="holds .* weight arrays, the model"):
        F.build(user("small_net", weights="bigger.weights.h5"), IMAGES, data_root=tmp_path)

    for name in ("p.keras", "p.weights.h5"):  # a pickle in a weights file's place is refused, never loaded
        (tmp_path / name).write_bytes(pickle.dumps({"kernel": [1.0]}))
    with pytest.raises(ArtifactError, match="not a .keras archive"):
        F.build(user("small_net", weights="p.keras"), IMAGES, data_root=tmp_path)
    with pytest.raises(PipelineError, match="not an HDF5 weights file"):
        F.build(user("small_net", weights="p.weights.h5"), IMAGES, data_root=tmp_path)
    with pytest.raises(PipelineError, match="does not exist"):
        F.build(user("small_net", weights="missing.keras"), IMAGES, data_root=tmp_path)


# --- bad declarations and bad files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("source, spec, message", [
    (ImportModel(source="import", builder="no_such_module_kf:build", framework="tensorflow"), IMAGES,
     "cannot import module 'no_such_module_kf'"),
    (user("nope"), IMAGES, "has no attribute 'nope'"),
    (user("explodes", depth=7), IMAGES, r"called with kwargs \{'depth': 7\} failed: RuntimeError: depth 7"),
    (user("not_a_model"), IMAGES, "returned a builtins.dict, not a Keras 3 model"),
    (user("small_net", classes=5), IMAGES, r"returns shape \(2, 5\); the pipeline needs \(2, 4\)"),
    (user("small_net"), InputSpec(kind="image", shape=(1, 8, 8), class_names=("a", "b", "c", "d")),
     r"does not take a batch of this dataset's samples, shape \(2, 8, 8, 1\)"),
    (user("probabilities"), IMAGES, "ends with a softmax.*classifier_activation=None"),
    (user("with_lambda"), IMAGES, "cannot be stored.*Lambda layer holding a Python lambda"),
    (ImportModel(source="import", builder="keras.applications:MobileNetV2", framework="torch"), CIFAR,
     "framework 'torch'"),
    (ZooModel(arch="cnn"), FEATURES, "takes images.*use arch 'mlp'"),
])
def test_bad_declarations_say_what_is_wrong(source, spec, message):
    with pytest.raises(PipelineError, match=message):
        F.build(source, spec)


def test_bad_model_files_are_artifact_errors(models, tmp_path):
    import keras

    (tmp_path / "pickle.keras").write_bytes(pickle.dumps(["not", "a", "model"]))
    F.save(built(models, "mlp"), tmp_path / "good.keras")
    (tmp_path / "cut.keras").write_bytes((tmp_path / "good.keras").read_bytes()[:300])
    for name, message in (("pickle.keras", "never unpickled"), ("cut.keras", "truncated"),
                          ("missing.keras", "does not exist")):
        with pytest.raises(ArtifactError, match=message):
            F.load(tmp_path / name)

    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x + 1.0, name="plus_one")])
    with pytest.raises(PipelineError, match=r"\['plus_one'\] cannot be stored"):
        F.save(lam, tmp_path / "lam.keras")
    lam.save(str(tmp_path / "lam.keras"))  # written by Keras itself, as a user might
    with pytest.raises(ArtifactError, match="refused.*Lambda layer holding a Python lambda"):
        F.load(tmp_path / "lam.keras")


def test_the_registry_imports_no_framework():
    with pytest.raises(ValueError, match="unknown framework 'jax'"):
        get("jax")
    assert get("tensorflow") is F and F.name == "tensorflow" and F.suffix == "keras"
    code = "import sys, compression_pipeline.frameworks; assert 'tensorflow' not in sys.modules and 'keras' not in " \
           "sys.modules"
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True)
