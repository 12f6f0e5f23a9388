"""The family report: report.json (the machine-readable contract), report.md (the table people read) and
report.html with its plots (``report_html``).

report.json fields that other tools rely on: ``environment``, ``models`` and ``rejected`` (asset, run_id,
name, failed_gates with name and description); each model has ``name``,
``framework``, ``method``, ``parent``, ``accuracy``, ``accuracy_drop``, ``params``, ``file_bytes`` and
``benchmarks`` (each with ``runtime``, ``provider``, ``device``, ``batch_size``, ``p50_ms``, ``p90_ms``,
``p99_ms``, ``throughput``). Fields are only ever added, never renamed.

Added with the TensorFlow backend: each model's ``framework`` is ``torch`` or ``tensorflow`` and its ``format``
the deployable's (``onnx`` or ``tflite``); a benchmark's ``runtime`` is ``onnxruntime``, ``torch``,
``tensorflow`` or ``tflite``. ``framework_comparison``: per model name built in more than one framework,
``name``, ``frameworks``, ``rows`` (per model entry: ``framework``, ``format``, ``accuracy``,
``accuracy_runtime``, ``accuracy_drop``, ``params``, ``file_bytes``, ``p50_ms``: a list of {``runtime``,
``precision``, ``batch_size``, ``p50_ms``}) and ``onnxruntime_p50_ratio_tensorflow_over_torch`` (a list of
{``precision``, ``batch_size``, ``torch_p50_ms``, ``tensorflow_p50_ms``, ``ratio``}). ``runtime_comparison``:
per benchmarked model, ``name``, ``framework``, ``format`` and ``cells`` ({``runtime``, ``precision``,
``batch_size``, ``p50_ms``, ``onnxruntime_p50_ms``, ``vs_onnxruntime`` = p50 / ONNX Runtime p50, or null}).
See ``report_compare``.
"""

from __future__ import annotations

import datetime as dt
import json

from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import Recipe

BENCH_FIELDS = ("runtime", "provider", "device", "batch_size", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                "mean_ms", "std_ms", "runs", "throughput", "load_s", "peak_host_mb", "peak_device_mb",
                # added with the GPU-ready harness:
                "precision", "io_binding", "fallback", "first_call_ms", "warmup_runs", "warmup_s", "measured_s",
                "h2d_ms", "peak_host_delta_mb", "peak_host_scope", "peak_device_scope", "max_abs_diff_vs_fp32",
                # added with the TensorFlow runtimes (benchmark_tf):
                "xla", "threads_source", "delegated_nodes",
                # added with the per-session warm-up time:
                "session_warm_s")


def build(recipe: Recipe, models: list[tuple[Handle, Handle]], rejected: list[dict] = ()) -> dict:
    """``models``: (deployable handle, benchmark handle) per model that passed its gates, baseline(s) first.
    ``rejected``: the family's newest candidates that failed a gate (``HandleStore.rejected``), listed apart
    with the gates they failed: never in ``models``, never a deployment candidate."""
    entries = []
    for deployable, bench in models:
        i = deployable.info
        entry = {
            "name": i["name"], "framework": i["framework"], "format": _format(deployable),
            "method": i.get("method"), "parent": i.get("parent"),
            "chain": recipe.chain(i["name"]), "config": i.get("config", {}),
            "accuracy": i["accuracy"], "accuracy_runtime": i["accuracy_runtime"],
            "baseline_accuracy": i["baseline_accuracy"],
            "accuracy_drop": i["baseline_accuracy"] - i["accuracy"],
            "accuracy_drop_relative": (i["baseline_accuracy"] - i["accuracy"]) / max(i["baseline_accuracy"], 1e-12),
            # the paired drop's confidence interval on the same test images (None for a baseline), and n
            "accuracy_drop_ci": i.get("accuracy_drop_ci"),
            "accuracy_drop_confidence": i.get("accuracy_drop_confidence"),
            "test_samples": i.get("test_samples"), "images_worse": i.get("images_worse"),
            "images_better": i.get("images_better"),
            "tolerance": recipe.tolerance(i["name"]).model_dump() if i["name"] != "baseline" else None,
            "params": i["params"], "nonzero_params": i["nonzero_params"], "file_bytes": i["file_bytes"],
            "gzip_bytes": i["gzip_bytes"], "compact_bytes": i.get("compact_bytes"),
            "compact_artifact": i.get("compact_artifact"), "artifact": deployable.artifact.path,
            "sha256": deployable.artifact.sha256,
            "gates_passed": deployable.gates_passed, "gates": i.get("gates", []),
            "benchmarks": [{k: r[k] for k in BENCH_FIELDS if k in r} for r in bench.info["results"]],
            "benchmarks_skipped": bench.info.get("skipped", []),
            "benchmark_artifact": bench.artifact.path if bench.artifact else None,
            "macs": i.get("macs"), "compress_s": i.get("compress_s"), "seed": i.get("seed"), "note": i.get("note"),
            "ablation": _ablation(i.get("ablation")),
        }
        entries.append(entry)
    _add_ratios(entries)
    from compression_pipeline import report_compare

    env = models[0][1].info["environment"] if models else {}
    return {"family": recipe.name, "recipe": recipe.source_path, "generated_at": dt.datetime.now(dt.UTC).isoformat(),
            "environment": env, "gates": recipe.gates.model_dump(), "dataset": recipe.dataset.model_dump(mode="json"),
            "select": recipe.select.model_dump(mode="json"), "models": entries, "rejected": list(rejected),
            "framework_comparison": report_compare.framework_comparison(entries),
            "runtime_comparison": report_compare.runtime_comparison(entries)}


def _format(deployable: Handle) -> str:
    """The deployable's format: the handle's own word, else its artifact's, else ONNX (older handles)."""
    fmt = deployable.info.get("format") or (deployable.artifact.format if deployable.artifact else None)
    return fmt or "onnx"


def _ablation(ablation: dict | None) -> dict | None:
    """The distillation ablation without its per-epoch history."""
    return None if ablation is None else {k: v for k, v in ablation.items() if not k.endswith("history")}


def _add_ratios(entries: list[dict]) -> None:
    """Speedup and size ratios against the same framework's fp32 baseline, on the same runtime and batch size
    (an fp16 cell's speedup is therefore precision and compression together). A .tflite variant's speedup on
    the tflite runtime is thus against the TensorFlow baseline's tflite cell. Where a framework's baseline has
    an entry per deployable format, the one of the model's own format is the reference (size, and the cells
    both have), the others fill in the cells it lacks."""
    bases = [e for e in entries if e["name"] == "baseline"]
    for e in entries:
        fmt = e.get("format", "onnx")
        same = sorted((b for b in bases if b["framework"] == e["framework"]),
                      key=lambda b: b.get("format", "onnx") != fmt)
        if not same:
            continue
        b = same[0]
        e["size_ratio"] = e["file_bytes"] / b["file_bytes"]
        e["params_ratio"] = e["params"] / b["params"]
        if e.get("macs") and b.get("macs"):
            e["macs_ratio"] = e["macs"] / b["macs"]
        ref = {}
        for other in reversed(same):  # the model's own format last, so its cells win
            ref.update({(r["runtime"], r["batch_size"]): r["p50_ms"] for r in other["benchmarks"]
                        if precision(r) == "fp32"})
        for r in e["benchmarks"]:
            key = (r["runtime"], r["batch_size"])
            if key in ref:
                r["speedup_vs_baseline"] = ref[key] / r["p50_ms"]


def precision(row: dict) -> str:
    return row.get("precision", "fp32")


def cell(row: dict) -> tuple[str, str, int]:
    """A benchmark cell: (runtime, precision, batch size)."""
    return row["runtime"], precision(row), row["batch_size"]


def cell_label(c: tuple[str, str, int]) -> str:
    rt, prec, bs = c
    return f"{rt} b{bs}" if prec == "fp32" else f"{rt} {prec} b{bs}"


def drop_text(m: dict) -> str:
    """'+1.67 (-0.31..+3.60)': the drop in points with its interval, when the model has one."""
    ci = m.get("accuracy_drop_ci")
    text = f"{100 * m['accuracy_drop']:+.2f}"
    return text if not ci else f"{text} ({100 * ci[0]:+.2f}..{100 * ci[1]:+.2f})"


def markdown(report: dict) -> str:
    cells = sorted({cell(r) for m in report["models"] for r in m["benchmarks"]})
    head = ["model", "framework", "method", "parent", "accuracy", "drop pp (95% CI)", "params", "file KB", "gzip KB",
            "compact KB", "gates"] + [f"{cell_label(c)} p50 ms (speedup)" for c in cells]
    runtimes = "/".join(sorted({m["accuracy_runtime"] for m in report["models"]}))
    lines = [f"# {report['family']}: compression report", "",
             (f"Accuracy on the test split, measured on the deployed artifact ({runtimes}). "
             "Drop is against the same framework's baseline; speedup is baseline p50 / model p50 on the same runtime "
             "and batch size, measured in the same run. "
             f"The drop's interval is from the paired predictions on the same {_test_samples(report)} test images "
             "(Agresti-Min); one image is " f"{_one_image(report)} points."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report["models"]:
        bench = {cell(r): r for r in m["benchmarks"]}
        row = [m["name"], m["framework"], m["method"] or "-", m["parent"] or "-", f"{m['accuracy']:.4f}",
               drop_text(m), f"{m['params']:,}", f"{m['file_bytes'] / 1024:.0f}",
               f"{m['gzip_bytes'] / 1024:.0f}",
               "-" if m.get("compact_bytes") is None else f"{m['compact_bytes'] / 1024:.0f}",
               "pass" if m["gates_passed"] else "FAIL"]
        for c in cells:
            r = bench.get(c)
            row.append("-" if r is None else f"{r['p50_ms']:.3f} ({r.get('speedup_vs_baseline', 1.0):.2f}x)")
        lines.append("| " + " | ".join(row) + " |")
    several = len({m["framework"] for m in report["models"]}) > 1
    notes = [f"- **{m['name']}** ({m['framework'] + ', ' if several else ''}{m['method']}): {m['note']}"
             for m in report["models"] if m.get("note")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    # Left out: runtimes that cannot run the model at all (applicable False).
    skipped = sorted({f"{s['runtime']} {s['precision']}: {s['reason']}" for m in report["models"]
                      for s in m.get("benchmarks_skipped", []) if s.get("applicable", True)})
    if skipped:
        lines += ["", "Not measured here: " + "; ".join(skipped) + "."]
    from compression_pipeline import report_compare

    lines += report_compare.markdown_sections(report)
    if report.get("rejected"):
        lines += ["", "## Rejected candidates", "",
                  ("The newest materialization of each asset below failed a gate: it is not in the table above (which "
                  "shows the last good version, if any) and can never be the deployment candidate."), ""]
        for x in report["rejected"]:
            why = "; ".join(f"{g['name']}: {g['description']}" for g in x["failed_gates"]) or "gates failed"
            lines.append(f"- `{x['asset']}` (run {x['run_id'][:8]}): {why}")
    env = report.get("environment") or {}
    cpu, gpu = env.get("cpu") or {}, env.get("gpu")
    lines += ["", (f"Environment: {cpu.get('model', '?')} ({cpu.get('cores', '?')} cores, ISA: "
                  f"{', '.join(cpu.get('isa', [])) or 'baseline'}), threads {env.get('threads')}, "
                  f"load average {env.get('load_average_1m', '?')} while measuring, "
                  f"GPU: {gpu['name'] if gpu else 'none'}; providers used: "
                  f"{', '.join(sorted({r['provider'] for m in report['models'] for r in m['benchmarks']}))}.")]
    return "\n".join(lines) + "\n"


def _test_samples(report: dict) -> str:
    sizes = sorted({m["test_samples"] for m in report["models"] if m.get("test_samples")})
    return "/".join(map(str, sizes)) or "?"


def _one_image(report: dict) -> str:
    sizes = sorted({m["test_samples"] for m in report["models"] if m.get("test_samples")})
    return "/".join(f"{100 / n:.2f}" for n in sizes) or "?"


def write(report: dict, store: ArtifactStore) -> dict[str, str]:
    """Write report.json and report.md atomically under ``<artifact root>/<family>/report/``."""
    folder = f"{report['family']}/report"
    from compression_pipeline import report_html

    paths = {"json": store.write_text_named(f"{folder}/report.json", json.dumps(report, indent=1, default=float)),
             "md": store.write_text_named(f"{folder}/report.md", markdown(report)),
             **report_html.write(report, store, folder)}
    return {k: str(v) for k, v in paths.items()}
