"""The benchmark harness: every field of the protocol, explicit threads, per-cell host memory, fp16 skips."""

import os

import numpy as np
import pytest

from compression_pipeline import benchmark, environment, onnx_tools, zoo

PROTOCOL = benchmark.Protocol(warmup_runs=3, warmup_s=0.05, min_runs=20, min_time_s=0.1)
STATS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "throughput", "runs")
PHASES = ("load_s", "first_call_ms", "warmup_runs", "warmup_s", "measured_s", "samples_ms")
MEMORY = ("peak_host_mb", "peak_host_delta_mb", "peak_host_scope")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    spec = zoo.cnn_spec(4)
    module = zoo.build_torch(spec, seed=0)
    path = tmp_path_factory.mktemp("b") / "m.onnx"
    onnx_tools.export_torch(module, spec, path)
    return module, spec, path


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
    _, spec, path = model
    skipped = []
    rows = benchmark.bench_onnx(path, spec.in_shape, [1, 8], "cpu", 1, PROTOCOL, skipped=skipped)
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
    assert skipped == [{"runtime": "onnxruntime", "precision": "fp16", "reason": benchmark.FP16_CPU_REASON}]


def test_torch_threads_are_set_explicitly_and_recorded(model):
    import torch

    module, spec, _ = model
    before = torch.get_num_threads()
    try:
        skipped = []
        rows = benchmark.bench_torch(module, spec.in_shape, [2], "cpu", 1, PROTOCOL, skipped=skipped)
        assert rows[0]["threads"] == 1 == torch.get_num_threads()
        assert set(STATS + PHASES + MEMORY) <= set(rows[0]) and rows[0]["precision"] == "fp32"
        assert skipped[0]["precision"] == "fp16" and "CUDA only" in skipped[0]["reason"]
        rows = benchmark.bench_torch(module, spec.in_shape, [2], "cpu", None, PROTOCOL)
        assert rows[0]["threads"] == benchmark.resolve_threads(None) == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_host_peak_is_per_cell():
    with benchmark.HostPeak() as big:
        block = np.ones(40 * 2 ** 20 // 8)  # 40 MiB touched
        del block
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
    module, spec, path = model
    rows = benchmark.bench_onnx(path, spec.in_shape, [1], "cuda", None, PROTOCOL)
    rows += benchmark.bench_torch(module, spec.in_shape, [1], "cuda", None, PROTOCOL)
    assert {(r["runtime"], r["precision"]) for r in rows} == {("onnxruntime", "fp32"), ("onnxruntime", "fp16"),
                                                             ("torch", "fp32"), ("torch", "fp16")}
    assert all(r["device"] == "cuda" and r["h2d_ms"] >= 0 and "peak_device_mb" in r for r in rows)
    assert all(r["io_binding"] for r in rows if r["runtime"] == "onnxruntime")
