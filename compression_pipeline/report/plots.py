"""The plots of report.html, as PNG bytes (``html`` embeds them, ``files`` writes them next to it):

- ``accuracy_latency``: accuracy vs p50 latency, one panel per runtime (and precision) at one batch size,
  with the Pareto front (no other model is both faster and at least as accurate) marked;
- ``sizes``: deployable file size and gzip size per model;
- ``speedup``: speedup vs the fp32 baseline on the same runtime, one panel per runtime, one bar per batch size,
  with the speedup's interval as an error bar;
- ``frameworks`` (only when the baseline is built in more than one framework): the baseline's p50 on each
  runtime, one bar per framework, one panel per batch size.

matplotlib is used through ``Figure`` objects with the Agg canvas: no pyplot, no global backend, no display.
"""

from __future__ import annotations

import io

from compression_pipeline.report.cells import cell, cell_label, model_key
from compression_pipeline.report.compare import NATIVE

PLOTS = ("accuracy_latency", "sizes", "speedup")  # always drawn; "frameworks" too when there is a comparison
FRONT, OTHER, BASE = "#d62728", "#7f7f7f", "#1f77b4"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points on the Pareto front when a lower x (latency) and a higher y (accuracy) are better.

    A point is on the front when no other point is at least as good on both axes and strictly better on one.
    Returned in order of increasing latency, so they can be joined by a line.
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_batch(report: dict) -> int:
    """The batch size of the accuracy/latency plot: the selection's, if measured, else the smallest measured."""
    sizes = sorted({r["batch_size"] for m in report["models"] for r in m["benchmarks"]})
    wanted = (report.get("select") or {}).get("batch_size")
    return wanted if wanted in sizes else (sizes[0] if sizes else 1)


def _grid(fig, n: int, cols: int = 2) -> list:
    """``n`` panels (at least one), ``cols`` to a row: with two frameworks there are four runtimes, and one row of
    four is too wide to read."""
    cols = max(1, min(cols, n))
    rows = -(-max(n, 1) // cols)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[max(n, 1):]:
        ax.set_visible(False)
    return axes


def accuracy_latency(report: dict) -> bytes:
    from matplotlib.ticker import MaxNLocator

    bs = plot_batch(report)
    panels = sorted({(rt, prec) for m in report["models"] for (rt, prec, b) in map(cell, m["benchmarks"]) if b == bs},
                    key=lambda p: (p[0], p[1] != "fp32", p[1]))  # fp32 first, then other precisions
    cols = min(2, max(len(panels), 1))
    fig = _figure(6.5 * cols, 4.8 * -(-max(len(panels), 1) // cols))
    axes = _grid(fig, len(panels))
    for ax, (rt, prec) in zip(axes, panels):
        pts, names = [], []
        for m in report["models"]:
            row = next((r for r in m["benchmarks"] if cell(r) == (rt, prec, bs)), None)
            if row is not None:
                pts.append((row["p50_ms"], m["accuracy"]))
                names.append(model_key(m))
        front = pareto_front(pts)
        labelled = set()
        for i, ((x, y), name) in enumerate(zip(pts, names)):
            on = i in front
            label = "Pareto front" if on else "dominated"
            ax.scatter([x], [y], s=70 if on else 40, color=FRONT if on else OTHER, zorder=3,
                       edgecolors="black" if name.endswith("_baseline") else "none",
                       label=None if label in labelled else label)
            labelled.add(label)
            if on or name.endswith("_baseline") or len(pts) <= 12:  # a crowded panel names the front and baselines
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color=FRONT, lw=1.2, ls="--",
                    drawstyle="steps-post", zorder=2)
        ax.set_title(cell_label((rt, prec, bs)))
        ax.set_xlabel("p50 latency (ms, lower is better)")
        ax.set_ylabel("test accuracy")
        xs = [p[0] for p in pts]
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.margins(0.2)  # room for the labels of points at the edges
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if not panels:
        axes[0].text(0.5, 0.5, "no benchmark results", ha="center", va="center")
    fig.suptitle(f"{report['family']}: accuracy vs latency at batch {bs}")
    return _png(fig)


def sizes(report: dict) -> bytes:
    models = report["models"]
    names = [model_key(m) for m in models]
    fig = _figure(7.5, 0.45 * len(models) + 1.6)
    ax = fig.subplots()
    ys = range(len(models))
    ax.barh([y + 0.2 for y in ys], [m["file_bytes"] / 1024 for m in models], height=0.4, color=BASE, label="file")
    ax.barh([y - 0.2 for y in ys], [m["gzip_bytes"] / 1024 for m in models], height=0.4, color="#ff7f0e",
            label="gzip -9")
    for y, m in zip(ys, models):
        ratio = m.get("size_ratio")
        text = f"{m['file_bytes'] / 1024:,.0f} KB" + (f" ({ratio:.2f}x of baseline)" if ratio is not None else "")
        ax.text(m["file_bytes"] / 1024, y + 0.2, " " + text, va="center", fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("KB")
    ax.set_xlim(0, max([m["file_bytes"] for m in models] or [1]) / 1024 * 1.45)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{report['family']}: deployable size per model")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def speedup(report: dict) -> bytes:
    models = report["models"]
    runtimes = sorted({r["runtime"] for m in models for r in m["benchmarks"]})
    per_panel = max([sum(any(r["runtime"] == rt for r in m["benchmarks"]) for m in models) for rt in runtimes] or [1])
    cols = min(2, max(len(runtimes), 1))
    fig = _figure(max(6.0, 0.55 * per_panel + 2) * cols, 4.8 * -(-max(len(runtimes), 1) // cols))
    axes = _grid(fig, len(runtimes))
    for ax, rt in zip(axes, runtimes):
        series = sorted({(prec, bs) for m in models for (r, prec, bs) in map(cell, m["benchmarks"]) if r == rt},
                        key=lambda s: (s[0] != "fp32", s[0], s[1]))
        crowded = len(series) * len(models) > 10
        names = [model_key(m) for m in models if any(r["runtime"] == rt for r in m["benchmarks"])]
        width = 0.8 / max(len(series), 1)
        for k, (prec, bs) in enumerate(series):
            xs, hs, err = [], [], [[], []]
            for i, m in enumerate(m for m in models if model_key(m) in names):
                row = next((r for r in m["benchmarks"] if cell(r) == (rt, prec, bs)), None)
                if row is not None and "speedup_vs_baseline" in row:
                    xs.append(i - 0.4 + width * (k + 0.5))
                    hs.append(row["speedup_vs_baseline"])
                    lo, hi = row.get("speedup_ci") or (hs[-1], hs[-1])  # the interval, where the session gave one
                    err[0].append(max(hs[-1] - lo, 0.0))
                    err[1].append(max(hi - hs[-1], 0.0))
            bars = ax.bar(xs, hs, width=width, label=f"batch {bs}" + ("" if prec == "fp32" else f" {prec}"),
                          yerr=err if xs else None, error_kw={"elinewidth": 0.8, "capsize": 2})
            ax.bar_label(bars, fmt="%.2fx", fontsize=6 if crowded else 7, rotation=90 if crowded else 0,
                         padding=2)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, max(len(names), 2) - 0.4)  # a lone model gets a bar, not a wall
        ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the labels above the bars
        ax.set_ylabel("speedup vs fp32 baseline (95% CI)")
        ax.set_title(rt)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    if not runtimes:
        axes[0].text(0.5, 0.5, "no benchmark results", ha="center", va="center")
    fig.suptitle(f"{report['family']}: speedup vs the baseline on the same runtime")
    return _png(fig)


def _compared_baselines(report: dict) -> list[dict]:
    """The baseline's rows of the framework comparison (one per framework and format), or none."""
    return next((v["rows"] for v in report.get("framework_comparison") or [] if v["name"] == "baseline"), [])


def frameworks(report: dict) -> bytes:
    """p50 of the baseline per runtime, one bar per framework (and format), one panel per batch size."""
    rows = _compared_baselines(report)
    # Each framework's own runtime shares one group (as in report.md's table), so the bars stand side by side.
    rows = [{**r, "p50_ms": [{**c, "runtime": NATIVE if c["runtime"] == r["framework"] else c["runtime"]}
                             for c in r["p50_ms"]]} for r in rows]
    labels = [r["framework"] + ("" if r["format"] == "onnx" else f" ({r['format']})") for r in rows]
    batches = sorted({c["batch_size"] for r in rows for c in r["p50_ms"]})
    fig = _figure(max(4.0, 3.2 * len(batches) + 1.5), 4.0)
    axes = fig.subplots(1, max(len(batches), 1), squeeze=False)[0]
    for ax, bs in zip(axes, batches):
        groups = sorted({(c["runtime"], c["precision"]) for r in rows for c in r["p50_ms"]
                         if c["batch_size"] == bs}, key=lambda g: (g[0], g[1] != "fp32", g[1]))
        width = 0.8 / max(len(rows), 1)
        for k, (r, label) in enumerate(zip(rows, labels)):
            p50 = {(c["runtime"], c["precision"]): c["p50_ms"] for c in r["p50_ms"] if c["batch_size"] == bs}
            xs = [i - 0.4 + width * (k + 0.5) for i, g in enumerate(groups) if g in p50]
            bars = ax.bar(xs, [p50[g] for g in groups if g in p50], width=width, label=label)
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        names = [(f"{rt}\n(eager / tf.function)" if rt == NATIVE else rt) + ("" if prec == "fp32" else f" {prec}")
                 for rt, prec in groups]
        ax.set_xticks(range(len(groups)), names, fontsize=8)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the labels above the bars
        ax.set_ylabel("p50 latency (ms, lower is better)")
        ax.set_title(f"batch {bs}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['family']}: the baseline per framework on each runtime")
    return _png(fig)


def render(report: dict) -> dict[str, bytes]:
    """The PNG bytes of every plot, by name (``frameworks`` only when the baseline exists in two frameworks)."""
    images = {"accuracy_latency": accuracy_latency(report), "sizes": sizes(report), "speedup": speedup(report)}
    if _compared_baselines(report):
        images["frameworks"] = frameworks(report)
    return images
