"""How much room the accuracy gates of a family have, under the settings that change a trained model's numbers.

    .venv/bin/python scripts/gate_margins.py                       # assets/digits.yaml under every setting below
    .venv/bin/python scripts/gate_margins.py --settings default,seed-1 --recipe assets/digits.yaml --out DIR

Training is seeded, but the CPU's kernels (their instruction set), the thread count and the seed change the
trajectory, hence every variant's accuracy; on a small test set that moves a drop by a point or more. Each setting
materializes the family's data, models and exports (every gated asset; no benchmarks) through Dagster, exactly as
`make run` does (`python -m compression_pipeline run --no-benchmarks`), on a throwaway instance, and this script
prints every gated asset's drop with its confidence interval and margin to its tolerance, per setting.

Settings (names for --settings):
  default       this machine as it is
  isa-avx2      torch's kernels limited to AVX2 (oneDNN and ATen): what a CPU without AVX-512/AMX computes
  isa-sse41     limited further, to SSE4.1 (oneDNN) and ATen's non-vectorized kernels
  threads-2     two threads for training and evaluation (on 2 cores `make run` gives each of its side-by-side
                framework phases one: the default here is one thread)
  seed-1, seed-2 the recipe's seed changed (a different split, different initial weights)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": ({}, {}),
    "isa-avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, {}),
    "isa-sse41": ({"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}, {}),
    "threads-2": ({"COMPRESSION_PIPELINE_THREADS": "2"}, {}),
    "seed-1": ({}, {"seed": 1}),
    "seed-2": ({}, {"seed": 2}),
}


def run_setting(name: str, recipe: dict, out: Path) -> tuple[int, float]:
    env_extra, dataset_extra = SETTINGS[name]
    folder = out / name
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    (folder / "home").mkdir(exist_ok=True)
    changed = {**recipe, "dataset": {**recipe.get("dataset", {}), **dataset_extra}}
    (folder / "recipes" / f"{recipe['name']}.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    (folder / "home" / "dagster.yaml").write_text((ROOT / "dagster_home/dagster.yaml").read_text())
    env = {**os.environ, **env_extra, "DAGSTER_HOME": str(folder / "home"),
           "COMPRESSION_PIPELINE_RECIPES": str(folder / "recipes"),
           "COMPRESSION_PIPELINE_ARTIFACTS": str(folder / "artifacts")}
    t0 = time.perf_counter()
    with open(folder / "run.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "compression_pipeline", "run", recipe["name"], "--no-benchmarks"],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return code, time.perf_counter() - t0


def gates(artifacts: Path, family: str) -> dict[str, dict]:
    """asset -> the accuracy gate of its newest materialization (passed or not)."""
    out = {}
    for runs in sorted((artifacts / "_handles" / family).glob("*/runs")):
        newest = max(runs.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for g in json.loads(newest.read_text())["info"].get("gates", []):
            if g["name"] == "accuracy_gate":
                out[runs.parent.name] = g
    return out


def margin(m: dict) -> float:
    """Tolerance minus what the gate's rule judged (the drop, or its interval's top), in the tolerance's mode."""
    drop = m["drop_absolute"] if m["tolerance_mode"] == "absolute" else m["drop_relative"]
    return m["tolerance"] - (drop if m["decide"] == "point" else m["drop_ci_high"])


def cell(g: dict | None) -> str:
    if g is None:
        return "not built"
    m = g["metadata"]
    if "drop_absolute" not in m:  # a baseline: its floor
        return f"{m['accuracy']:.4f} (floor {m['floor']})" + ("" if g["passed"] else " FAIL")
    drop = m["drop_absolute"] if m["tolerance_mode"] == "absolute" else m["drop_relative"]
    return (f"{100 * drop:+.2f} ({100 * m['drop_ci_low']:+.1f}..{100 * m['drop_ci_high']:+.1f}) "
            f"margin {100 * margin(m):+.2f}" + ("" if g["passed"] else " FAIL"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "assets/digits.yaml"))
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {list(SETTINGS)}")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    out = Path(args.out or tempfile.mkdtemp(prefix="gate_margins_"))
    results, worst = {}, {}
    for name in names:
        code, seconds = run_setting(name, recipe, out)
        results[name] = gates(out / name / "artifacts", recipe["name"])
        failed = [a for a, g in results[name].items() if not g["passed"]]
        print(f"{name}: {seconds / 60:.1f} min, exit {code}, {len(results[name])} gates, "
              f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}", flush=True)
    assets = sorted({a for r in results.values() for a in r})
    print(f"\nDrop in points (95% CI) and margin to the tolerance by its rule, per setting; runs under {out}\n")
    print("| asset | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for a in assets:
        print(f"| {a} | " + " | ".join(cell(results[n].get(a)) for n in names) + " |")
        margins = [margin(g["metadata"]) for g in (results[n].get(a) for n in names)
                   if g and "tolerance" in g["metadata"]]
        if margins:
            worst[a] = min(margins)
    if worst:
        a = min(worst, key=worst.get)
        print(f"\nSmallest margin: {a}, {100 * worst[a]:+.2f} points.")
    return 0 if all(g["passed"] for r in results.values() for g in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
