"""The Keras 3 backend on a tiny model: same architecture as PyTorch, training, .keras round trip, ONNX, TFLite."""


import numpy as np
import pytest

from compression_pipeline import keras_backend as K
from compression_pipeline import zoo

SHAPE = (8, 8)


@pytest.fixture(scope="module")
def keras_model(digits_splits, tmp_path_factory):
    spec = zoo.cnn_spec(8)
    model = K.build_keras(spec, seed=0)
    history = K.train_keras(model, digits_splits, SHAPE, epochs=3, lr=3e-3, seed=0)
    return model, spec, history, tmp_path_factory.mktemp("keras")


@pytest.mark.parametrize("width, ranks", [(8, (None, None)), (64, (None, None)), (8, (4, 3)), (16, (None, 5))])
def test_same_architecture_and_parameters_as_pytorch(width, ranks):
    spec = zoo.cnn_spec(width).model_copy(update={"linear_ranks": ranks})
    model, module = K.build_keras(spec), zoo.build_torch(spec)
    assert K.count_params(model)[0] == zoo.count_params(module)[0]
    assert K.spec_of(model, zoo.cnn_spec(width)) == spec  # widths and ranks read back from the layers
    # Layers carry the PyTorch names, so a recipe's `layers: [fc1]` means the same layer in both frameworks.
    assert set(K.named_layers(model)) == set(zoo.named_layers(module)) == {"conv1", "conv2", "conv3", "fc1", "fc2"}
    for i, r in enumerate(ranks):
        fc = K.named_layers(model)[f"fc{i + 1}"]
        assert (fc[0].units if isinstance(fc, tuple) else None) == r


def test_training_learns_and_keeps_best_epoch(keras_model, digits_splits):
    model, _, history, _ = keras_model
    acc = K.accuracy(K.predict_keras(model, digits_splits["X_val"], SHAPE), digits_splits["y_val"])
    assert acc == pytest.approx(max(h["val_accuracy"] for h in history))
    assert acc > 0.6


def test_keras_format_round_trip(keras_model, digits_splits):
    model, _, _, tmp = keras_model
    K.save_keras(model, tmp / "m.keras")
    # The file holds the weights, not the trained model's optimizer state (Adam's moments would triple it).
    assert (tmp / "m.keras").stat().st_size < 2 * 4 * K.count_params(model)[0]
    loaded = K.load_keras(tmp / "m.keras")
    X = digits_splits["X_test"][:32]
    assert np.allclose(K.predict_keras(model, X, SHAPE), K.predict_keras(loaded, X, SHAPE), atol=1e-6)


def test_onnx_export_parity_with_dynamic_batch(keras_model, digits_splits):
    import onnx

    from compression_pipeline import onnx_tools

    model, _, _, tmp = keras_model
    K.export_onnx(model, tmp / "m.onnx")
    # Keras' Flatten is exported as a constant reshape: no run-time shape computation to stop ORT's int8 fusions
    ops = [n.op_type for n in onnx.load(str(tmp / "m.onnx")).graph.node]
    assert "Shape" not in ops and "Concat" not in ops and ops.count("Reshape") >= 1
    sess = onnx_tools.session(tmp / "m.onnx", "cpu", 1)
    for n in (1, 17):
        X = digits_splits["X_test"][:n]
        out = onnx_tools.predict(sess, X, SHAPE)
        assert out.shape == (n, 10)
        assert np.abs(out - K.predict_keras(model, X, SHAPE)).max() < 1e-4


@pytest.mark.parametrize("mode, max_size_ratio, max_drop", [("fp32", 1.05, 0.0), ("dynamic", 0.35, 0.03),
                                                            ("float16", 0.6, 0.01), ("int8", 0.35, 0.05)])
def test_tflite_conversions(keras_model, digits_splits, mode, max_size_ratio, max_drop):
    model, _, _, tmp = keras_model
    K.to_tflite(model, tmp / "fp32.tflite", "fp32")
    path = tmp / f"{mode}.tflite"
    K.to_tflite(model, path, mode, representative=K.images_nhwc(digits_splits["X_train"][:64], SHAPE))
    assert path.stat().st_size <= max_size_ratio * (tmp / "fp32.tflite").stat().st_size
    y = digits_splits["y_test"]
    ref = K.accuracy(K.predict_keras(model, digits_splits["X_test"], SHAPE), y)
    got = K.accuracy(K.predict_tflite(K.tflite_interpreter(path, 1), digits_splits["X_test"], SHAPE), y)
    assert ref - got <= max_drop + 1e-9, (mode, ref, got)


def test_unknown_tflite_mode_and_missing_samples_are_errors(keras_model, tmp_path):
    model = keras_model[0]
    with pytest.raises(ValueError, match="allowed"):
        K.to_tflite(model, tmp_path / "x.tflite", "int4")
    with pytest.raises(ValueError, match="representative"):
        K.to_tflite(model, tmp_path / "x.tflite", "int8")


def test_masks_stay_zero_through_training_and_bad_masks_are_errors(digits_splits):
    model = K.build_keras(zoo.cnn_spec(4), seed=0)
    rng = np.random.default_rng(0)
    masks = {layer.name: (rng.random(layer.kernel.shape) > 0.5).astype(np.float32) for layer in K.weight_layers(model)}
    before = {layer.name: np.asarray(layer.kernel).copy() for layer in K.weight_layers(model)}
    K.train_keras(model, digits_splits, SHAPE, epochs=1, lr=3e-3, masks=masks)
    for layer in K.weight_layers(model):
        kernel, mask = np.asarray(layer.kernel), masks[layer.name]
        assert not kernel[mask == 0].any()
        trained = (kernel[mask == 1] != before[layer.name][mask == 1]).mean()
        assert trained > 0.5  # the kept weights did train (dead ReLU units aside)
    with pytest.raises(ValueError, match="lacks"):
        K.train_keras(model, digits_splits, SHAPE, epochs=1, masks={"fc9": masks["fc1"]})
    with pytest.raises(ValueError, match="mask of fc1"):
        K.train_keras(model, digits_splits, SHAPE, epochs=1, masks={"fc1": masks["fc2"]})
