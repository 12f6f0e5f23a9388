"""The family's benchmark session: the interleaved rounds of ``interleave.py``, run in ``processes`` worker processes
one after the other, their rounds pooled.

Why several processes. Within one process, two sessions of the same model agree to within 1-3 %; across processes
the same ratio moves more than its within-process interval (measured on digits: a torch int8 speedup at batch 1 of
2.75x [2.68, 3.01] in one process and 3.06x [2.78, 3.42] in the next; tiny models' 30-microsecond calls 0.64x-0.73x
in five processes with +-3 % intervals each). What a process draws once (where its memory lands, which core its
threads start on, the state of the CPU when it starts) shifts every cell it times, and an interval made of one
process's rounds cannot see it. Pooling the rounds of several processes puts that variation inside the interval,
as pyperf's worker processes do. The cost is opening and warming every model once per process.

Each worker gets the time budget divided among the processes and at least its share of ``min_rounds``, stops
early once its own ratios are within the target, and writes its cells' per-round medians; the parent pools them,
in process order, and decides the ratios, whether the target was reached, and whether the session ran under load
on all rounds together. A worker whose parent dies exits; a worker that fails fails the session with its output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compression_pipeline import interleave as IL
from compression_pipeline import stats
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.benchmark import summarize


@dataclass
class Benchmarkable:
    """What a model of the family is benchmarked from: its deployable file (ONNX, or the TFLite file of a TFLite
    variant), its framework-native model if any (PyTorch eager, tf.function), a Keras model's TFLite export."""

    deployable: Handle
    model: Handle | None = None
    tflite: Handle | None = None


# --- the parent: start the workers, pool their rounds -----------------------------------------------------------
def measure(store: ArtifactStore, models: dict[str, Benchmarkable], measured: list[str], pairs: list[tuple[str, str]],
            bm, threads: int, log=None) -> tuple[dict[str, list[dict]], dict[str, list[dict]], dict]:
    """Time the ``measured`` models in ``bm.processes`` worker processes of interleaved rounds. Returns (rows per
    model: one per cell with the pooled rounds; skipped cells per model; the session's facts)."""
    k = bm.processes
    job = {"root": str(store.root), "benchmark": bm.model_dump(mode="json"), "threads": threads, "pairs": pairs,
           "models": {key: {f: (h.model_dump(mode="json") if h is not None else None)
                            for f, h in vars(models[key]).items()} for key in measured},
           "min_rounds": math.ceil(bm.min_rounds / k), "budget_s": bm.budget_s / k, "processes": k}
    parts = []
    with tempfile.TemporaryDirectory(prefix="benchmark-session-") as folder:
        for i in range(k):
            spec = Path(folder) / f"job{i}.json"
            spec.write_text(json.dumps({**job, "seed": i, "parent": os.getpid()}))
            parts.append(_worker(spec, Path(folder) / f"out{i}.json", i, k, log))
    cells: dict[str, dict] = {}
    for part in parts:
        for c in part["cells"]:
            into = cells.setdefault(c["key"], {**c, "samples_ms": [], "round_p50_ms": [], "round_mean_ms": [],
                                               "others": [], "measured_s": 0.0, "peak_host_mb": 0.0})
            for f in ("samples_ms", "round_p50_ms", "round_mean_ms", "others"):
                into[f] = into[f] + c[f]
            into["measured_s"] += c["measured_s"]
            into["peak_host_mb"] = max(into["peak_host_mb"] or 0.0, c.get("peak_host_mb") or 0.0)
    confidence, target = bm.confidence, bm.target_half_width
    blocks = [p["session"]["rounds"] for p in parts]  # every cell is timed in every round of its process
    ratios = {p: stats.round_ratio(cells[p[1]]["round_p50_ms"], cells[p[0]]["round_p50_ms"], confidence, blocks)
              for p in pairs if p[0] in cells and p[1] in cells}
    load = [x for part in parts for x in part["session"]["round_others_cores"] if x is not None]
    first = parts[0]["session"]
    median_load = float(np.median(load)) if load else None
    session = {"id": first["id"], "processes": k, "rounds": sum(p["session"]["rounds"] for p in parts),
               "rounds_per_process": [p["session"]["rounds"] for p in parts],
               "seconds": sum(p["session"]["seconds"] for p in parts),
               "reached": all(r is not None and r.half_width <= target for r in ratios.values()),
               "target_half_width": target, "budget_s": bm.budget_s, "confidence": confidence,
               "slice_s": bm.slice_s, "min_rounds": bm.min_rounds, "cells": len(cells),
               "cpu_count": first["cpu_count"], "threads": threads, "others_cores_median": median_load,
               "others_cores_max": max(load) if load else None,
               "under_load_threshold_cores": first["under_load_threshold_cores"],
               "under_load": median_load is not None and median_load > first["under_load_threshold_cores"],
               "loadavg_1m": parts[-1]["session"]["loadavg_1m"],
               "orders": [p["session"]["orders"] for p in parts],
               "cell_keys": [p["session"]["cell_keys"] for p in parts]}
    rows: dict[str, list[dict]] = {key: [] for key in measured}
    by_key = dict(cells)
    for c in cells.values():
        row = {k: v for k, v in c.items() if k not in ("key", "model", "others")}
        row.update(summarize(np.asarray(c["samples_ms"]), c["batch_size"]), session=session["id"],
                   round_blocks=blocks, rounds=len(c["round_p50_ms"]),
                   others_cores=float(np.mean(c["others"])) if c["others"] else None)
        rows[c["model"]].append(_with_ratios(row, c, by_key, _baseline_of(models, c["model"]), confidence, blocks,
                                             target))
    skipped = {key: [] for key in measured}
    for part in parts[:1]:
        for model, reasons in part["skipped"].items():
            skipped[model] += reasons
    return rows, skipped, session


def _baseline_of(models: dict[str, Benchmarkable], key: str) -> str:
    return f"{models[key].deployable.info['framework']}_baseline"


def _worker(spec: Path, out: Path, i: int, k: int, log) -> dict:
    """Run one worker to its end, relaying its progress lines; its result, or a RuntimeError with its output."""
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                          if p)}
    proc = subprocess.Popen([sys.executable, "-m", __name__, str(spec), str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    tail: list[str] = []
    try:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-40:]
            if line.startswith("benchmark session") and log:
                log(f"process {i + 1} of {k}: {line.strip()}")
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0 or not out.is_file():
        raise RuntimeError(f"benchmark session process {i + 1} of {k} exited with code {code}:\n" + "\n".join(tail))
    return json.loads(out.read_text())


def _with_ratios(row: dict, c: dict, by_key: dict, baseline: str, confidence: float, blocks: list[int],
                 target: float) -> dict:
    """The row's speedup against its framework baseline's cell (same runtime and batch size, fp32) and its ratio to
    the PyTorch baseline on PyTorch eager, each the median of the per-round ratios with its interval; a speedup whose
    interval stayed wider than the target is marked unstable (its row carries the load it ran under)."""
    refs = {"speedup": by_key.get(IL.cell_key(baseline, c["runtime"], "fp32", c["batch_size"])),
            "vs_torch_eager": by_key.get(IL.cell_key("torch_baseline", "torch", "fp32", c["batch_size"]))}
    for name, ref in refs.items():
        if ref is None or ref is c:
            continue
        ratio = stats.round_ratio(ref["round_p50_ms"], c["round_p50_ms"], confidence, blocks)
        if ratio is None:
            continue
        if name == "speedup":
            row.update(speedup_vs_baseline=ratio.value, speedup_ci=[ratio.ci_low, ratio.ci_high],
                       speedup_resolved=ratio.resolved, speedup_rounds=ratio.rounds, speedup_reference=ref["model"],
                       speedup_unstable=ratio.half_width > target)
        else:
            row[name] = {**ratio.as_dict(), "reference": ref["model"]}
    return row


# --- a worker: open every model, time the rounds, write the cells -----------------------------------------------
def open_sessions(store: ArtifactStore, m: Benchmarkable, bm) -> tuple[list, list[dict]]:
    """The model's sessions on every listed runtime that can run it, and the runtimes that cannot, with why."""
    from compression_pipeline.runtimes import litert
    from compression_pipeline.runtimes import onnxruntime as ort_runtime
    from compression_pipeline.types import InputSpec

    deployable = m.deployable
    spec, fmt = InputSpec.model_validate(deployable.info["input_spec"]), deployable.artifact.format
    openers = {}  # runtime -> a function that opens the model's session on it
    if fmt == "onnx":
        openers["onnxruntime"] = lambda: ort_runtime.open(store.path(deployable.artifact, verify=True), spec,
                                                          deployable.info["input_layout"], bm.device, bm.threads)
    tflite_file = deployable if fmt == "tflite" else m.tflite
    if tflite_file is not None:
        openers["tflite"] = lambda: litert.open(store.path(tflite_file.artifact, verify=True), spec,
                                                tflite_file.info["input_layout"], bm.threads)
    native = m.model.info["framework"] if m.model is not None else None
    if native == "torch":
        openers["torch"] = lambda: _open_torch(store, m.model, bm, spec)
    if native == "tensorflow":
        openers["tensorflow"] = lambda: _open_tensorflow(store, m.model, bm, spec)
    sessions, skipped = [], []
    for runtime in bm.runtimes:
        if runtime in openers:
            sessions.append(openers[runtime]())
        else:
            skipped.append({"runtime": runtime, "precision": "fp32", "applicable": False,
                            "reason": f"{runtime} cannot run this model: a {deployable.info['framework']} model in "
                                      f"{deployable.info.get('form', fmt)} form"})
    return sessions, skipped


def _open_torch(store, model, bm, spec):
    import importlib

    from compression_pipeline.frameworks import get
    from compression_pipeline.runtimes import torch_eager

    importlib.import_module("torch")  # before the clock starts: a process cost, not the model's load time
    fw = get("torch")
    t0 = time.perf_counter()
    module = fw.load(store.path(model.artifact, verify=True))
    return torch_eager.open(module, spec, fw.layout(spec), bm.device, bm.threads, load_s=time.perf_counter() - t0)


def _open_tensorflow(store, model, bm, spec):
    from compression_pipeline.frameworks import get
    from compression_pipeline.runtimes import tf_function

    tf_function.configure_threads(bm.threads)  # before the model loads (and TF starts): TF fixes its thread count
    fw = get("tensorflow")
    t0 = time.perf_counter()
    keras_model = fw.load(store.path(model.artifact, verify=True))
    return tf_function.open(keras_model, spec, fw.layout(spec), bm.device, bm.threads,
                            load_s=time.perf_counter() - t0)


def _watch_parent(parent: int) -> None:
    """Exit when the process that started this worker is gone: a worker never outlives its session."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker(spec_path: Path, out: Path) -> None:
    from compression_pipeline.benchmark import Protocol
    from compression_pipeline.recipe import Benchmark

    job = json.loads(Path(spec_path).read_text())
    _watch_parent(job["parent"])
    store, bm = ArtifactStore(job["root"]), Benchmark.model_validate(job["benchmark"])
    sessions, skipped = {}, {}
    for key, handles in job["models"].items():
        m = Benchmarkable(**{f: Handle.model_validate(h) if h is not None else None for f, h in handles.items()})
        sessions[key], skipped[key] = open_sessions(store, m, bm)
    rounds = IL.Rounds(slice_s=bm.slice_s, min_rounds=job["min_rounds"], budget_s=job["budget_s"],
                       target=bm.target_half_width, confidence=bm.confidence, seed=job["seed"])
    k = job["processes"]  # each process times its share of the minimums; the pooled rounds have them all
    protocol = Protocol(bm.warmup_runs, bm.warmup_s, math.ceil(bm.min_runs / k), bm.min_time_s / k)
    result = IL.measure(sessions, bm.batch_sizes, protocol, rounds, [tuple(p) for p in job["pairs"]], job["threads"],
                        log=lambda line: print(line, flush=True))
    for s in result.session.pop("skipped"):
        skipped[s["model"]].append({k: v for k, v in s.items() if k != "model"})
    cells = []
    for c in result.cells:
        row = IL.row(c, result.session["id"])
        cells.append({**row, "key": c.key, "model": c.model, "others": c.others})
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"cells": cells, "session": result.session, "skipped": skipped}, default=float))
    tmp.replace(out)


if __name__ == "__main__":  # a worker: python -m compression_pipeline.session <job.json> <out.json>
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
