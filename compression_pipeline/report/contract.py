"""report.json: the family report as a dict, the machine-readable contract that report.md (``md``) and
report.html (``plots``, ``html``) are drawn from; ``files.write`` writes them all.

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
See ``compare``.

Added with the interleaved benchmark session: ``benchmark_sessions`` (id -> rounds, seconds, ``reached`` (the target
half-width, else the budget ended it), ``under_load`` and the load it saw); per model ``benchmark_session`` (its id);
per benchmark row ``session``, ``rounds``, ``round_p50_ms``, ``round_mean_ms``, ``others_cores`` and, against the
baseline, ``speedup_vs_baseline`` (now the median of the per-round ratios), ``speedup_ci``, ``speedup_resolved``
(the interval excludes 1), ``speedup_rounds``, ``speedup_reference``, ``speedup_unstable`` (wider than the
target), ``round_blocks`` (rounds per session process); ``vs_torch_eager`` (the PyTorch baseline on PyTorch eager
over this cell: value, ci, resolved). The comparisons' ratios carry ``ci`` and ``resolved`` too.

Added with training on devices: each model's ``training`` (``device``, ``processes``, ``backend``, ``precision``,
``preload``, ``augment``, ``epochs``, ``train_s``, ``wall_s``, ``samples_per_s``; null when it was not trained here).
"""

from __future__ import annotations

import datetime as dt

from compression_pipeline.artifacts import Handle
from compression_pipeline.recipe import Recipe
from compression_pipeline.report import compare
from compression_pipeline.report.cells import BENCH_FIELDS, precision


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
            "benchmarks": [{k: r[k] for k in (*BENCH_FIELDS, "speedup_vs_baseline") if k in r}
                           for r in bench.info["results"]],
            "benchmark_session": (bench.info.get("session") or {}).get("id"),
            "benchmarks_skipped": bench.info.get("skipped", []),
            "benchmark_artifact": bench.artifact.path if bench.artifact else None,
            "macs": i.get("macs"), "compress_s": i.get("compress_s"), "seed": i.get("seed"), "note": i.get("note"),
            "ablation": _ablation(i.get("ablation")),
            # how the model was trained here (device, processes, backend, precision, preload, augmentation,
            # epochs, wall time, samples/s); None for a model that was not trained (quantized, pruned without
            # fine-tuning, taken as given)
            "training": i.get("training"),
        }
        entries.append(entry)
    add_ratios(entries)
    env = models[0][1].info["environment"] if models else {}
    sessions = {b.info["session"]["id"]: b.info["session"] for _, b in models if b.info.get("session")}
    return {"family": recipe.name, "recipe": _project_relative(recipe.source_path),
            "generated_at": dt.datetime.now(dt.UTC).isoformat(),
            "environment": env, "benchmark_sessions": sessions, "gates": recipe.gates.model_dump(),
            "dataset": _dataset(recipe, models),
            "select": recipe.select.model_dump(mode="json"), "models": entries, "rejected": list(rejected),
            # One network built in every framework, or each framework its own baseline (a list in the recipe).
            "same_architecture": not isinstance(recipe.baseline, list),
            "framework_comparison": compare.framework_comparison(entries),
            "runtime_comparison": compare.runtime_comparison(entries)}


def _project_relative(path: str | None) -> str | None:
    """A recipe inside the project as a path relative to it: report.json files are shared and committed
    (benchmarks/), and name no machine's folders."""
    from pathlib import Path

    from compression_pipeline.settings import PROJECT_ROOT

    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return path


def _format(deployable: Handle) -> str:
    """The deployable's format: the handle's own word, else its artifact's, else ONNX (older handles)."""
    fmt = deployable.info.get("format") or (deployable.artifact.format if deployable.artifact else None)
    return fmt or "onnx"


def _ablation(ablation: dict | None) -> dict | None:
    """The distillation ablation without its per-epoch history."""
    return None if ablation is None else {k: v for k, v in ablation.items() if not k.endswith("history")}


def add_ratios(entries: list[dict]) -> None:
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
            # The session's speedup (the median of per-round ratios, with its interval) stands; a row without
            # rounds (an older benchmark handle) gets the ratio of p50s, with no interval.
            if key in ref and "speedup_ci" not in r:
                r["speedup_vs_baseline"] = ref[key] / r["p50_ms"]


def _dataset(recipe: Recipe, models) -> dict:
    """The recipe's dataset block, with what the data turned out to be: the class names and the input
    specification the models were built and fed with (``input_spec``: shape, scale, normalization)."""
    out = recipe.dataset.model_dump(mode="json")
    spec = next((d.info["input_spec"] for d, _ in models if d.info.get("input_spec")), None)
    if spec:
        out.update(input_spec=spec, class_names=list(spec["class_names"]))
    return out
