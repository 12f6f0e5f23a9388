"""The benchmark harness: the protocol of ANCHORS.md, usable without Dagster.

Load / session-creation time is measured apart from inference. Each cell (runtime x batch size) is warmed
up by count *and* time, then measured by count *and* time; raw samples are kept and summarized as
p50/p90/p95/p99, mean, std and throughput. On CUDA, PyTorch is synchronized around each timed call and
ONNX Runtime binds inputs and outputs on the device (IOBinding), so the timing is compute, not copies.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Protocol:
    warmup_runs: int = 10
    warmup_s: float = 1.0
    min_runs: int = 50
    min_time_s: float = 1.0


def measure(fn: Callable[[], object], protocol: Protocol) -> np.ndarray:
    """Call ``fn`` until warm (count and time), then time it until both the run count and the time are reached.

    Returns the raw per-call latencies in milliseconds. ``fn`` must block until its result is ready.
    """
    start = time.perf_counter()
    n = 0
    while n < protocol.warmup_runs or time.perf_counter() - start < protocol.warmup_s:
        fn()
        n += 1
    samples = []
    start = time.perf_counter()
    while len(samples) < protocol.min_runs or time.perf_counter() - start < protocol.min_time_s:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(samples)


def summarize(samples_ms: np.ndarray, batch_size: int) -> dict:
    p50, p90, p95, p99 = np.percentile(samples_ms, [50, 90, 95, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_ms": float(samples_ms.mean()), "std_ms": float(samples_ms.std()), "runs": int(len(samples_ms)),
            "throughput": float(batch_size * 1e3 / samples_ms.mean())}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inputs(in_shape, batch_size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch_size, *in_shape), dtype=np.float32)


def bench_onnx(path: Path, in_shape, batch_sizes, device: str, threads: int | None, protocol: Protocol) -> list[dict]:
    from compression_pipeline import onnx_tools

    t0 = time.perf_counter()
    sess = onnx_tools.session(path, device, threads)
    load_s = time.perf_counter() - t0
    provider = sess.get_providers()[0]
    on_gpu = provider != "CPUExecutionProvider"
    name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    rows = []
    for bs in batch_sizes:
        x = _inputs(in_shape, bs)
        if on_gpu:
            import onnxruntime as ort

            binding = sess.io_binding()
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            binding.bind_output(out_name, "cuda", 0)

            def call():
                sess.run_with_iobinding(binding)
                binding.synchronize_outputs()
        else:
            def call():
                sess.run([out_name], {name: x})
        samples = measure(call, protocol)
        rows.append({"runtime": "onnxruntime", "provider": provider, "device": "cuda" if on_gpu else "cpu",
                     "batch_size": bs, "threads": threads, "load_s": load_s, "io_binding": on_gpu,
                     **summarize(samples, bs), "peak_host_mb": _peak_rss_mb(), "samples_ms": samples.tolist()})
    return rows


def bench_torch(module, in_shape, batch_sizes, device: str, threads: int | None, protocol: Protocol,
                load_s: float = 0.0) -> list[dict]:
    import torch

    from compression_pipeline.onnx_tools import cuda_usable

    use_cuda = device in ("cuda", "auto") and torch.cuda.is_available() and cuda_usable()
    if device == "cuda" and not use_cuda:
        raise RuntimeError("device 'cuda' was asked for, but torch sees no usable CUDA device")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if use_cuda else "cpu")
    module = module.to(dev).eval()
    rows = []
    for bs in batch_sizes:
        x = torch.from_numpy(_inputs(in_shape, bs)).to(dev)
        if use_cuda:
            torch.cuda.reset_peak_memory_stats()

        def call():
            with torch.inference_mode():
                module(x)
            if use_cuda:
                torch.cuda.synchronize()

        samples = measure(call, protocol)
        row = {"runtime": "torch", "provider": "cuda" if use_cuda else "cpu", "device": dev.type, "batch_size": bs,
               "threads": threads, "load_s": load_s, **summarize(samples, bs), "peak_host_mb": _peak_rss_mb(),
               "samples_ms": samples.tolist()}
        if use_cuda:
            row["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        rows.append(row)
    return rows
