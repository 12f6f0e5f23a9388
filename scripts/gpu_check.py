"""GPU check: the benchmark path of the default family on CUDA, in a few minutes, numbers written to a JSON file.

Runs the library stages exactly as the Dagster assets do (no Dagster): data -> splits (with their gates) ->
a briefly trained baseline -> ONNX export (parity gate) -> static int8 -> benchmark of both -> report with plots.
On CUDA the harness binds ORT inputs/outputs on the device (IOBinding), synchronizes torch, and adds fp16 cells
for torch and ORT. Where CUDA is not usable it says so, runs the same path on CPU, and records ``gpu_run: false``.

    python scripts/gpu_check.py --out /tmp/gpu_check            # writes gpu_check.json, report.html, PNGs
    python scripts/gpu_check.py --out DIR --artifacts ROOT      # reuse a materialized family's models instead
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from compression_pipeline import stages
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import load_recipe
from compression_pipeline.settings import PROJECT_ROOT


def cuda_status() -> dict:
    """Each piece CUDA needs, so a CPU fallback states exactly what was missing."""
    from compression_pipeline import onnx_tools
    from compression_pipeline.runtimes import torch_eager

    try:
        ctypes.CDLL("libcuda.so.1")
        driver = True
    except OSError:
        driver = False
    import onnxruntime as ort
    import torch

    return {"driver_libcuda": driver,
            "ort_cuda_provider_built": "CUDAExecutionProvider" in ort.get_available_providers(),
            "ort_cuda_usable": onnx_tools.cuda_usable(), "torch_cuda_build": torch.version.cuda,
            "torch_cuda_usable": torch_eager.cuda_usable()}


def _good(root: Path, family: str, noun: str) -> Handle | None:
    p = root / "_handles" / family / noun / "good.json"
    return Handle.model_validate(json.loads(p.read_text())) if p.is_file() else None


def training_section(epochs: int = 2, width: int = 64) -> list[dict]:
    """Training throughput (issue 15): the zoo CNN on the digits through the one training loop, on 1 GPU in fp32 and
    bf16, with the split preloaded on the device and with pinned host batches; then on every GPU of the machine
    (NCCL data parallel) when there are several. Where CUDA is not usable: 1 vs 2 gloo workers on CPU. samples/s
    counts the training steps (validation and worker start-up excluded)."""
    import torch

    from compression_pipeline import data
    from compression_pipeline.frameworks import get
    from compression_pipeline.frameworks.base import Fit
    from compression_pipeline.recipe import Dataset
    from compression_pipeline.types import TrainingSetup, ZooModel

    ds = Dataset()
    parts, spec = data.preprocess(data.load_raw(ds, "."), ds)
    fw = get("torch")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        setups = [TrainingSetup(device="cuda", precision=p, preload=pre) for p in ("fp32", "bf16")
                  for pre in ("always", "never")]
        if gpus > 1:
            setups += [TrainingSetup(device="cuda", processes=gpus, precision=p) for p in ("fp32", "bf16")]
    else:
        setups = [TrainingSetup(), TrainingSetup(processes=2)]
    rows = []
    for setup in setups:
        model = fw.build(ZooModel(arch="cnn", width=width), spec, seed=0)
        try:
            h = fw.fit(model, parts, spec, Fit(epochs=epochs, batch_size=256, lr=3e-3, seed=0, setup=setup))
        except Exception as e:  # noqa: BLE001 - one setup's failure is a row of the check, not its end
            rows.append({**setup.model_dump(mode="json"), "error": f"{type(e).__name__}: {e}"})
            print(f"  training {setup.model_dump(exclude_defaults=True)}: FAILED {e}", flush=True)
            continue
        acc = float((fw.predict(model, parts["X_test"], spec).argmax(1) == parts["y_test"]).mean())
        t = h.training
        rows.append({**{k: t.get(k) for k in ("device", "processes", "backend", "precision", "preload",
                                             "samples_per_s", "train_s", "job_wall_s")}, "test_accuracy": acc})
        print(f"  training {t['device']} x{t['processes']} {t['precision']} "
              f"{'preloaded' if t['preload'] else 'host batches'}: {t['samples_per_s']:,.0f} samples/s, "
              f"accuracy {acc:.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, report.html and the plots")
    ap.add_argument("--recipe", type=Path, default=PROJECT_ROOT / "assets" / "digits.yaml")
    ap.add_argument("--artifacts", type=Path, help="an artifact root with the family materialized (skips training)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of the quick baseline")
    ap.add_argument("--batch-sizes", default="1,32,256", help="GPUs are launch-bound at batch 1: larger batches too")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of warm-up and of measurement per cell")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    status = cuda_status()
    gpu = status["ort_cuda_usable"] or status["torch_cuda_usable"]
    if gpu:
        statement = ("CUDA is usable: ONNX Runtime " + ("on CUDAExecutionProvider with IOBinding" if status[
            "ort_cuda_usable"] else "NOT on CUDA (provider not usable)") + "; torch " + (
            "on CUDA with fp16" if status["torch_cuda_usable"] else "NOT on CUDA (a CPU build or no device)") + ".")
    else:
        missing = [k for k in ("driver_libcuda", "ort_cuda_provider_built", "ort_cuda_usable", "torch_cuda_usable")
                   if not status[k]]
        statement = (f"CUDA is NOT usable here (missing: {', '.join(missing)}): the benchmark path ran on CPU. "
                     "These are CPU numbers, not a GPU measurement.")
    print(statement, flush=True)

    base = load_recipe(args.recipe)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    recipe = base.model_copy(update={
        "baseline": base.baseline.model_copy(update={"epochs": args.epochs}),
        "benchmark": base.benchmark.model_copy(update={"batch_sizes": sizes, "device": "auto",
                                                       "warmup_s": args.min_time, "min_time_s": args.min_time})})
    phases = {}
    with tempfile.TemporaryDirectory() as tmp:
        reuse = args.artifacts and _good(args.artifacts, base.name, "torch_baseline")
        store = ArtifactStore(args.artifacts if reuse else tmp)

        def phase(name, fn, *a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            phases[name] = round(time.perf_counter() - t0, 2)
            print(f"  {name}: {phases[name]} s", flush=True)
            return out

        if reuse:
            get = lambda noun: _good(args.artifacts, base.name, noun)
            splits, model, export, int8 = (get("splits"), get("torch_baseline"), get("torch_baseline_onnx"),
                                           get("torch_int8"))
            print(f"Reusing the {base.name} family's models under {args.artifacts}")
        else:
            raw = phase("raw_dataset", stages.raw_dataset, recipe, store, PROJECT_ROOT / "data")
            splits = phase("splits", stages.splits, recipe, store, raw)
            model = phase("train_baseline", stages.baseline, recipe, store, splits, "torch")
            export = phase("export_onnx", stages.export_onnx, recipe, store, model, splits)
            int8 = phase("quantize_int8", stages.onnx_variant, recipe, store, "int8", "torch", export, splits, export)
        b_base = phase("bench_baseline", stages.benchmark, recipe, store, export, model)
        b_int8 = phase("bench_int8", stages.benchmark, recipe, store, int8)
        rep_h = phase("report", stages.report, recipe, ArtifactStore(tmp), [(export, b_base), (int8, b_int8)])
        rep = json.loads(ArtifactStore(tmp).path(rep_h.artifact).read_text())
        for path in rep_h.info["paths"].values():
            shutil.copy(path, args.out / Path(path).name)

    rows = [dict(model=m["name"], **b) for m in rep["models"] for b in m["benchmarks"]]
    result = {
        "gpu_run": bool(gpu), "statement": statement, "cuda": status, "recipe": str(args.recipe),
        "epochs": args.epochs, "reused_artifacts": bool(reuse), "phases_s": phases,
        "accuracy": {m["name"]: m["accuracy"] for m in rep["models"]},
        "file_bytes": {m["name"]: m["file_bytes"] for m in rep["models"]},
        "providers_used": sorted({r["provider"] for r in rows}),
        "io_binding_cells": sum(bool(r.get("io_binding")) for r in rows),
        "fp16_cells": sum(r.get("precision") == "fp16" for r in rows),
        "skipped": [s for m in rep["models"] for s in m.get("benchmarks_skipped", [])],
        "cells": rows, "environment": rep["environment"],
        "training": phase("training", training_section),
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"\n{'model':<10}{'runtime':<13}{'prec':<6}{'batch':>6}{'device':>8}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'samples/s':>12}{'speedup':>9}{'dev MB':>8}")
    for r in rows:
        dev = r.get("peak_device_mb")
        print(f"{r['model']:<10}{r['runtime']:<13}{r.get('precision', 'fp32'):<6}{r['batch_size']:>6}{r['device']:>8}"
              f"{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['throughput']:>12,.0f}"
              f"{r.get('speedup_vs_baseline', float('nan')):>8.2f}x{'-' if dev is None else f'{dev:.0f}':>8}")
    print(f"\n{statement}\nWrote {args.out / 'gpu_check.json'} and report.html ({result['total_s']} s in all).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
