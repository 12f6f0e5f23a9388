"""Measure issue 3's targets on the default recipe, through the pipeline itself (a benchmark script, not a test).

    .venv/bin/python scripts/measure_methods.py [--threads 2] [--min-time 1.0] [--out DIR]
    .venv/bin/python scripts/measure_methods.py --report DIR/digits/report/report.json   # judge an existing run

Materializes every asset of assets/digits.yaml in-process through Dagster on a throwaway instance, with the
benchmark pinned to ``--threads`` threads (training and evaluation use one per core), then reads the pipeline's own
report.json and prints each target next to the measured value: every ratio comes from one run, so the machine's load
cancels out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def materialize(out: Path, threads: int, min_time: float) -> Path:
    import dagster as dg

    from compression_pipeline.definitions import build_definitions
    from compression_pipeline.settings import Settings

    recipe = yaml.safe_load((ROOT / "assets/digits.yaml").read_text())
    recipe["benchmark"].update(threads=threads, min_time_s=min_time, warmup_s=min(1.0, min_time))
    recipes = out / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    (recipes / "digits.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    settings = Settings(recipes, out / "data", out / "artifacts")
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations()
                  if not e.passed]
    if failed:
        print("failed gates:", ", ".join(failed), file=sys.stderr)
    return out / "artifacts/digits/report/report.json"


def _speedup(model: dict, batch: int) -> float | None:
    for b in model["benchmarks"]:
        if b["runtime"] == "onnxruntime" and b["batch_size"] == batch:
            return b.get("speedup_vs_baseline")
    return None


def targets(report: dict) -> list[tuple[str, str, float | None, str, bool]]:
    """(variant, what, measured, target, met) for every target of the issue."""
    m = {x["name"]: x for x in report["models"] if x["framework"] == "torch"}  # the targets: PyTorch
    pp = lambda x: 100 * x["accuracy_drop"]
    rows = []

    def add(name, what, value, limit, smaller_is_better=True, unit=""):
        met = value is not None and (value <= limit if smaller_is_better else value >= limit)
        rows.append((name, what, value, f"{'<=' if smaller_is_better else '>='} {limit}{unit}", met))

    if "int8" in m:
        add("int8", "file / fp32 file", m["int8"]["size_ratio"], 0.30)
        add("int8", "accuracy drop (pp)", pp(m["int8"]), 0.5)
        add("int8", "speedup ORT b32", _speedup(m["int8"], 32), 2.5, False, "x")
    if "pruned50" in m:
        add("pruned50", "params / baseline", m["pruned50"]["params_ratio"], 0.30)
        add("pruned50", "accuracy drop (pp)", pp(m["pruned50"]), 1.0)
        add("pruned50", "speedup ORT b32", _speedup(m["pruned50"], 32), 2.5, False, "x")
    if "pruned50_int8" in m:
        add("pruned50_int8", "accuracy drop (pp)", pp(m["pruned50_int8"]), 1.0)
        add("pruned50_int8", "speedup ORT b32", _speedup(m["pruned50_int8"], 32), 6.0, False, "x")
        add("pruned50_int8", "file / fp32 file", m["pruned50_int8"]["size_ratio"], 0.10)
    if "student" in m:
        add("student", "params / teacher", m["student"]["params_ratio"], 0.2)
        add("student", "accuracy drop (pp)", pp(m["student"]), 1.5)
        ab = m["student"].get("ablation") or {}
        rows.append(("student", "alone (no teacher) accuracy, torch", ab.get("student_alone_accuracy"),
                     f"distilled {ab.get('distilled_accuracy', float('nan')):.4f}", ab != {}))
    if "lowrank" in m:
        handle = _handle(report, "lowrank")
        ratio = handle.get("factorized_params_ratio") if handle else None
        add("lowrank", "factorized-layer params ratio", ratio, 0.4)
        add("lowrank", "accuracy drop (pp)", pp(m["lowrank"]), 1.0)
    return rows


def _handle(report: dict, name: str) -> dict | None:
    """The model's own handle (method facts the report does not copy), found next to the report."""
    art = Path(report["_path"]).parents[2]
    good = art / "_handles" / report["family"] / f"torch_{name}_onnx" / "good.json"
    return json.loads(good.read_text())["info"] if good.is_file() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0, help="benchmark seconds per cell (and warm-up)")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--report", type=Path, default=None, help="judge this report.json instead of running")
    args = ap.parse_args(argv)
    if args.report:
        path = args.report
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="measure_methods_"))
        path = materialize(out, args.threads, args.min_time)
    report = json.loads(path.read_text())
    report["_path"] = str(path)
    threads = {b.get("threads") for m in report["models"] for b in m["benchmarks"]}
    lines = [f"report: {path} (benchmark threads: {sorted(threads, key=str)})", "",
             ("| model | accuracy | drop pp | params | params x | MACs x | file x | gzip KB | ORT b1 x | ORT b32 x "
              "| gates |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in report["models"]:
        lines.append(f"| {x['name']} | {x['accuracy']:.4f} | {100 * x['accuracy_drop']:+.2f} | {x['params']:,} | "
                     f"{x.get('params_ratio', 1):.3f} | {x.get('macs_ratio') or float('nan'):.3f} | "
                     f"{x.get('size_ratio', 1):.3f} | {x['gzip_bytes'] / 1024:.0f} | {_speedup(x, 1) or 1:.2f} | "
                     f"{_speedup(x, 32) or 1:.2f} | {'pass' if x['gates_passed'] else 'FAIL'} |")
    lines += ["", "| variant | target | measured | limit | met |", "|---|---|---|---|---|"]
    misses = 0
    for name, what, value, limit, met in targets(report):
        misses += not met
        shown = "-" if value is None else f"{value:.4f}"
        lines.append(f"| {name} | {what} | {shown} | {limit} | {'yes' if met else 'MISS'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (path.parent / "targets.md").write_text(text)
    return 0 if misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
