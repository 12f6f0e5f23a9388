"""Benchmarks of the pipeline itself (a script, not a test): can its numbers be trusted?

Prints, in one run:
1. the speedup of every variant vs the fp32 baseline on the same runtime and batch size, read from a family's
   report.json (``make run`` writes it) or, when there is none, measured now by the harness on a freshly trained
   baseline and its static int8 variant;
2. the agreement of the harness with a plain, independent timing loop (its own session, ``time.perf_counter``
   around ``sess.run``, same model, same batch, same threads) on the same ONNX models: the two p50s must agree
   within 15 %. They are measured in alternating rounds so a change of machine load hits both alike.

    python scripts/bench_pipeline.py                      # the default family's report under $DAGSTER_HOME
    python scripts/bench_pipeline.py --report path/to/report.json
Exit status 1 when an agreement is outside the tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from compression_pipeline import benchmark as B
from compression_pipeline.report import cell, cell_label

TOLERANCE = 0.15


def print_speedups(models: list[dict]) -> None:
    cells = sorted({cell(r) for m in models for r in m["benchmarks"]}, key=lambda c: (c[0], c[1] != "fp32", c[2]))
    print("Speedup vs the fp32 baseline on the same runtime and batch size (baseline p50 / model p50):")
    print(f"  {'model':<24}" + "".join(f"{cell_label(c):>22}" for c in cells))
    for m in models:
        rows = {cell(r): r for r in m["benchmarks"]}
        out = []
        for c in cells:
            r = rows.get(c)
            out.append("-" if r is None
                       else f"{r.get('speedup_vs_baseline', float('nan')):.2f}x ({r['p50_ms']:.3f} ms)")
        print(f"  {m['framework'] + '_' + m['name']:<24}" + "".join(f"{v:>22}" for v in out))


def plain_p50(path: Path, in_shape, batch_size: int, threads: int, warmup: int, runs: int) -> float:
    """The independent loop: nothing from the harness but the input's seed and shape."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch_size, *in_shape), dtype=np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def agreement(models: list[tuple[str, Path, str]], spec, batch_sizes, threads: int, protocol: B.Protocol,
              rounds: int) -> bool:
    """``models``: (label, ONNX file, framework it was exported from: its layout)."""
    from compression_pipeline.runtimes import onnxruntime as ort_runtime

    print(f"\nHarness vs a plain perf_counter loop around sess.run (CPU provider, {threads} threads, p50 ms; "
          f"{rounds} alternating rounds, tolerance {TOLERANCE:.0%}):")
    print(f"  {'model':<24}{'batch':>6}{'harness':>11}{'plain':>11}{'ratio':>8}   per-round ratios")
    ok = True
    for label, path, framework in models:
        layout = spec.default_layout(framework)  # NCHW for PyTorch exports, NHWC for Keras ones
        shape = spec.sample_shape(layout)
        for bs in batch_sizes:
            h, p = [], []
            for _ in range(rounds):
                row = B.run([ort_runtime.open(path, spec, layout, "cpu", threads)], [bs], protocol, fp16=False)[0][0]
                h.append(row["p50_ms"])
                p.append(plain_p50(path, shape, bs, threads, protocol.warmup_runs, row["runs"]))
            ratio = statistics.median(h) / statistics.median(p)
            good = abs(ratio - 1) <= TOLERANCE
            ok &= good
            print(f"  {label:<24}{bs:>6}{statistics.median(h):>11.4f}{statistics.median(p):>11.4f}{ratio:>8.3f}   "
                  + " ".join(f"{a / b:.3f}" for a, b in zip(h, p)) + ("" if good else "   OUTSIDE TOLERANCE"))
    return ok


def from_report(path: Path, names: list[str] | None):
    from compression_pipeline.types import InputSpec

    rep = json.loads(path.read_text())
    root = path.resolve().parents[2]  # <artifact root>/<family>/report/report.json
    models = rep["models"]
    names = names or ["baseline", "int8"]
    onnx = [(f"{m['framework']}_{m['name']}", root / m["artifact"], m["framework"]) for m in models
            if m["name"] in names]
    first = models[0]
    spec = InputSpec.model_validate(rep["dataset"]["input_spec"])
    return (models, onnx or [(f"{first['framework']}_{first['name']}", root / first["artifact"],
                              first["framework"])], spec)


def fresh(recipe, workdir: Path, epochs: int, threads: int, protocol: B.Protocol):
    """No report: train the recipe's (zoo) baseline briefly in PyTorch, export it, quantize it, bench both now."""
    from compression_pipeline import data
    from compression_pipeline.frameworks import get
    from compression_pipeline.frameworks.base import Fit
    from compression_pipeline.methods.quantize import QuantizeStatic, quantize_static
    from compression_pipeline.report import add_ratios
    from compression_pipeline.runtimes import onnxruntime as ort_runtime

    ds = recipe.dataset
    parts, spec = data.preprocess(data.load_raw(ds, "."), ds)
    fw = get("torch")
    fw.set_threads(threads)
    model = fw.build(recipe.baselines["torch"].model_source(), spec, seed=ds.seed)
    print(f"No report.json: training the {recipe.name} baseline for {epochs} epoch(s), exporting, quantizing ...")
    fw.fit(model, parts, spec, Fit(epochs=epochs, seed=ds.seed))
    fp32, int8 = workdir / "baseline.onnx", workdir / "int8.onnx"
    layout = fw.export_onnx(model, fp32, spec)
    quantize_static(fp32, int8, QuantizeStatic(samples=512), data.feed(parts["X_train"], spec, layout))
    models = []
    for name, path in (("baseline", fp32), ("int8", int8)):
        rows, _ = B.run([ort_runtime.open(path, spec, layout, "cpu", threads)], recipe.benchmark.batch_sizes,
                        protocol, fp16=False)
        models.append({"name": name, "framework": "torch", "file_bytes": path.stat().st_size, "params": 1,
                       "benchmarks": rows})
    add_ratios(models)
    return models, [("torch_baseline", fp32, "torch"), ("torch_int8", int8, "torch")], spec


def main(argv=None) -> int:
    from compression_pipeline.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, help="a report.json (default: <artifact root>/<family>/report/report.json)")
    ap.add_argument("--family", default="digits")
    ap.add_argument("--models", nargs="*", help="model names for the agreement check (default: baseline and int8)")
    ap.add_argument("--threads", type=int, default=None, help="default: the recipe's, else one per usable core")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs when there is no report")
    args = ap.parse_args(argv)

    from compression_pipeline.recipe import load_recipe
    from compression_pipeline.settings import PROJECT_ROOT

    path = args.report or Settings.from_env().artifact_root / args.family / "report" / "report.json"
    rep_recipe = json.loads(path.read_text()).get("recipe") if path.is_file() else None
    recipe = load_recipe(rep_recipe if rep_recipe and Path(rep_recipe).is_file()
                         else PROJECT_ROOT / "assets" / f"{args.family}.yaml")
    bm = recipe.benchmark
    threads = B.resolve_threads(args.threads or bm.threads)
    protocol = B.Protocol(bm.warmup_runs, bm.warmup_s, bm.min_runs, bm.min_time_s)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if path.is_file():
            print(f"Report: {path}")
            models, onnx, spec = from_report(path, args.models)
        else:
            models, onnx, spec = fresh(recipe, Path(tmp), args.epochs, threads, protocol)
        print_speedups(models)
        ok = agreement(onnx, spec, bm.batch_sizes, threads, protocol, args.rounds)
    print(f"\nAgreement {'within' if ok else 'OUTSIDE'} {TOLERANCE:.0%} everywhere. ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
