"""The benchmark harness: the protocol of ANCHORS.md and the one cell loop over the runtimes, without Dagster.

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

The runtimes (``compression_pipeline.runtimes``: ONNX Runtime, PyTorch eager, tf.function, LiteRT) open sessions;
``run`` times each session at each batch size (fp32, then fp16 where the session can) and returns the rows, one
per cell with the same fields for every runtime plus the runtime's own, and the skipped cells with their reasons.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from compression_pipeline.runtimes.base import Session


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
# A launcher running phases side by side names a file holding each phase's thread count now; it rewrites the file
# when a phase ends, so PyTorch training beside it takes the freed cores from its next step or epoch.
THREAD_SHARE_ENV = "COMPRESSION_PIPELINE_THREAD_SHARE"


def shared_threads() -> int | None:
    """The thread count the launcher gives this process now (the file named by COMPRESSION_PIPELINE_THREAD_SHARE),
    or None where no launcher shares the cores (or the file cannot be read: the count in effect stays)."""
    path = os.environ.get(THREAD_SHARE_ENV)
    if not path:
        return None
    try:
        n = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return n if n > 0 else None


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


# --- the one cell loop ------------------------------------------------------------------------------------------
def run(sessions: Iterable[Session | Callable[[], Session]], batch_sizes, protocol: Protocol,
        fp16: bool = True) -> tuple[list[dict], list[dict]]:
    """Every cell of every session: fp32 at each batch size, then, with ``fp16``, the session's fp16 twin at each
    batch size where it has one (its rows say how far its outputs move from fp32: ``max_abs_diff_vs_fp32``).

    A session may be given as a function that opens it: it is then opened just before its cells, after the
    previous session's cells are done, so one runtime's loading never overlaps another's measurement.
    Returns (rows, skipped), skipped being {runtime, precision, reason} per cell not run here."""
    rows, skipped = [], []
    for session in sessions:
        s = session() if callable(session) else session
        rows += _cells(s, batch_sizes, protocol)
        half = s.half() if fp16 else None
        if isinstance(half, str):
            skipped.append({"runtime": s.runtime, "precision": "fp16", "reason": half})
        elif half is not None:
            x = s.inputs(max(batch_sizes))  # fp16 cells are timings; the gates judged the fp32 model
            half.fields = {**half.fields, "max_abs_diff_vs_fp32": float(np.abs(half.outputs(x) - s.outputs(x)).max())}
            rows += _cells(half, batch_sizes, protocol)
    return rows, skipped


def _cells(s: Session, batch_sizes, protocol: Protocol) -> list[dict]:
    rows, warm = [], 0.0
    for bs in batch_sizes:
        host = s.feed(s.inputs(bs))
        with HostPeak() as mem:
            cell = s.cell(host)
            t = timed(cell.call, protocol, warm)
        rows.append({"runtime": s.runtime, "provider": s.provider, "device": s.device, "precision": s.precision,
                     "batch_size": bs, "threads": s.threads, "load_s": s.load_s, **s.fields, **cell.fields,
                     **cell.after(), **_timing_fields(t, bs, warm), **mem.fields})
        warm += t.warmup_s + t.measured_s
    return rows
