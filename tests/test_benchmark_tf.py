"""The TensorFlow and TFLite runtimes of the harness: the same fields as torch's rows, the protocol honoured,
threads as TF really uses them, fp16 skips and the missing-GPU error (a tiny Keras CNN and its TFLite export)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from compression_pipeline import benchmark
from compression_pipeline.frameworks import get
from compression_pipeline.frameworks import keras_adapter as K
from compression_pipeline.runtimes import base, litert, tf_function, torch_eager
from compression_pipeline.types import InputSpec, ZooModel

PROTOCOL = benchmark.Protocol(warmup_runs=3, warmup_s=0.05, min_runs=20, min_time_s=0.1)
IMAGES = InputSpec(kind="image", shape=(1, 8, 8), class_names=tuple("0123456789"))
NHWC = IMAGES.sample_shape("NHWC")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    keras_model = get("tensorflow").build(ZooModel(width=4), IMAGES, seed=0)
    path = tmp_path_factory.mktemp("tf") / "m.tflite"
    K.to_tflite(keras_model, path)
    return keras_model, path


@pytest.fixture(scope="module")
def torch_row():
    """A real row of the torch runtime on the same architecture: the field set every runtime must carry."""
    import torch

    before = torch.get_num_threads()
    try:
        session = torch_eager.open(get("torch").build(ZooModel(width=4), IMAGES, seed=0), IMAGES, "NCHW", "cpu", 1)
        return benchmark.run([session], [1], PROTOCOL)[0][0]
    finally:
        torch.set_num_threads(before)


def _protocol_honoured(r):
    assert r["runs"] == len(r["samples_ms"]) >= PROTOCOL.min_runs and r["measured_s"] >= PROTOCOL.min_time_s
    assert r["warmup_runs"] >= PROTOCOL.warmup_runs and r["session_warm_s"] + r["warmup_s"] >= PROTOCOL.warmup_s
    assert r["p50_ms"] == pytest.approx(float(np.median(r["samples_ms"])))
    assert r["throughput"] == pytest.approx(r["batch_size"] * 1e3 / r["mean_ms"])
    assert r["peak_host_mb"] >= r["peak_host_delta_mb"] >= 0 and r["peak_host_scope"] == "cell"


def test_tensorflow_rows_carry_torchs_fields_and_the_protocol(models, torch_row):
    import tensorflow as tf

    session = tf_function.open(models[0], IMAGES, "NHWC", "cpu", 1, load_s=0.25)
    rows, skipped = benchmark.run([session], [1, 8], PROTOCOL)
    assert [(r["runtime"], r["precision"], r["batch_size"]) for r in rows] == [("tensorflow", "fp32", 1),
                                                                                ("tensorflow", "fp32", 8)]
    for r in rows:
        assert set(r) == set(torch_row) | {"xla", "threads_source"}
        assert r["provider"] == "cpu" and r["device"] == "cpu" and r["load_s"] == 0.25 and r["xla"] is False
        _protocol_honoured(r)
        # The thread count recorded is the one TF runs with, whatever this process did with TF before.
        in_effect = tf.config.threading.get_intra_op_parallelism_threads()
        assert r["threads"] == (in_effect or benchmark.resolve_threads(None))
        assert r["threads_source"] in ("set", "fixed_earlier", "tf_default")
    assert skipped == [{"runtime": "tensorflow", "precision": "fp16", "reason": base.FP16_CPU_REASON}]


def test_tflite_rows_carry_torchs_fields_and_measure_loading(models, torch_row):
    rows, skipped = benchmark.run([litert.open(models[1], IMAGES, "NHWC", 1)], [1, 8], PROTOCOL)
    assert [(r["runtime"], r["precision"], r["batch_size"]) for r in rows] == [("tflite", "fp32", 1),
                                                                                ("tflite", "fp32", 8)]
    for r in rows:
        assert set(r) == set(torch_row) | {"delegated_nodes"}
        assert r["device"] == "cpu" and r["threads"] == 1 and r["load_s"] > 0
        # LiteRT's default XNNPACK delegate takes the float convolutions of this model.
        assert r["delegated_nodes"] >= 1 and r["provider"] == "litert-xnnpack"
        _protocol_honoured(r)
    assert rows[0]["load_s"] == rows[1]["load_s"]  # one interpreter, its creation reported apart
    assert skipped == [{"runtime": "tflite", "precision": "fp16", "reason": litert.TFLITE_FP16_REASON}]
    default = litert.open(models[1], IMAGES, "NHWC", None)
    assert default.threads == benchmark.resolve_threads(None)


def test_delegate_detection_tells_xnnpack_from_builtin_kernels(models):
    """The provider is read from the interpreter: with LiteRT's default delegates off it says so."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    for resolver, provider in ((OpResolverType.AUTO, "litert-xnnpack"),
                               (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, "litert-cpu")):
        interp = Interpreter(model_path=str(models[1]), num_threads=1, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        assert litert.provider_of(litert.delegated_nodes(interp)) == provider


def test_tflite_cell_runs_the_model(models):
    """The timed call computes the model's logits (same as the Keras model's), not just some call."""
    keras_model, path = models
    x = np.random.default_rng(1).random((5, *NHWC), dtype=np.float32)
    session = litert.open(path, IMAGES, "NHWC", 1)
    session.cell(x).call()
    out = session.interpreter.get_tensor(session.interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, keras_model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.skipif(tf_function.gpu_usable(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_error(models):
    with pytest.raises(RuntimeError, match="no GPU"):
        tf_function.open(models[0], IMAGES, "NHWC", "cuda", 1)


def test_float16_copy_keeps_the_logits(models):
    """The fp16 cells of a GPU run use this copy; its conversion is checked here on the CPU."""
    keras_model = models[0]
    half = tf_function.copy_to(keras_model, "/CPU:0", "float16")
    assert {str(w.dtype) for w in half.weights} == {"float16"}
    x = np.random.default_rng(2).random((4, *NHWC), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(half(x, training=False), dtype=np.float32),
                               keras_model(x, training=False), atol=2e-2)


THREADS_SCRIPT = """
import json
import tensorflow as tf
from compression_pipeline.runtimes.tf_function import configure_threads
first = configure_threads(1)  # before TF starts: applied
tf.constant(1.0) + 1
later = configure_threads(2)  # after: TF keeps 1, and says so
print(json.dumps([first, later, tf.config.threading.get_intra_op_parallelism_threads()]))
"""


def test_threads_recorded_are_the_ones_tf_uses(models):
    import tensorflow as tf

    out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], capture_output=True, text=True, timeout=120,
                         check=False)
    assert json.loads(out.stdout.splitlines()[-1]) == [[1, "set"], [1, "fixed_earlier"], 1], out.stderr[-2000:]
    # In this process TF started when the fixture built the model: too late to set, whatever came before.
    in_effect = tf.config.threading.get_intra_op_parallelism_threads()
    want = 3 if in_effect != 3 else 4
    if in_effect == 0:  # TF started with its default: one thread per core, recorded as that number
        assert tf_function.configure_threads(want) == (benchmark.resolve_threads(None), "tf_default")
    else:  # an earlier test set a count before TF started: that one stays
        assert tf_function.configure_threads(want) == (in_effect, "fixed_earlier")
