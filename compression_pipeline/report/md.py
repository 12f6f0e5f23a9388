"""report.md: the family report as the table people read, with notes, the comparisons (``compare``), the
rejected candidates and the environment."""

from __future__ import annotations

from compression_pipeline.report import compare
from compression_pipeline.report.cells import cell, cell_label, speedup_text


def drop_text(m: dict) -> str:
    """'+1.67 (-0.31..+3.60)': the drop in points with its interval, when the model has one."""
    ci = m.get("accuracy_drop_ci")
    text = f"{100 * m['accuracy_drop']:+.2f}"
    return text if not ci else f"{text} ({100 * ci[0]:+.2f}..{100 * ci[1]:+.2f})"


def markdown(report: dict) -> str:
    cells = sorted({cell(r) for m in report["models"] for r in m["benchmarks"]})
    head = ["model", "framework", "method", "parent", "accuracy", "drop pp (95% CI)", "params", "file KB", "gzip KB",
            "compact KB", "gates"] + [f"{cell_label(c)} p50 ms (speedup [95% CI])" for c in cells]
    lines = [f"# {report['family']}: compression report", "",
             (f"Accuracy on the test split, measured on the deployed artifact ({_accuracy_runtimes(report)}). "
             "Drop is against the same framework's baseline. "
             f"The drop's interval is from the paired predictions on the same {_test_samples(report)} test images "
             "(Agresti-Min); one image is " f"{_one_image(report)} points. "
             "Speedup is the baseline's latency over the model's on the same runtime and batch size: every model "
             "and its baseline were timed together in interleaved rounds, and the speedup is the median of the "
             "per-round ratios with its sign-test interval; a model is faster only where the interval excludes 1 "
             "(~ marks one that does not)."), "", *session_lines(report), "",
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
            row.append("-" if r is None else f"{r['p50_ms']:.3f} ({speedup_text(r)})")
        lines.append("| " + " | ".join(row) + " |")
    several = len({m["framework"] for m in report["models"]}) > 1
    notes = [f"- **{m['name']}** ({m['framework'] + ', ' if several else ''}{m['method']}): {m['note']}"
             for m in report["models"] if m.get("note")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    skipped = sorted({f"{s['runtime']} {s['precision']}: {s['reason']}" for m in report["models"]
                      for s in m.get("benchmarks_skipped", [])
                      if s.get("applicable", True)})  # not applicable: the runtime cannot run that model at all
    if skipped:
        lines += ["", "Not measured here: " + "; ".join(skipped) + "."]
    lines += training_section(report)
    lines += compare.markdown_sections(report)
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


def session_lines(report: dict) -> list[str]:
    """How each benchmark session went: rounds, time, whether every speedup reached its target width, the load."""
    out = []
    for sid, s in (report.get("benchmark_sessions") or {}).items():
        models = sum(m.get("benchmark_session") == sid for m in report["models"])
        ended = (f"every speedup's interval within +-{100 * s['target_half_width']:.0f}%" if s["reached"] else
                 f"the {s['budget_s']:.0f} s budget ended it before every speedup's interval was within "
                 f"+-{100 * s['target_half_width']:.0f}%")
        load = s.get("others_cores_median")
        text = (f"Benchmark session {sid}: {models} models, {s['cells']} cells, {s['rounds']} rounds in "
                f"{s['seconds']:.0f} s ({ended}); other processes used "
                f"{'?' if load is None else f'{load:.2f}'} of {s['cpu_count']} cores (median round).")
        wide = [(m, r) for m in report["models"] if m.get("benchmark_session") == sid for r in m["benchmarks"]
                if r.get("speedup_unstable")]
        if wide:
            loads = [r["others_cores"] for _, r in wide if r.get("others_cores") is not None]
            text += (f" {len(wide)} speedup(s) stayed wider than +-{100 * s['target_half_width']:.0f}% (other "
                     f"processes used {sum(loads) / len(loads) if loads else 0:.2f} cores on average while their cells "
                     "ran): " + ", ".join(f"{m['framework']}_{m['name']} {cell_label(cell(r))}" for m, r in wide[:8])
                     + (" ..." if len(wide) > 8 else "") + ".")
        if s.get("under_load"):
            text += (" **Measured under sustained load**: interleaving evens out bursts, not a job that shares the "
                     "cores for the whole session; these speedups are flagged and the candidate is not chosen on "
                     "speed. Re-measure on a quiet machine.")
        out.append(text)
    return out


def _accuracy_runtimes(report: dict) -> str:
    return "/".join(sorted({m["accuracy_runtime"] for m in report["models"]}))


def _test_samples(report: dict) -> str:
    sizes = sorted({m["test_samples"] for m in report["models"] if m.get("test_samples")})
    return "/".join(map(str, sizes)) or "?"


def _one_image(report: dict) -> str:
    sizes = sorted({m["test_samples"] for m in report["models"] if m.get("test_samples")})
    return "/".join(f"{100 / n:.2f}" for n in sizes) or "?"


def training_section(report: dict) -> list[str]:
    """How each model was trained here (the ``training`` record of its handle); models trained nowhere are left out
    and named once."""
    rows = [m for m in report["models"] if m.get("training")]
    if not rows:
        return []
    head = ("| model | framework | device | processes | backend | precision | preload | augmentation | epochs | "
            "train s | samples/s |")
    lines = ["", "## Training", "", head, "|" + "---|" * 11]
    for m in rows:
        t = m["training"]
        aug = ", ".join(a["op"] for a in t.get("augment") or []) or "none"
        lines.append(f"| {m['name']} | {m['framework']} | {t.get('device')} | {t.get('processes')} | "
                     f"{t.get('backend') or '-'} | {t.get('precision')} | {'yes' if t.get('preload') else 'no'} | "
                     f"{aug} | {t.get('epochs')} | {t.get('train_s')} | {t.get('samples_per_s')} |")
    untrained = [m["name"] for m in report["models"] if not m.get("training")]
    if untrained:
        lines += ["", "Not trained here (quantized, or compressed without fine-tuning, or taken as given): "
                  + ", ".join(sorted(set(untrained))) + "."]
    return lines
