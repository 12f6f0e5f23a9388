"""The model card of a deployment candidate (Markdown): data, parent chain, config, accuracy, latency,
environment, and why every other model was not chosen."""

from __future__ import annotations

import json

from compression_pipeline.report.cells import cell, cell_label, model_key, ratio_text, speedup_text
from compression_pipeline.report.md import session_lines
from compression_pipeline.report.select import Decision


def _interval(m: dict) -> str:
    ci = m.get("accuracy_drop_ci")
    if not ci:
        return ""
    conf = 100 * (m.get("accuracy_drop_confidence") or 0.95)
    return (f", {conf:.0f}% CI {100 * ci[0]:+.2f} .. {100 * ci[1]:+.2f} points from the paired predictions "
            f"({m.get('images_worse')} images worse, {m.get('images_better')} better than the baseline)")


def _input(ds: dict) -> list[str]:
    """What the model takes, from the input specification the report records (older reports: the recipe's)."""
    spec = ds.get("input_spec")
    if not spec:
        return [(f"- image shape {ds.get('image_shape')}, classes {ds.get('classes')}, pixels scaled by "
                f"1/{ds.get('value_max')}")]
    shape = "x".join(str(d) for d in spec["shape"])
    what = "images (channels x height x width)" if spec["kind"] == "image" else "feature vectors"
    norm = ("no normalization" if spec.get("mean") is None else
            f"then (x - mean) / std per {'channel' if spec['kind'] == 'image' else 'feature'}, mean "
            f"{[round(v, 4) for v in spec['mean']]}, std {[round(v, 4) for v in spec['std']]}")
    return [f"- input: {shape} {what}, raw values x {spec['scale']:.6g}, {norm}",
            f"- classes ({len(spec['class_names'])}): {', '.join(spec['class_names'])}"]


def _eager(r: dict) -> str:
    """This cell against the PyTorch baseline on PyTorch eager (what a PyTorch user starts from)."""
    x = r.get("vs_torch_eager")
    return ratio_text(x["value"], x.get("ci")) if x else "-"


def render(report: dict, decision: Decision, data: dict, artifact: dict) -> str:
    """``data``: facts about the splits (rows per split, sha256); ``artifact``: the copied deployable's handle."""
    models = {model_key(m): m for m in report["models"]}
    m = models[decision.chosen]
    by_name = {(x["framework"], x["name"]): x for x in report["models"]}
    ds = report.get("dataset") or {}
    lines = [f"# Model card: {report['family']} / {decision.chosen}", "",
             f"Selected by the recipe's `select` rule: {decision.rule}."
             + (f" Speed was compared {decision.speed}." if decision.speed else "")
             + (f" Tied with it on speed, within the interval: {', '.join(decision.tied)}; accuracy, then file size, "
                "decided." if decision.tied else ""), "",
             "## Artifact", "",
             f"- file: `{artifact['path']}` ({artifact['bytes']:,} bytes, {artifact.get('format', 'onnx')})",
             f"- sha256: `{artifact['sha256']}`",
             f"- copied from: `{m['artifact']}`", "",
             "## Data", "",
             f"- source: {ds.get('source', '?')}" + (f" (`{ds['path']}`)" if ds.get("path") else ""),
             *_input(ds),
             f"- split: {ds.get('split')} (stratified, seed {ds.get('seed')}); rows: {data.get('rows')}",
             f"- splits artifact sha256: `{data.get('sha256', '?')}`", "",
             "## Lineage (parent chain)", "",
             "| step | method | accuracy | params | file bytes |", "|---|---|---|---|---|"]
    for name in m.get("chain", [m["name"]]):
        x = by_name.get((m["framework"], name))
        if x:
            lines.append(f"| {name} | {x['method'] or '-'} | {x['accuracy']:.4f} | {x['params']:,} | "
                         f"{x['file_bytes']:,} |")
        else:
            lines.append(f"| {name} | (not in this report) | | | |")
    tol = m.get("tolerance")
    lines += ["", "## Config", "", "```json", json.dumps({"method": m["method"], "parent": m["parent"],
                                                            "config": m.get("config", {}), "tolerance": tol},
                                                           indent=1, sort_keys=True), "```", "",
              "## Accuracy", "",
              f"- test accuracy {m['accuracy']:.4f} measured with {m['accuracy_runtime']} on this artifact"
              + (f" ({m['test_samples']} test images)" if m.get("test_samples") else "") + "; "
              f"baseline {m['baseline_accuracy']:.4f}; drop {100 * m['accuracy_drop']:+.2f} points "
              f"({100 * m['accuracy_drop_relative']:+.2f} % relative)" + _interval(m)]
    lines += [f"- gate `{g['name']}`: {'passed' if g['passed'] else 'FAILED'}: {g['description']}"
              for g in m.get("gates", [])]
    lines += ["", "## Latency", "", ("| cell | provider | p50 ms | p90 ms | p95 ms | p99 ms | mean ms | std ms | "
              "samples/s | speedup vs baseline [95% CI] | vs PyTorch eager baseline |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")  # a row from an older harness may lack a statistic
    for r in m["benchmarks"]:
        lines.append(f"| {cell_label(cell(r))} | {r['provider']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
                     f"{r.get('p95_ms', nan):.3f} | {r['p99_ms']:.3f} | {r.get('mean_ms', nan):.3f} | "
                     f"{r.get('std_ms', nan):.3f} | {r['throughput']:,.0f} | "
                     f"{speedup_text(r)} | {_eager(r)} |")
    own = {k: v for k, v in (report.get("benchmark_sessions") or {}).items() if k == m.get("benchmark_session")}
    lines += ["", *session_lines({**report, "models": [m], "benchmark_sessions": own}),
              ("Speedups are the medians of per-round ratios of cells timed together in interleaved rounds; ~ marks "
               "an interval that includes 1 (no difference resolved).")]
    for s in m.get("benchmarks_skipped", []):
        lines.append(f"\nNot measured: {s['runtime']} {s['precision']}: {s['reason']}")
    env = report.get("environment") or {}
    cpu, gpu = env.get("cpu") or {}, env.get("gpu")
    lines += ["", "## Environment", "",
              f"- CPU: {cpu.get('model', '?')} ({cpu.get('cores', '?')} cores; ISA {', '.join(cpu.get('isa', []))})",
              f"- GPU: {gpu['name'] + ', driver ' + str(gpu.get('driver')) if gpu else 'none'}",
              f"- threads: {env.get('threads')}",
              f"- libraries: {', '.join(f'{k} {v}' for k, v in sorted((env.get('libraries') or {}).items()))}", "",
              "## Other models and why they were not chosen", "", "| model | reason |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in decision.reasons.items()]
    return "\n".join(lines) + "\n"
