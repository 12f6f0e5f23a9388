"""The leaf of the report package: benchmark cells, model keys and the benchmark row fields.

Every other report module imports from here and this module imports none of them, so the helpers they share
can never pull the report into an import circle.
"""

from __future__ import annotations

from compression_pipeline import stats

BENCH_FIELDS = ("runtime", "provider", "device", "batch_size", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                "mean_ms", "std_ms", "runs", "throughput", "load_s", "peak_host_mb", "peak_device_mb",
                # added with the GPU-ready harness:
                "precision", "io_binding", "fallback", "first_call_ms", "warmup_runs", "warmup_s", "measured_s",
                "h2d_ms", "peak_host_delta_mb", "peak_host_scope", "peak_device_scope", "max_abs_diff_vs_fp32",
                # added with the TensorFlow runtimes (runtimes/tf_function.py, runtimes/litert.py):
                "xla", "threads_source", "delegated_nodes",
                # added with the per-session warm-up time:
                "session_warm_s",
                # added with the interleaved session (interleave.py): the session id, its rounds, each round's p50
                # and mean, other processes' CPU use during the cell, the speedup's interval (reference / this cell,
                # the median of per-round ratios), the ratio to the PyTorch baseline on PyTorch eager
                "session", "rounds", "round_p50_ms", "round_mean_ms", "round_blocks", "others_cores", "speedup_ci",
                "speedup_resolved", "speedup_rounds", "speedup_reference", "speedup_unstable", "vs_torch_eager")


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


def round_ratio(reference: dict, row: dict, confidence: float = 0.95) -> stats.RoundRatio | None:
    """``reference`` p50 / ``row`` p50 per round, when both cells were timed in the rounds of the same session (else
    None: a ratio of cells timed at different moments is not a measurement)."""
    a, b = reference.get("round_p50_ms"), row.get("round_p50_ms")
    if not reference.get("session") or reference.get("session") != row.get("session") or not a or len(a) != len(b):
        return None
    return stats.round_ratio(a, b, confidence, row.get("round_blocks"))


def ratio_text(value: float, ci: list[float] | None = None) -> str:
    """'2.98x [2.54, 3.27]'; '~1.02x [0.97, 1.08]' when the interval includes 1 (no difference resolved)."""
    if not ci:
        return f"{value:.2f}x"
    same = ci[0] <= 1.0 <= ci[1]
    return f"{'~' if same else ''}{value:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]"


def speedup_text(row: dict) -> str:
    return ratio_text(row.get("speedup_vs_baseline", 1.0), row.get("speedup_ci"))
