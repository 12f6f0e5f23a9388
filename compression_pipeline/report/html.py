"""report.html: one self-contained page (the plots of ``plots`` embedded as base64 PNGs, so it can be mailed or
attached) with report.md's summary table (``md``), the framework and runtime comparisons (``compare``) as tables,
and every benchmark cell with its full statistics."""

from __future__ import annotations

import base64
import json
from html import escape

from compression_pipeline.report import compare
from compression_pipeline.report.cells import cell, cell_label, model_key, speedup_text
from compression_pipeline.report.md import markdown


def _comparison_html(report: dict, img: dict[str, str]) -> list[str]:
    """The "Framework comparison" and "Runtimes" sections: report.md's tables, plus the baseline plot."""
    parts = []
    fw = compare.framework_table(report)
    if fw:
        parts += ["<h2>Framework comparison</h2>",
                  f"<p class='note'>{escape(compare.framework_note(report))}</p>", _md_lines_html(fw),
                  img.get("frameworks", "")]
    rt = compare.runtime_table(report)
    if rt:
        parts += ["<h2>Runtimes</h2>", f"<p class='note'>{escape(compare.RUNTIME_NOTE)}</p>",
                  _md_lines_html(rt)]
    return parts


STAT_FIELDS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms")


def _table(report: dict) -> str:
    """The models with their full statistics per benchmark cell."""
    head = ["model", "cell", "provider", "p50", "p90", "p95", "p99", "mean", "std", "runs", "samples/s", "load s",
            "first call", "peak host MB", "peak device MB", "speedup [95% CI]", "rounds"]
    rows = []
    for m in report["models"]:
        for r in m["benchmarks"]:
            dev = r.get("peak_device_mb")
            vals = [model_key(m), cell_label(cell(r)), r["provider"]] + \
                [f"{r[k]:.3f}" if k in r else "-" for k in STAT_FIELDS] + \
                [str(r.get("runs", "-")), f"{r['throughput']:,.0f}", f"{r.get('load_s', 0):.3f}",
                 f"{r['first_call_ms']:.2f} ms" if "first_call_ms" in r else "-",
                 f"{r['peak_host_mb']:.0f}" if "peak_host_mb" in r else "-", "-" if dev is None else f"{dev:.1f}",
                 speedup_text(r) if "speedup_vs_baseline" in r else "-", str(r.get("rounds", "-"))]
            rows.append("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in vals) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _md_table_html(report: dict) -> str:
    """The summary table of report.md (its first table) as an HTML table (same numbers, one row per model)."""
    lines = []
    for ln in markdown(report).splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:  # the first table ended; the comparison tables below it have sections of their own
            break
    return _md_lines_html(lines)


def _md_lines_html(lines: list[str]) -> str:
    """Markdown table lines (head, rule, rows) as an HTML table."""
    if len(lines) < 2:
        return ""
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head, body = cells[0], cells[2:]
    return ("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in body)
            + "</tbody></table>")


CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}\n"
       "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
       "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}\n"
       "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
       "img{max-width:100%;border:1px solid #eee;margin:.5em 0}\n"
       ".note{color:#555;font-size:13px}")


def html_page(report: dict, images: dict[str, bytes]) -> str:
    env = report.get("environment") or {}
    cpu, gpu = env.get("cpu") or {}, env.get("gpu")
    skipped = sorted({f"{s['runtime']} {s['precision']}: {s['reason']}" for m in report["models"]
                      for s in m.get("benchmarks_skipped", []) if s.get("applicable", True)})
    img = {k: f'<img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">' for k, v in images.items()}
    parts = [
        ("<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(report['family'])}: compression report</title>"
        f"<style>{CSS}</style></head><body>"),
        f"<h1>{escape(report['family'])}: compression report</h1>",
        (f"<p class='note'>Generated {escape(str(report.get('generated_at', '')))} "
        f"from {escape(str(report.get('recipe', '')))}. "
        "Accuracy is measured on the deployed artifact with the runtime that is benchmarked; latency is the p50 of "
        "the measured calls after warm-up; speedups are against the fp32 baseline on the same runtime and batch size: "
        "each model and its baseline timed together in interleaved rounds, the median of the per-round ratios with "
        "its 95% interval (error bars); ~ marks a speedup whose interval includes 1.</p>"),
        ("<h2>Accuracy vs latency</h2><p class='note'>Red points form the Pareto front: no other model is both "
        "faster and at least as accurate. The outlined point is the baseline.</p>"), img.get("accuracy_latency", ""),
        "<h2>Summary</h2>", _md_table_html(report),
        *_comparison_html(report, img),
        "<h2>Speedup vs baseline per runtime</h2>", img.get("speedup", ""),
        "<h2>Size per model</h2>", img.get("sizes", ""),
        ("<h2>Every benchmark cell</h2><p class='note'>Times in ms. Peak host memory is the process's peak resident "
        "set during the cell; raw samples are in each model's benchmark artifact.</p>"), _table(report),
    ]
    if skipped:
        parts.append("<h3>Not measured here</h3><ul>" + "".join(f"<li>{escape(s)}</li>" for s in skipped) + "</ul>")
    parts.append(f"<h2>Environment</h2><p>{escape(cpu.get('model', '?'))}, {cpu.get('cores', '?')} cores, ISA: "
                 f"{escape(', '.join(cpu.get('isa', [])) or 'baseline')}; threads {env.get('threads')}; load average "
                 f"{env.get('load_average_1m', '?')} while measuring; GPU: "
                 f"{escape(gpu['name'] + ' (driver ' + gpu.get('driver', '?') + ')') if gpu else 'none'}.</p>"
                 f"<pre>{escape(_json(env.get('libraries', {})))}</pre></body></html>")
    return "\n".join(parts)


def _json(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
