"""TensorFlow specifics the adapter contract (test_framework_keras.py) does not cover: TFLite post-training
quantization in every mode, its errors, and Keras' flatten exported as a constant shape so ONNX Runtime's int8
fusions reach the last convolution."""

import numpy as np
import pytest

from compression_pipeline import onnx_tools
from compression_pipeline.data import feed
from compression_pipeline.frameworks import get
from compression_pipeline.frameworks import keras_adapter as K
from compression_pipeline.types import ZooModel

from conftest import fit


@pytest.fixture(scope="module")
def keras_model(digits_data, tmp_path_factory):
    parts, spec = digits_data
    fw = get("tensorflow")
    fw.set_threads(None)
    model = fw.build(ZooModel(width=8), spec, seed=0)
    fw.fit(model, parts, spec, fit(3))
    return fw, model, spec, tmp_path_factory.mktemp("tf")


def _accuracy(logits, y) -> float:
    return float((logits.argmax(1) == y).mean())


def test_onnx_export_has_a_constant_flatten_and_a_dynamic_batch(keras_model, digits_splits):
    import onnx

    fw, model, spec, tmp = keras_model
    assert fw.export_onnx(model, tmp / "m.onnx", spec) == "NHWC"
    ops = [n.op_type for n in onnx.load(str(tmp / "m.onnx")).graph.node]
    assert "Shape" not in ops and "Concat" not in ops and ops.count("Reshape") >= 1
    sess = onnx_tools.session(tmp / "m.onnx", "cpu", 1)
    for n in (1, 17):
        X = digits_splits["X_test"][:n]
        out = onnx_tools.predict(sess, feed(X, spec, "NHWC"))
        assert out.shape == (n, 10) and np.abs(out - fw.predict(model, X, spec)).max() < 1e-4


@pytest.mark.parametrize("mode, max_size_ratio, max_drop", [("fp32", 1.05, 0.0), ("dynamic", 0.35, 0.03),
                                                            ("float16", 0.6, 0.01), ("int8", 0.35, 0.05)])
def test_tflite_conversions(keras_model, digits_splits, mode, max_size_ratio, max_drop):
    fw, model, spec, tmp = keras_model
    K.to_tflite(model, tmp / "fp32.tflite", "fp32")
    path = tmp / f"{mode}.tflite"
    K.to_tflite(model, path, mode, representative=feed(digits_splits["X_train"][:64], spec, "NHWC"))
    assert path.stat().st_size <= max_size_ratio * (tmp / "fp32.tflite").stat().st_size
    y = digits_splits["y_test"]
    ref = _accuracy(fw.predict(model, digits_splits["X_test"], spec), y)
    got = _accuracy(K.predict_tflite(path, digits_splits["X_test"], spec, 1), y)
    assert ref - got <= max_drop + 1e-9, (mode, ref, got)


def test_unknown_tflite_mode_and_missing_samples_are_errors(keras_model, tmp_path):
    model = keras_model[1]
    with pytest.raises(ValueError, match="allowed"):
        K.to_tflite(model, tmp_path / "x.tflite", "int4")
    with pytest.raises(ValueError, match="representative"):
        K.to_tflite(model, tmp_path / "x.tflite", "int8")
