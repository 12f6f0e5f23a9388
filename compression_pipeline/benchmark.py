"""The benchmark harness: the protocol of ANCHORS.md, usable without Dagster.

Load / session-creation time is measured apart from inference, and so is the first (cold) call. Each cell
(runtime x precision x batch size) is warmed up by count *and* time, then measured by count *and* time;
raw samples are kept and summarized as p50/p90/p95/p99, mean, std and throughput. On CUDA, PyTorch is
synchronized around each timed call and ONNX Runtime binds inputs and outputs on the device (IOBinding),
so the timing is compute, not copies; the host-to-device copy of one input batch is reported apart.

Memory per cell: ``peak_host_mb`` is the peak resident set size (VmHWM) of this process during the cell;
Linux lets us reset that high-water mark (``/proc/self/clear_refs``) at the start of each cell, so it is
the cell's peak, including the runtime, the model and everything else resident. ``peak_host_delta_mb`` is
that peak minus the resident size when the cell started: what the cell itself added. Where the reset is
not allowed, the peak is the whole process's (``peak_host_scope: process``). On CUDA, ``peak_device_mb``
is the PyTorch allocator's peak for torch, and for ONNX Runtime the process's device memory after the cell
(ORT's arena only grows, so that is its peak; it includes the CUDA context).

Threads are always set explicitly (``None`` in a recipe means one per core this process may use) and the
value in effect is recorded. fp16 runs only on CUDA; elsewhere the cell is skipped with its reason recorded.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FP16_CPU_REASON = ("fp16 is benchmarked on CUDA only: this run is on CPU, where neither the ORT CPU provider nor "
                   "torch has fast fp16 convolutions (they run slower than fp32)")


@dataclass(frozen=True)
class Protocol:
    warmup_runs: int = 10
    warmup_s: float = 1.0
    min_runs: int = 50
    min_time_s: float = 1.0


@dataclass
class Timing:
    samples_ms: np.ndarray  # one per measured call
    first_call_ms: float  # the first (cold) call; part of the warm-up, never of the samples
    warmup_calls: int
    warmup_s: float
    measured_s: float


def timed(fn: Callable[[], object], protocol: Protocol, warm_s: float = 0.0) -> Timing:
    """Call ``fn`` until warm (count and time), then time it until both the run count and the time are reached.

    ``fn`` must block until its result is ready (synchronize on a GPU). The count is per cell (a new batch size
    has its own first calls: allocations, kernel choices); the time is per session: ``warm_s`` is how long this
    session has already run in earlier cells (their warm-up and measurement), which counts towards it, since what
    the time-based warm-up waits for (clock frequency, caches, the runtime's thread pool and allocator growing to
    their steady state) is the process's and the session's, not the batch size's.
    """
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1e3
    n = 1
    while n < protocol.warmup_runs or warm_s + time.perf_counter() - start < protocol.warmup_s:
        fn()
        n += 1
    warm_s = time.perf_counter() - start
    samples = []
    start = time.perf_counter()
    while len(samples) < protocol.min_runs or time.perf_counter() - start < protocol.min_time_s:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(np.asarray(samples), first, n, warm_s, time.perf_counter() - start)


def measure(fn: Callable[[], object], protocol: Protocol) -> np.ndarray:
    """The raw per-call latencies in milliseconds (see ``timed``)."""
    return timed(fn, protocol).samples_ms


def summarize(samples_ms: np.ndarray, batch_size: int) -> dict:
    p50, p90, p95, p99 = np.percentile(samples_ms, [50, 90, 95, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_ms": float(samples_ms.mean()), "std_ms": float(samples_ms.std()), "runs": len(samples_ms),
            "throughput": float(batch_size * 1e3 / samples_ms.mean())}


def _timing_fields(t: Timing, batch_size: int, warm_s: float = 0.0) -> dict:
    return {**summarize(t.samples_ms, batch_size), "first_call_ms": t.first_call_ms, "warmup_runs": t.warmup_calls,
            "warmup_s": t.warmup_s, "session_warm_s": warm_s, "measured_s": t.measured_s,
            "samples_ms": t.samples_ms.tolist()}


# --- threads and memory ---------------------------------------------------------------------------------------
def resolve_threads(threads: int | None) -> int:
    """The thread count to set: the recipe's, or one per core this process may run on (cgroup/affinity aware)."""
    if threads:
        return int(threads)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class HostPeak:
    """Peak resident memory of this process while the block runs (see the module docstring)."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # "5": reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            self.scope = "cell"
        except OSError:
            self.scope = "process"
        self.start_mb = _status_mb("VmRSS") or 0.0
        return self

    def __exit__(self, *exc):
        peak = _status_mb("VmHWM") if self.scope == "cell" else None
        if peak is None:
            self.scope = "process"
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        self.fields = {"peak_host_mb": peak, "peak_host_delta_mb": max(peak - self.start_mb, 0.0),
                       "peak_host_scope": self.scope}
        return False


def _process_device_mb() -> tuple[float | None, str]:
    """Device memory held by this process (nvidia-smi per process), else by the whole device."""
    if not shutil.which("nvidia-smi"):
        return None, "unavailable"
    try:
        # check=False: a failed query leaves nothing to parse; that ends in the device fallback or "unavailable".
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
        for line in out.splitlines():
            pid, used = [x.strip() for x in line.split(",")]
            if pid == str(os.getpid()):
                return float(used), "process"
        # In a container the PID namespace often hides our pid: fall back to the device (the gpu pool is exclusive).
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
        return float(out.split()[0]), "device"
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None, "unavailable"


def _inputs(in_shape, batch_size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch_size, *in_shape), dtype=np.float32)


def _copy_ms(fn, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


# --- ONNX Runtime ---------------------------------------------------------------------------------------------
def _is_quantized(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger", "ConvInteger",
                             "DynamicQuantizeLinear") for n in model.graph.node)


def _fp16_bytes(path: Path) -> tuple[bytes | None, str | None]:
    """The model with float weights cast to fp16 (inputs/outputs stay fp32), or the reason it cannot be."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    if _is_quantized(model):
        return None, "the model is int8-quantized; an fp16 cast applies to float models only"
    try:
        return convert_float_to_float16(model, keep_io_types=True).SerializeToString(), None
    except Exception as e:  # noqa: BLE001 - recorded as the cell's skip reason, never hidden
        return None, f"ORT's fp16 conversion failed: {type(e).__name__}: {e}"


def bench_onnx(path: Path, in_shape, batch_sizes, device: str, threads: int | None, protocol: Protocol,
               fp16: bool = True, skipped: list | None = None) -> list[dict]:
    """fp32 cells of the ONNX model at each batch size, then fp16 cells when on CUDA (skips go to ``skipped``)."""
    from compression_pipeline import onnx_tools

    n_threads = resolve_threads(threads)
    asked = onnx_tools.providers_for(device)
    t0 = time.perf_counter()
    sess = onnx_tools.session(path, device, n_threads)
    load_s = time.perf_counter() - t0
    provider = sess.get_providers()[0]
    # ORT fell back: an error when CUDA was demanded, a recorded fact ("fallback") otherwise.
    if provider != asked[0] and device == "cuda":
        raise RuntimeError(f"ONNX Runtime was asked for {asked[0]} but runs on {provider}")
    extra = {"providers_requested": asked, "fallback": provider != asked[0]}
    rows = _onnx_cells(sess, in_shape, batch_sizes, n_threads, protocol, load_s, "fp32", extra)
    skipped = skipped if skipped is not None else []
    if fp16:
        if provider != "CUDAExecutionProvider":
            skipped.append({"runtime": "onnxruntime", "precision": "fp16", "reason": FP16_CPU_REASON})
        else:
            t0 = time.perf_counter()
            blob, why = _fp16_bytes(path)
            if blob is None:
                skipped.append({"runtime": "onnxruntime", "precision": "fp16", "reason": why})
            else:
                sess16 = onnx_tools.session(blob, device, n_threads)
                load16 = time.perf_counter() - t0
                # fp16 cells are timings; the gates judged the fp32 artifact. Say how far fp16 logits move.
                x = _inputs(in_shape, max(batch_sizes))
                diff = float(np.abs(sess16.run(None, {sess16.get_inputs()[0].name: x})[0]
                                    - sess.run(None, {sess.get_inputs()[0].name: x})[0]).max())
                rows += _onnx_cells(sess16, in_shape, batch_sizes, n_threads, protocol, load16, "fp16",
                                    {**extra, "max_abs_diff_vs_fp32": diff})
    return rows


def _onnx_cells(sess, in_shape, batch_sizes, threads, protocol, load_s, precision, extra) -> list[dict]:
    provider = sess.get_providers()[0]
    on_gpu = provider != "CPUExecutionProvider"
    name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    rows, warm = [], 0.0
    for bs in batch_sizes:
        x = _inputs(in_shape, bs)
        gpu = {}
        with HostPeak() as mem:
            if on_gpu:
                import onnxruntime as ort

                binding = sess.io_binding()
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
                binding.bind_output(out_name, "cuda", 0)

                def call(binding=binding):
                    sess.run_with_iobinding(binding)
                    binding.synchronize_outputs()

                gpu["h2d_ms"] = _copy_ms(lambda x=x: ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            else:
                def call(x=x):
                    sess.run([out_name], {name: x})
            t = timed(call, protocol, warm)
        if on_gpu:
            gpu["peak_device_mb"], gpu["peak_device_scope"] = _process_device_mb()
        rows.append({"runtime": "onnxruntime", "provider": provider, "device": "cuda" if on_gpu else "cpu",
                     "precision": precision, "batch_size": bs, "threads": threads, "load_s": load_s,
                     "io_binding": on_gpu, **extra, **gpu, **_timing_fields(t, bs, warm), **mem.fields})
        warm += t.warmup_s + t.measured_s
    return rows


# --- PyTorch ----------------------------------------------------------------------------------------------------
def torch_cuda_usable() -> bool:
    """CUDA as torch sees it, proven by a real allocation (is_available() alone can be true on a broken driver)."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        torch.zeros(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


def bench_torch(module, in_shape, batch_sizes, device: str, threads: int | None, protocol: Protocol,
                load_s: float = 0.0, fp16: bool = True, skipped: list | None = None) -> list[dict]:
    import torch

    use_cuda = device in ("cuda", "auto") and torch_cuda_usable()
    if device == "cuda" and not use_cuda:
        raise RuntimeError("device 'cuda' was asked for, but torch sees no usable CUDA device")
    n_threads = resolve_threads(threads)
    torch.set_num_threads(n_threads)
    dev = torch.device("cuda" if use_cuda else "cpu")
    module = module.to(dev).eval()
    precisions = [("fp32", torch.float32)]
    if fp16 and use_cuda:
        precisions.append(("fp16", torch.float16))
    elif fp16 and skipped is not None:
        skipped.append({"runtime": "torch", "precision": "fp16", "reason": FP16_CPU_REASON})
    rows = []
    for precision, dtype in precisions:
        m = module if dtype == torch.float32 else _half_copy(module)
        diff, warm = {}, 0.0
        if dtype != torch.float32:  # timings only: say how far the fp16 logits move from fp32
            x = torch.from_numpy(_inputs(in_shape, max(batch_sizes))).to(dev)
            with torch.inference_mode():
                diff["max_abs_diff_vs_fp32"] = float((m(x.to(dtype)).float() - module(x)).abs().max())
        for bs in batch_sizes:
            host = torch.from_numpy(_inputs(in_shape, bs)).to(dtype)
            gpu = {}
            with HostPeak() as mem:
                x = host.to(dev)
                if use_cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    gpu["h2d_ms"] = _copy_ms(lambda host=host: (host.to(dev), torch.cuda.synchronize()))

                def call(m=m, x=x):
                    with torch.inference_mode():
                        m(x)
                    if use_cuda:
                        torch.cuda.synchronize()

                t = timed(call, protocol, warm)
            if use_cuda:
                gpu["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
                gpu["peak_device_scope"] = "torch allocator"
            rows.append({"runtime": "torch", "provider": "cuda" if use_cuda else "cpu", "device": dev.type,
                         "precision": precision, "batch_size": bs, "threads": torch.get_num_threads(),
                         "load_s": load_s, **gpu, **diff, **_timing_fields(t, bs, warm), **mem.fields})
            warm += t.warmup_s + t.measured_s
    return rows


def _half_copy(module):
    import copy

    return copy.deepcopy(module).half()
