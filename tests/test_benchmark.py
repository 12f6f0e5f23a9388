"""The benchmark harness: every field of the protocol, explicit threads, per-cell host memory, fp16 skips, and the
one cell loop giving every runtime's rows the fields they always had."""

import os

import numpy as np
import pytest

from compression_pipeline import benchmark, environment, onnx_tools
from compression_pipeline.frameworks import get
from compression_pipeline.frameworks import keras_adapter as K
from compression_pipeline.runtimes import base, litert, onnxruntime, tf_function, torch_eager
from compression_pipeline.types import InputSpec, ZooModel

PROTOCOL = benchmark.Protocol(warmup_runs=3, warmup_s=0.05, min_runs=20, min_time_s=0.1)
STATS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "throughput", "runs")
PHASES = ("load_s", "first_call_ms", "warmup_runs", "warmup_s", "measured_s", "samples_ms")
MEMORY = ("peak_host_mb", "peak_host_delta_mb", "peak_host_scope")
SPEC = InputSpec(kind="image", shape=(1, 8, 8), class_names=tuple("0123456789"))
# The field set of a CPU fp32 cell of each runtime, as the four loops before the runtimes wrote them (measured on
# that code): the report reads them, so they never change. GPU cells add h2d_ms, peak_device_mb and
# peak_device_scope; fp16 cells add max_abs_diff_vs_fp32.
CELL = {"runtime", "provider", "device", "precision", "batch_size", "threads", "load_s", "first_call_ms",
        "warmup_runs", "warmup_s", "session_warm_s", "measured_s", "samples_ms", *STATS, *MEMORY}
FIELDS_BEFORE = {"onnxruntime": CELL | {"io_binding", "providers_requested", "fallback"}, "torch": CELL,
                 "tensorflow": CELL | {"xla", "threads_source"}, "tflite": CELL | {"delegated_nodes"}}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    module = get("torch").build(ZooModel(width=4), SPEC, seed=0)
    path = tmp_path_factory.mktemp("b") / "m.onnx"
    get("torch").export_onnx(module, path, SPEC)
    return module, SPEC, path


@pytest.fixture(scope="module")
def openers(model, tmp_path_factory):
    """The zoo CNN of width 4 on each runtime: eager, its ONNX export, a Keras twin, the twin's TFLite file."""
    module, spec, path = model
    keras_model = get("tensorflow").build(ZooModel(width=4), spec, seed=0)
    tflite = tmp_path_factory.mktemp("t") / "m.tflite"
    K.to_tflite(keras_model, tflite)
    return {"onnxruntime": lambda: onnxruntime.open(path, SPEC, "NCHW", "cpu", 1),
            "torch": lambda: torch_eager.open(module, SPEC, "NCHW", "cpu", 1),
            "tensorflow": lambda: tf_function.open(keras_model, SPEC, "NHWC", "cpu", 1),
            "tflite": lambda: litert.open(tflite, SPEC, "NHWC", 1)}


def test_timed_keeps_the_cold_call_and_the_warm_up_apart():
    calls = []
    t = benchmark.timed(lambda: calls.append(1), benchmark.Protocol(4, 0.0, 9, 0.0))
    assert t.warmup_calls == 4 and len(t.samples_ms) == 9 and len(calls) == 13
    assert t.first_call_ms >= 0 and t.warmup_s >= 0 and t.measured_s >= t.samples_ms.sum() / 1e3


def test_the_warm_up_time_is_per_session_and_the_count_per_cell():
    protocol = benchmark.Protocol(warmup_runs=3, warmup_s=0.2, min_runs=5, min_time_s=0.0)
    cold = benchmark.timed(lambda: None, protocol)
    assert cold.warmup_s >= 0.2 and cold.warmup_calls > 3
    warm = benchmark.timed(lambda: None, protocol, warm_s=0.3)  # the session already ran 0.3 s
    assert warm.warmup_calls == 3 and warm.warmup_s < 0.2


def test_onnx_cells_carry_every_protocol_field(model):
    path = model[2]
    rows, skipped = benchmark.run([onnxruntime.open(path, SPEC, "NCHW", "cpu", 1)], [1, 8], PROTOCOL)
    assert [(r["precision"], r["batch_size"]) for r in rows] == [("fp32", 1), ("fp32", 8)]
    for r in rows:
        assert set(STATS + PHASES + MEMORY) <= set(r)
        assert r["provider"] == "CPUExecutionProvider" and r["providers_requested"] == ["CPUExecutionProvider"]
        assert r["fallback"] is False and r["io_binding"] is False and r["threads"] == 1
        assert r["runs"] == len(r["samples_ms"]) >= PROTOCOL.min_runs and r["measured_s"] >= PROTOCOL.min_time_s
        # the warm-up count per cell, its time per session: earlier cells of the session count towards it
        assert r["warmup_runs"] >= PROTOCOL.warmup_runs and r["session_warm_s"] + r["warmup_s"] >= PROTOCOL.warmup_s
        assert r["p50_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"] <= max(r["samples_ms"])
        assert r["p50_ms"] == pytest.approx(float(np.median(r["samples_ms"])))
        assert r["throughput"] == pytest.approx(r["batch_size"] * 1e3 / r["mean_ms"])
        assert r["load_s"] > 0 and r["peak_host_mb"] >= r["peak_host_delta_mb"] >= 0
    assert rows[0]["load_s"] == rows[1]["load_s"]  # one session, its creation reported once per cell, apart
    assert rows[0]["session_warm_s"] == 0 and rows[1]["session_warm_s"] == pytest.approx(
        rows[0]["warmup_s"] + rows[0]["measured_s"])
    assert skipped == [{"runtime": "onnxruntime", "precision": "fp16", "reason": base.FP16_CPU_REASON}]


def test_torch_threads_are_set_explicitly_and_recorded(model):
    import torch

    module = model[0]
    before = torch.get_num_threads()
    try:
        rows, skipped = benchmark.run([torch_eager.open(module, SPEC, "NCHW", "cpu", 1)], [2], PROTOCOL)
        assert rows[0]["threads"] == 1 == torch.get_num_threads()
        assert set(STATS + PHASES + MEMORY) <= set(rows[0]) and rows[0]["precision"] == "fp32"
        assert skipped[0]["precision"] == "fp16" and "CUDA only" in skipped[0]["reason"]
        rows, _ = benchmark.run([torch_eager.open(module, SPEC, "NCHW", "cpu", None)], [2], PROTOCOL)
        assert rows[0]["threads"] == benchmark.resolve_threads(None) == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_host_peak_is_per_cell():
    import mmap

    with benchmark.HostPeak() as big:
        # 40 MiB touched, then unmapped: given back to the OS whatever malloc's thresholds (an array freed by malloc
        # may stay resident, and then the next cell starts, rightly, at that higher mark)
        block = mmap.mmap(-1, 40 * 2 ** 20)
        block.write(b"\x01" * len(block))
        block.close()
    with benchmark.HostPeak() as small:
        pass
    assert big.fields["peak_host_scope"] == "cell"  # Linux lets us reset the high-water mark
    assert big.fields["peak_host_delta_mb"] >= 35
    # The second cell does not inherit the first one's peak: the mark was reset in between.
    assert small.fields["peak_host_delta_mb"] < 5 and small.fields["peak_host_mb"] < big.fields["peak_host_mb"]


def test_environment_records_cpu_isa_threads_runtimes_and_versions():
    env = environment.capture(3)
    assert env["threads"] == 3 and env["threads_requested"] == 3
    assert env["cpu"]["cores"] >= 1 and isinstance(env["cpu"]["isa"], list)
    assert "CPUExecutionProvider" in env["runtimes"]["onnxruntime_providers_available"]
    assert env["runtimes"]["onnxruntime_cuda_usable"] == onnx_tools.cuda_usable()
    assert {"torch", "onnx", "numpy"} <= set(env["libraries"])
    assert environment.capture(None)["threads"] == benchmark.resolve_threads(None)


@pytest.mark.skipif(not onnx_tools.cuda_usable(), reason="needs a usable CUDA device (scripts/gpu_check.py)")
def test_cuda_cells_bind_on_the_device_and_run_fp16(model):  # runs on a GPU machine only
    module, _, path = model
    rows, skipped = benchmark.run([onnxruntime.open(path, SPEC, "NCHW", "cuda", None),
                                   torch_eager.open(module, SPEC, "NCHW", "cuda", None)], [1], PROTOCOL)
    assert skipped == []
    assert {(r["runtime"], r["precision"]) for r in rows} == {("onnxruntime", "fp32"), ("onnxruntime", "fp16"),
                                                             ("torch", "fp32"), ("torch", "fp16")}
    assert all(r["device"] == "cuda" and r["h2d_ms"] >= 0 and "peak_device_mb" in r for r in rows)
    assert all(r["io_binding"] for r in rows if r["runtime"] == "onnxruntime")
    gpu = {"h2d_ms", "peak_device_mb", "peak_device_scope"}
    for r in rows:
        assert set(r) == FIELDS_BEFORE[r["runtime"]] | gpu | ({"max_abs_diff_vs_fp32"} if r["precision"] == "fp16"
                                                              else set())
        assert r["precision"] == "fp32" or r["max_abs_diff_vs_fp32"] < 0.05  # fp16 logits stay close to fp32


@pytest.mark.parametrize("runtime", list(FIELDS_BEFORE))
def test_every_runtime_gives_its_rows_the_fields_they_had(openers, runtime):
    """One cell loop for all: each runtime's rows carry exactly the fields its own loop wrote, skips come back."""
    protocol = benchmark.Protocol(warmup_runs=1, warmup_s=0.0, min_runs=3, min_time_s=0.0)
    rows, skipped = benchmark.run([openers[runtime]], [1, 3], protocol)
    assert [(r["runtime"], r["precision"], r["batch_size"]) for r in rows] == [(runtime, "fp32", 1),
                                                                                (runtime, "fp32", 3)]
    assert all(set(r) == FIELDS_BEFORE[runtime] for r in rows)
    reason = litert.TFLITE_FP16_REASON if runtime == "tflite" else base.FP16_CPU_REASON
    assert skipped == [{"runtime": runtime, "precision": "fp16", "reason": reason}]
    assert benchmark.run([openers[runtime]], [2], protocol, fp16=False)[1] == []


def test_every_runtime_times_the_same_model_on_the_same_inputs(openers):
    """The sessions compute the CNN's logits from inputs drawn from the spec and given in their own layout: the
    same samples (NHWC the transpose of NCHW), so the four rows of a batch size time the same work."""
    import keras

    sessions = {name: open_() for name, open_ in openers.items()}
    x = sessions["torch"].inputs(5)
    assert np.array_equal(sessions["tflite"].inputs(5), x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(sessions["onnxruntime"].outputs(x), sessions["torch"].outputs(x), atol=1e-5)
    nhwc = x.transpose(0, 2, 3, 1)
    keras_logits = np.asarray(keras.ops.convert_to_numpy(sessions["tensorflow"].model(nhwc, training=False)))
    np.testing.assert_allclose(sessions["tensorflow"].outputs(nhwc), keras_logits, atol=1e-5)
    np.testing.assert_allclose(sessions["tflite"].outputs(nhwc), keras_logits, atol=1e-4)


def test_the_onnx_fp16_twin_keeps_fp32_io_and_the_logits(model):
    """The fp16 cells of a GPU run use this conversion; it is checked here on the CPU provider."""
    import onnx

    path = model[2]
    blob, why = onnxruntime._fp16_bytes(path)
    converted = onnx.load_from_string(blob)
    assert why is None and onnx.TensorProto.FLOAT not in {i.data_type for i in converted.graph.initializer}
    assert converted.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(3).random((4, 1, 8, 8), dtype=np.float32)
    half, full = onnx_tools.session(blob, "cpu", 1), onnx_tools.session(path, "cpu", 1)
    np.testing.assert_allclose(half.run(None, {"input": x})[0], full.run(None, {"input": x})[0], atol=2e-3)


def test_a_layout_the_model_does_not_take_is_refused_at_open(model):
    module, _, path = model
    with pytest.raises(ValueError, match=r"input has shape \[.+, 1, 8, 8\].*NHWC samples of shape \(8, 8, 1\)"):
        onnxruntime.open(path, SPEC, "NHWC", "cpu", 1)
    with pytest.raises(ValueError, match="images are fed as NCHW or NHWC, not NF"):
        torch_eager.open(module, SPEC, "NF", "cpu", 1)
