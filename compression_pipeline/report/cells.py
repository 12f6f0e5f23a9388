"""The leaf of the report package: benchmark cells, model keys and the benchmark row fields.

Every other report module imports from here and this module imports none of them, so the helpers they share
can never pull the report into an import circle.
"""

from __future__ import annotations

BENCH_FIELDS = ("runtime", "provider", "device", "batch_size", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                "mean_ms", "std_ms", "runs", "throughput", "load_s", "peak_host_mb", "peak_device_mb",
                # added with the GPU-ready harness:
                "precision", "io_binding", "fallback", "first_call_ms", "warmup_runs", "warmup_s", "measured_s",
                "h2d_ms", "peak_host_delta_mb", "peak_host_scope", "peak_device_scope", "max_abs_diff_vs_fp32",
                # added with the TensorFlow runtimes (runtimes/tf_function.py, runtimes/litert.py):
                "xla", "threads_source", "delegated_nodes",
                # added with the per-session warm-up time:
                "session_warm_s")


def precision(row: dict) -> str:
    return row.get("precision", "fp32")


def cell(row: dict) -> tuple[str, str, int]:
    """A benchmark cell: (runtime, precision, batch size)."""
    return row["runtime"], precision(row), row["batch_size"]


def cell_label(c: tuple[str, str, int]) -> str:
    rt, prec, bs = c
    return f"{rt} b{bs}" if prec == "fp32" else f"{rt} {prec} b{bs}"


def model_key(m: dict) -> str:
    """A report model's key, ``<framework>_<name>``: a name alone is ambiguous when two frameworks build it."""
    return f"{m['framework']}_{m['name']}"
