"""The framework and runtime comparisons of a family report: report.json's ``framework_comparison`` and
``runtime_comparison``, and report.md's sections of the same names.

- Framework comparison: every model name built in more than one framework (``baseline`` in PyTorch and in
  TensorFlow, say), one row per model entry (framework, deployable format) with its accuracy, drop against its
  own framework's baseline, size and p50 per benchmark cell; plus TensorFlow's ONNX Runtime p50 divided by
  PyTorch's: the same runtime running two exporters' graphs (tf2onnx vs torch.onnx) of the same architecture.
- Runtime comparison: every model's p50 on each runtime divided by its own ONNX Runtime p50 at the same batch
  size and precision (above 1: slower than ONNX Runtime), i.e. how the same model runs across runtimes.

Numbers are copied from the benchmark rows; nothing is re-measured here.
"""

from __future__ import annotations

from compression_pipeline.report.cells import cell, cell_label, precision, ratio_text, round_ratio

FRAMEWORK_ORDER = ("torch", "tensorflow")
NATIVE = "own framework"  # report.md's column label for a model's own framework runtime
RATIO_FIELD = "onnxruntime_p50_ratio_tensorflow_over_torch"


def _framework_key(fw: str) -> tuple[int, str]:
    return (FRAMEWORK_ORDER.index(fw) if fw in FRAMEWORK_ORDER else len(FRAMEWORK_ORDER), fw)


def _cell_key(c: tuple[str, str, int]) -> tuple:
    """Runtime, then fp32 before other precisions, then batch size."""
    rt, prec, bs = c
    return rt, prec != "fp32", prec, bs


def _p50_cells(m: dict) -> list[dict]:
    rows = sorted(m["benchmarks"], key=lambda r: _cell_key(cell(r)))
    return [{"runtime": r["runtime"], "precision": precision(r), "batch_size": r["batch_size"], "p50_ms": r["p50_ms"]}
            for r in rows]


def _ort_rows(models: list[dict], framework: str) -> dict[tuple[str, int], dict]:
    return {(precision(r), r["batch_size"]): r for m in models if m["framework"] == framework
            for r in m["benchmarks"] if r["runtime"] == "onnxruntime"}


def _interval(reference: dict, row: dict) -> dict:
    """``ci`` and ``resolved`` of reference p50 / row p50 from their shared rounds (nulls when they share none)."""
    r = round_ratio(reference, row)
    return {"ci": [r.ci_low, r.ci_high], "resolved": r.resolved, "rounds": r.rounds} if r else \
        {"ci": None, "resolved": None, "rounds": None}


def framework_comparison(models: list[dict]) -> list[dict]:
    """One entry per model name that exists in more than one framework (see the module docstring)."""
    by_name: dict[str, list[dict]] = {}
    for m in models:
        by_name.setdefault(m["name"], []).append(m)
    out = []
    for name, group in by_name.items():
        if len({m["framework"] for m in group}) < 2:
            continue
        group = sorted(group, key=lambda m: (_framework_key(m["framework"]), m.get("format", "onnx")))
        rows = [{"framework": m["framework"], "format": m.get("format", "onnx"), "accuracy": m["accuracy"],
                 "accuracy_runtime": m.get("accuracy_runtime"), "accuracy_drop": m["accuracy_drop"],
                 "params": m["params"], "file_bytes": m["file_bytes"], "p50_ms": _p50_cells(m)} for m in group]
        tf, pt = _ort_rows(group, "tensorflow"), _ort_rows(group, "torch")
        ratios = []
        for k in sorted(tf.keys() & pt.keys(), key=lambda k: (k[0] != "fp32", k[0], k[1])):
            # TensorFlow's p50 over PyTorch's: the per-round ratio's median and interval where both were timed in
            # one session, else the ratio of the two p50s
            shared = round_ratio(tf[k], pt[k])
            ratios.append({"precision": k[0], "batch_size": k[1], "torch_p50_ms": pt[k]["p50_ms"],
                           "tensorflow_p50_ms": tf[k]["p50_ms"],
                           "ratio": shared.value if shared else tf[k]["p50_ms"] / pt[k]["p50_ms"],
                           **_interval(tf[k], pt[k])})
        out.append({"name": name, "frameworks": sorted({m["framework"] for m in group}, key=_framework_key),
                    "rows": rows, RATIO_FIELD: ratios})
    return out


def runtime_comparison(models: list[dict]) -> list[dict]:
    """Each benchmarked model's p50 per cell and its ratio to the same model's ONNX Runtime p50 (None when that
    model has no ONNX Runtime cell at that precision and batch size, e.g. a .tflite model)."""
    out = []
    for m in models:
        if not m["benchmarks"]:
            continue
        ort = {(precision(r), r["batch_size"]): r for r in m["benchmarks"] if r["runtime"] == "onnxruntime"}
        cells = []
        for row in sorted(m["benchmarks"], key=lambda r: _cell_key(cell(r))):
            c = {"runtime": row["runtime"], "precision": precision(row), "batch_size": row["batch_size"],
                 "p50_ms": row["p50_ms"]}
            ref = ort.get((c["precision"], c["batch_size"]))
            shared = round_ratio(row, ref) if ref is not None else None
            ratio = None if ref is None else shared.value if shared else c["p50_ms"] / ref["p50_ms"]
            cells.append({**c, "onnxruntime_p50_ms": None if ref is None else ref["p50_ms"], "vs_onnxruntime": ratio,
                          "vs_onnxruntime_ci": [shared.ci_low, shared.ci_high] if shared else None})
        out.append({"name": m["name"], "framework": m["framework"], "format": m.get("format", "onnx"), "cells": cells})
    return out


# --- report.md --------------------------------------------------------------------------------------------------
def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def framework_table(report: dict) -> list[str]:
    """The framework comparison as markdown table lines (empty when no model is in two frameworks)."""
    comp = report.get("framework_comparison") or []
    if not comp:
        return []
    # A model's own framework runtime (torch eager, TensorFlow's tf.function) shares one column per batch size,
    # so the two frameworks' rows line up instead of each filling columns the other leaves empty.
    def col(rt: str, fw: str) -> str:
        return NATIVE if rt == fw else rt

    cells = sorted({(col(c["runtime"], r["framework"]), c["precision"], c["batch_size"]) for v in comp
                    for r in v["rows"] for c in r["p50_ms"]}, key=_cell_key)
    ratio_keys = sorted({(x["precision"], x["batch_size"]) for v in comp for x in v[RATIO_FIELD]},
                        key=lambda k: (k[0] != "fp32", k[0], k[1]))
    head = ["model", "framework", "format", "accuracy", "drop (pp)", "params", "file KB"] + \
        [f"{cell_label(c)} p50 ms" for c in cells] + \
        [f"{cell_label(('onnxruntime', p, bs))} TF/PyTorch" for p, bs in ratio_keys]
    rows = []
    for v in comp:
        ratio = {(x["precision"], x["batch_size"]): ratio_text(x["ratio"], x.get("ci")) for x in v[RATIO_FIELD]}
        for r in v["rows"]:
            p50 = {(col(c["runtime"], r["framework"]), c["precision"], c["batch_size"]): c["p50_ms"]
                   for c in r["p50_ms"]}
            rows.append([v["name"], r["framework"], r["format"], f"{r['accuracy']:.4f}",
                         f"{100 * r['accuracy_drop']:+.2f}", f"{r['params']:,}", f"{r['file_bytes'] / 1024:.0f}"]
                        + [f"{p50[c]:.3f}" if c in p50 else "-" for c in cells]
                        + [ratio[k] if k in ratio and r["framework"] == "tensorflow" else "-"
                           for k in ratio_keys])
    return _table(head, rows)


def runtime_table(report: dict) -> list[str]:
    """The runtime comparison as markdown table lines (empty when only one runtime was measured)."""
    comp = report.get("runtime_comparison") or []
    cells = sorted({(c["runtime"], c["precision"], c["batch_size"]) for m in comp for c in m["cells"]},
                   key=_cell_key)
    if len({c[0] for c in cells}) < 2:
        return []
    head = ["model", "framework", "format"] + [f"{cell_label(c)} p50 ms" + ("" if c[0] == "onnxruntime" else
                                                                             " (x ORT)") for c in cells]
    rows = []
    for m in comp:
        got = {(c["runtime"], c["precision"], c["batch_size"]): c for c in m["cells"]}
        row = [m["name"], m["framework"], m["format"]]
        for c in cells:
            x = got.get(c)
            if x is None:
                row.append("-")
            elif c[0] == "onnxruntime" or x["vs_onnxruntime"] is None:
                row.append(f"{x['p50_ms']:.3f}")
            else:
                row.append(f"{x['p50_ms']:.3f} ({ratio_text(x['vs_onnxruntime'], x.get('vs_onnxruntime_ci'))})")
        rows.append(row)
    return _table(head, rows)


FRAMEWORK_NOTE = ("Each model built in more than one framework, side by side (the same architecture, layers and "
                  "parameter count, trained on the same splits). Drop is against the same framework's baseline. "
                  "\"own framework\" is PyTorch eager for torch rows and the compiled tf.function for tensorflow rows. "
                  "TF/PyTorch divides TensorFlow's p50 by PyTorch's on ONNX Runtime: the same runtime running two "
                  "exporters' graphs (tf2onnx and torch.onnx), so a ratio away from 1 is the exported graph's doing; "
                  "with its interval from the rounds in which both were timed, and ~ where it includes 1.")
OWN_BASELINES_NOTE = ("Each framework has its own baseline network here (the recipe lists one baseline per framework), "
                      "so a row compares what the pipeline did to that framework's network: drop is against the same "
                      "framework's baseline, and TF/PyTorch divides two different networks' ONNX Runtime p50s (not a "
                      "comparison of the frameworks). \"own framework\" is PyTorch eager for torch rows and the "
                      "compiled tf.function for tensorflow rows.")


def framework_note(report: dict) -> str:
    return FRAMEWORK_NOTE if report.get("same_architecture", True) else OWN_BASELINES_NOTE


RUNTIME_NOTE = ("Each model on every runtime that ran it: p50 and, in parentheses, that p50 divided by the same "
                "model's ONNX Runtime p50 at the same batch size and precision (above 1: slower than ONNX Runtime). "
                "torch runs the PyTorch module eagerly, tensorflow the Keras model as a compiled tf.function, tflite "
                "the .tflite file in the LiteRT interpreter, onnxruntime the ONNX file.")


def markdown_sections(report: dict) -> list[str]:
    """report.md's "Framework comparison" and "Runtimes" sections (each only when it has something to show)."""
    lines = []
    fw = framework_table(report)
    if fw:
        lines += ["", "## Framework comparison", "", framework_note(report), "", *fw]
    rt = runtime_table(report)
    if rt:
        lines += ["", "## Runtimes", "", RUNTIME_NOTE, "", *rt]
    return lines
