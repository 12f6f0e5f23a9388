"""One function per stage of a family: values in, a ``Handle`` out. Dagster asset bodies call exactly one.

Nothing here imports Dagster. Every function writes its artifact through the ``ArtifactStore``
(atomic, content-addressed) and records, in the handle, the facts and gate outcomes that consumers,
checks and reports read.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from compression_pipeline import data, gates as G
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import Recipe


def _gated(handle: Handle, gates: list) -> Handle:
    handle.info["gates"] = [asdict(g) for g in gates]
    handle.gates_passed = all(g.passed for g in gates)
    return handle


def gzip_bytes(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def _splits(store: ArtifactStore, splits: Handle) -> dict[str, np.ndarray]:
    return data.read_npz(store.path(splits.artifact, verify=True))


# --- data -------------------------------------------------------------------------------------------------------
def raw_dataset(recipe: Recipe, store: ArtifactStore, data_root: Path) -> Handle:
    X, y, source = data.load_raw(recipe.dataset, data_root)
    art = store.write_bytes(f"{recipe.name}/raw_dataset", data.to_npz_bytes({"X": X, "y": y}), "npz", "npz")
    info = {"source": source, "rows": int(len(X)), "features": int(X.shape[1]),
            "labels": sorted(int(v) for v in np.unique(y))}
    if recipe.dataset.path:  # the version of the file really read (the observation may be older)
        info["source_sha256"] = data.content_version(data.source_path(recipe.dataset, data_root))
    return Handle(artifact=art, info=info)


def splits(recipe: Recipe, store: ArtifactStore, raw: Handle) -> Handle:
    from compression_pipeline import quality

    arrays = data.read_npz(store.path(raw.artifact, verify=True))
    parts = data.preprocess(arrays["X"], arrays["y"], recipe.dataset)
    art = store.write_bytes(f"{recipe.name}/splits", data.to_npz_bytes(parts), "npz", "npz")
    outcomes = quality.validate_splits(parts, recipe.dataset.classes, recipe.dataset.min_rows,
                                       recipe.dataset.max_class_kl)
    gates = [G.Gate(g, o.passed, f"{len(o.expectations)} expectations, {len(o.failed)} failed"
                    + ("" if o.passed else ": " + "; ".join(f"{e['expectation']} on {e['table']}"
                                                           + (f" ({e['unexpected_count']} bad values)"
                                                              if "unexpected_count" in e else "")
                                                           for e in o.failed[:3])),
                    {"expectations": o.expectations, "failed": len(o.failed)}) for g, o in outcomes.items()]
    counts = {s: int(len(parts[f"y_{s}"])) for s in data.SPLITS}
    return _gated(Handle(artifact=art, info={"rows": counts}), gates)


# --- models -----------------------------------------------------------------------------------------------------
def torch_baseline(recipe: Recipe, store: ArtifactStore, splits_h: Handle, threads: int | None = None, log=None) -> Handle:
    from compression_pipeline import train, zoo

    train.set_threads(threads)
    parts = _splits(store, splits_h)
    b, ds = recipe.baseline, recipe.dataset
    spec = zoo.cnn_spec(b.width, ds.image_shape, len(ds.classes))
    module = zoo.build_torch(spec, seed=ds.seed)
    t0 = time.perf_counter()
    history = train.train(module, parts, ds.image_shape, b.epochs, b.batch_size, b.lr, ds.seed, log=log)
    train_s = time.perf_counter() - t0
    acc = train.accuracy(train.predict(module, parts["X_test"], ds.image_shape), parts["y_test"])
    return _save_torch(recipe, store, "baseline", module, spec, acc, acc,
                       {"method": "train", "parent": None, "history": history, "compress_s": train_s})


def _save_torch(recipe, store, name, module, spec, acc, baseline_acc, extra) -> Handle:
    from compression_pipeline import zoo

    with store.writing(f"{recipe.name}/torch_{name}", "safetensors", "safetensors", "torch") as slot:
        zoo.save_torch(module, spec, slot.path)
    params, nonzero = zoo.count_params(module)
    info = {"name": name, "framework": "torch", "form": "torch", "spec": spec.model_dump(), "accuracy": acc,
            "accuracy_runtime": "torch", "baseline_accuracy": baseline_acc, "params": params,
            "nonzero_params": nonzero, "seed": recipe.dataset.seed, **extra}
    if name == "baseline":
        gate = G.accuracy_floor(acc, recipe.gates.accuracy_floor, "torch")
    else:
        gate = G.accuracy_drop(acc, baseline_acc, recipe.tolerance(name), "torch")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


# --- exports and ONNX-level variants ----------------------------------------------------------------------------
def _onnx_facts(store, art, parts, image_shape, device, threads) -> tuple[dict, np.ndarray]:
    from compression_pipeline import onnx_tools, train

    path = store.path(art)
    sess = onnx_tools.session(path, device, threads)
    logits = onnx_tools.predict(sess, parts["X_test"], image_shape)
    params, nonzero = onnx_tools.param_count(path)
    return {"accuracy": train.accuracy(logits, parts["y_test"]), "accuracy_runtime": "onnxruntime",
            "accuracy_provider": sess.get_providers()[0], "params": params, "nonzero_params": nonzero,
            "file_bytes": art.bytes, "gzip_bytes": gzip_bytes(path)}, logits


def _device(recipe: Recipe) -> str:
    return "cpu" if recipe.benchmark.device == "cpu" else "auto"


def export_torch(recipe: Recipe, store: ArtifactStore, model: Handle, splits_h: Handle,
                 baseline_export: Handle | None = None, threads: int | None = None) -> Handle:
    from compression_pipeline import onnx_tools, train, zoo

    parts = _splits(store, splits_h)
    module, spec = zoo.load_torch(store.path(model.artifact, verify=True))
    name = model.info["name"]
    with store.writing(f"{recipe.name}/torch_{name}_onnx", "onnx", "onnx", "torch") as slot:
        onnx_tools.export_torch(module, spec, slot.path)
    facts, logits = _onnx_facts(store, slot.artifact, parts, recipe.dataset.image_shape, _device(recipe), threads)
    ref = train.predict(module, parts["X_test"], recipe.dataset.image_shape)
    diff = float(np.abs(logits - ref).max())
    agree = float((logits.argmax(1) == ref.argmax(1)).mean())
    info = {**{k: model.info[k] for k in ("name", "framework", "method", "parent", "seed") if k in model.info},
            "form": "onnx", "source_model": model.artifact.path, **facts, "parity_max_abs_diff": diff}
    gates = [G.parity(diff, recipe.gates.parity_atol, agree)]
    if baseline_export is None:
        info["baseline_accuracy"] = facts["accuracy"]
        gates.append(G.accuracy_floor(facts["accuracy"], recipe.gates.accuracy_floor, "onnxruntime"))
    else:
        info["baseline_accuracy"] = baseline_export.info["accuracy"]
        gates.append(G.accuracy_drop(facts["accuracy"], info["baseline_accuracy"], recipe.tolerance(name), "onnxruntime"))
    return _gated(Handle(artifact=slot.artifact, info=info), gates)


def onnx_variant(recipe: Recipe, store: ArtifactStore, name: str, framework: str, parent: Handle, splits_h: Handle,
                 baseline_export: Handle, threads: int | None = None) -> Handle:
    """Apply an ONNX-level method (e.g. int8 quantization) to the parent's deployable ONNX file."""
    from compression_pipeline.methods import get_method

    variant = recipe.variants[name]
    impl = get_method(variant.method).impls["onnx"]
    parts = _splits(store, splits_h)
    calib = data.as_images(parts["X_train"], recipe.dataset.image_shape)
    t0 = time.perf_counter()
    with store.writing(f"{recipe.name}/{framework}_{name}", "onnx", "onnx", framework) as slot:
        method_info = impl(store.path(parent.artifact, verify=True), slot.path, variant.config, calib)
    compress_s = time.perf_counter() - t0
    facts, _ = _onnx_facts(store, slot.artifact, parts, recipe.dataset.image_shape, _device(recipe), threads)
    info = {"name": name, "framework": framework, "form": "onnx", "method": variant.method,
            "config": variant.config.model_dump(), "parent": variant.parent, "seed": recipe.dataset.seed,
            "compress_s": compress_s, **method_info, **facts, "baseline_accuracy": baseline_export.info["accuracy"]}
    gate = G.accuracy_drop(facts["accuracy"], info["baseline_accuracy"], recipe.tolerance(name), "onnxruntime")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


# --- benchmarks -------------------------------------------------------------------------------------------------
def benchmark(recipe: Recipe, store: ArtifactStore, deployable: Handle, torch_model: Handle | None = None) -> Handle:
    from compression_pipeline import benchmark as B, environment

    bm = recipe.benchmark
    protocol = B.Protocol(bm.warmup_runs, bm.warmup_s, bm.min_runs, bm.min_time_s)
    in_shape = (1, *recipe.dataset.image_shape)
    rows = []
    if "onnxruntime" in bm.runtimes:
        rows += B.bench_onnx(store.path(deployable.artifact, verify=True), in_shape, bm.batch_sizes, bm.device,
                             bm.threads, protocol)
    if "torch" in bm.runtimes and torch_model is not None:
        from compression_pipeline import zoo

        t0 = time.perf_counter()
        module, _ = zoo.load_torch(store.path(torch_model.artifact, verify=True))
        rows += B.bench_torch(module, in_shape, bm.batch_sizes, bm.device, bm.threads, protocol,
                              load_s=time.perf_counter() - t0)
    name, fw = deployable.info["name"], deployable.info["framework"]
    env = environment.capture(bm.threads)
    art = store.write_bytes(f"{recipe.name}/{fw}_{name}_benchmark",
                            _json({"model": name, "framework": fw, "environment": env, "results": rows}).encode(),
                            "json", "json")
    summary = [{k: v for k, v in r.items() if k != "samples_ms"} for r in rows]
    return Handle(artifact=art, info={"name": name, "framework": fw, "results": summary, "environment": env})


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=True, default=float)
