"""GPU check: the benchmark path of a family on CUDA, in a few minutes, numbers written to a JSON file.

Runs the library stages exactly as the Dagster assets do (no Dagster): data -> splits (with their gates) ->
a briefly trained PyTorch baseline -> ONNX export (parity gate) -> static int8 -> the ``--candidate`` variants'
chain (e.g. pruned50 -> pruned50_int8) -> benchmark of each (torch eager and ONNX Runtime) -> report with plots.
On CUDA the harness binds ORT inputs/outputs on the device (IOBinding), synchronizes torch, and adds fp16 cells
for torch and ORT. Where CUDA is not usable it says so, runs the same path on CPU, and records ``gpu_run: false``.

    python scripts/gpu_check.py --out /tmp/gpu_check            # writes gpu_check.json, report.html, PNGs
    python scripts/gpu_check.py --out DIR --artifacts ROOT      # reuse a materialized family's models instead
    python scripts/gpu_check.py --out DIR --family fashion      # the headline family: ResNet-18 on Fashion-MNIST,
                                                                # int8 and the pruned50 -> int8 candidate
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


def _candidate_chain(recipe, store, name, model, export, splits, phase, artifacts) -> list[tuple[Handle, object]]:
    """The PyTorch variants from the baseline down to ``name`` (each framework method's model and its export, each
    ONNX method's file), built as the assets build them, or read from ``artifacts``: [(deployable, model or None)]
    of every model on the chain, for the benchmark."""
    if "torch" not in recipe.frameworks_of(name):
        raise SystemExit(f"--candidate {name}: not a PyTorch model of {recipe.name} (its frameworks: "
                         f"{recipe.frameworks_of(name)})")
    out, parent_model, parent_export = [], model, export
    for step in recipe.chain(name)[1:]:
        if recipe.form(step, "torch") == "torch":
            if artifacts:
                parent_model = _good(artifacts, recipe.name, f"torch_{step}")
                parent_export = _good(artifacts, recipe.name, f"torch_{step}_onnx")
            else:
                parent_model = phase(f"build_{step}", stages.variant, recipe, store, step, "torch", parent_model,
                                     splits, data_root=PROJECT_ROOT / "data")
                parent_export = phase(f"export_{step}", stages.export_onnx, recipe, store, parent_model, splits, export)
            out.append((parent_export, parent_model))
        else:
            parent_export = (_good(artifacts, recipe.name, f"torch_{step}") if artifacts else
                             phase(f"build_{step}", stages.onnx_variant, recipe, store, step, "torch", parent_export,
                                   splits, export))
            parent_model = None
            out.append((parent_export, None))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, report.html and the plots")
    ap.add_argument("--family", help="a family in assets/ (e.g. fashion); default: --recipe")
    ap.add_argument("--recipe", type=Path, default=PROJECT_ROOT / "assets" / "digits.yaml")
    ap.add_argument("--candidate", help="a PyTorch variant of the recipe built after int8 with its chain, e.g. "
                    "pruned50_int8 (default for fashion: pruned50_int8; none for other families)")
    ap.add_argument("--max-rows", type=int, help="a stratified subset of the dataset (a quicker run)")
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

    if args.family:
        args.recipe = PROJECT_ROOT / "assets" / f"{args.family}.yaml"
    base = load_recipe(args.recipe)
    candidate = args.candidate or ("pruned50_int8" if base.name == "fashion" else None)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    torch_baseline = base.baselines["torch"].model_copy(update={"epochs": args.epochs})
    baselines = [b if fw != "torch" else torch_baseline for fw, b in base.baselines.items()]
    dataset = base.dataset if not args.max_rows else base.dataset.model_copy(update={"max_rows": args.max_rows})
    recipe = base.model_copy(update={
        "baseline": baselines if isinstance(base.baseline, list) else torch_baseline, "dataset": dataset,
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
        chain = _candidate_chain(recipe, store, candidate, model, export, splits, phase, args.artifacts
                                 if reuse else None) if candidate else []
        # one interleaved session: every ratio is made of cells timed in the same rounds
        measured = {"torch_baseline": stages.Benchmarkable(export, model), "torch_int8": stages.Benchmarkable(int8),
                    **{f"torch_{d.info['name']}": stages.Benchmarkable(d, m) for d, m in chain}}
        benches = phase("benchmark_session", stages.benchmarks, recipe, store, measured)
        rep_h = phase("report", stages.report, recipe, ArtifactStore(tmp),
                      [(m.deployable, benches[k]) for k, m in measured.items()])
        rep = json.loads(ArtifactStore(tmp).path(rep_h.artifact).read_text())
        for path in rep_h.info["paths"].values():
            shutil.copy(path, args.out / Path(path).name)

    rows = [dict(model=m["name"], **b) for m in rep["models"] for b in m["benchmarks"]]
    result = {
        "gpu_run": bool(gpu), "statement": statement, "cuda": status, "recipe": str(args.recipe),
        "candidate": candidate,
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
    print(f"\n{'model':<16}{'runtime':<13}{'prec':<6}{'batch':>6}{'device':>8}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'samples/s':>12}{'speedup':>9}{'dev MB':>8}")
    for r in rows:
        dev = r.get("peak_device_mb")
        print(f"{r['model']:<16}{r['runtime']:<13}{r.get('precision', 'fp32'):<6}{r['batch_size']:>6}{r['device']:>8}"
              f"{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['throughput']:>12,.0f}"
              f"{r.get('speedup_vs_baseline', float('nan')):>8.2f}x{'-' if dev is None else f'{dev:.0f}':>8}")
    print(f"\n{statement}\nWrote {args.out / 'gpu_check.json'} and report.html ({result['total_s']} s in all).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
