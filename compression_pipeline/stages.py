"""One function per stage of a family: values in, a ``Handle`` out. Dagster asset bodies call exactly one.

Nothing here imports Dagster. Every function writes its artifact through the ``ArtifactStore``
(atomic, content-addressed) and records, in the handle, the facts and gate outcomes that consumers,
checks and reports read.
"""

from __future__ import annotations

import gzip
import io
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from compression_pipeline import data
from compression_pipeline import gates as G
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import Recipe
from compression_pipeline.session import Benchmarkable


def _gated(handle: Handle, gates: list) -> Handle:
    handle.info["gates"] = [asdict(g) for g in gates]
    handle.gates_passed = all(g.passed for g in gates)
    return handle


def gzip_bytes(path: Path) -> int:
    """The file's size gzipped at gzip's own default level (6, what `gzip file` gives). Level 9 is about 10 % smaller
    on a 90 %-sparse model but takes 13x as long there (3.8 s vs 0.3 s for 5 MB), on every sparse export."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=6))


def _splits(store: ArtifactStore, splits: Handle) -> dict[str, np.ndarray]:
    return data.read_npz(store.path(splits.artifact, verify=True))


# --- data -------------------------------------------------------------------------------------------------------
def raw_dataset(recipe: Recipe, store: ArtifactStore, data_root: Path) -> Handle:
    raw = data.load_raw(recipe.dataset, data_root)
    art = store.write_bytes(f"{recipe.name}/raw_dataset", data.to_npz_bytes(raw.arrays()), "npz", "npz")
    info = {"source": raw.source, "rows": raw.rows, "features": int(np.prod(raw.X.shape[1:])),
            "labels": sorted(int(v) for v in np.unique(raw.labels())), "kind": raw.kind,
            "sample_shape": list(raw.X.shape[1:]), "dtype": str(raw.X.dtype), "class_names": list(raw.class_names)}
    if raw.X_test is not None:  # the source's own test split, kept as the test split
        info["test_rows"] = len(raw.X_test)
    if recipe.dataset.path:  # the version of the file really read (the observation may be older)
        info["source_sha256"] = data.content_version(data.source_path(recipe.dataset, data_root))
    return Handle(artifact=art, info=info)


def splits(recipe: Recipe, store: ArtifactStore, raw: Handle) -> Handle:
    from compression_pipeline import quality

    ds = recipe.dataset
    source = raw.info.get("source", "dataset")  # the file the rows came from: every error and gate names it
    raw_data = data.RawData.from_arrays(data.read_npz(store.path(raw.artifact, verify=True)), source)
    parts, spec = data.preprocess(raw_data, ds)
    art = store.write_bytes(f"{recipe.name}/splits", data.to_npz_bytes(parts), "npz", "npz")
    outcomes = quality.validate_splits(parts, spec, ds.min_rows, ds.max_class_kl, ds.gate_rows, ds.seed,
                                       ds.value_range)
    gates = [G.Gate(g, o.passed, f"{source}: {len(o.expectations)} expectations, {len(o.failed)} failed"
                    + "".join(f"; {n}" for n in o.notes)
                    + ("" if o.passed else ": " + "; ".join(f"{e['expectation']} on {e['table']}"
                                                           + (f" ({e['unexpected_count']} bad values)"
                                                              if "unexpected_count" in e else "")
                                                           for e in o.failed[:3])),
                    {"dataset": source, "expectations": o.expectations, "failed": len(o.failed),
                     "unexpected_count": sum(e.get("unexpected_count", 0) for e in o.failed),
                     **({"checked": "; ".join(o.notes)} if o.notes else {})})
             for g, o in outcomes.items()]
    counts = {s: len(parts[f"y_{s}"]) for s in data.SPLITS}
    return _gated(Handle(artifact=art, info={"rows": counts, "input_spec": spec.model_dump(mode="json")}), gates)


# --- models -----------------------------------------------------------------------------------------------------
def _spec(handle: Handle):
    """The family's input specification, as the splits (and every model and export after them) record it."""
    from compression_pipeline.types import InputSpec

    return InputSpec.model_validate(handle.info["input_spec"])


def _framework(name: str, threads: int | None):
    """The adapter of ``name``, with its thread count set for this step (None: one per core)."""
    from compression_pipeline.frameworks import get

    fw = get(name)
    fw.set_threads(threads)
    return fw


def baseline(recipe: Recipe, store: ArtifactStore, splits_h: Handle, framework: str, threads: int | None = None,
             log=None, data_root: Path | None = None) -> Handle:
    """The recipe's baseline in ``framework``: built from its source (the zoo, or the user's builder and trained
    weights), trained on the training split unless the recipe says to take it as given, gated on the floor."""
    from compression_pipeline.frameworks.base import Fit

    fw = _framework(framework, threads)
    parts, spec, b = _splits(store, splits_h), _spec(splits_h), recipe.baselines[framework]
    model = fw.build(b.model_source(), spec, seed=recipe.dataset.seed, data_root=data_root)
    extra = {"method": "train", "parent": None, "source": b.model_dump(mode="json")}
    if getattr(b, "train", True):
        t0 = time.perf_counter()
        fit = Fit(epochs=b.epochs, batch_size=b.batch_size, lr=b.lr, seed=recipe.dataset.seed,
                  setup=recipe.training_for("baseline", framework))
        history = fw.fit(model, parts, spec, fit, log=log)
        extra.update(history=list(history), training=history.training)  # how it was trained: the report's words
        extra["compress_s"] = time.perf_counter() - t0
    else:
        extra["method"] = "as given"
    logits = fw.predict(model, parts["X_test"], spec)
    return _save_model(recipe, store, "baseline", fw, model, spec, logits, parts["y_test"], None, threads, extra)


def variant(recipe: Recipe, store: ArtifactStore, name: str, framework: str, parent: Handle, splits_h: Handle,
            threads: int | None = None, log=None, data_root: Path | None = None) -> Handle:
    """A framework-native method (pruning, low rank, distillation, weight sharing) on the parent model, gated on
    the framework's accuracy against the baseline's."""
    from compression_pipeline.methods import Context, get_method

    fw = _framework(framework, threads)
    v, parts, spec = recipe.variants[name], _splits(store, splits_h), _spec(splits_h)
    impl = get_method(v.method).impls[framework]
    model = fw.load(store.path(parent.artifact, verify=True))
    ctx = Context(framework=fw, splits=parts, spec=spec, seed=recipe.dataset.seed, threads=threads,
                  data_root=data_root, log=log, training=recipe.training_for(name))
    t0 = time.perf_counter()
    model, method_info = impl(model, v.config, ctx)
    compress_s = time.perf_counter() - t0
    logits = fw.predict(model, parts["X_test"], spec)
    return _save_model(recipe, store, name, fw, model, spec, logits, parts["y_test"], baseline_reference(parent),
                       threads, {**method_info, "method": v.method, "config": v.config.model_dump(mode="json"),
                                 "parent": v.parent, "compress_s": compress_s})


def onnx_baseline(recipe: Recipe, store: ArtifactStore, splits_h: Handle, data_root: Path,
                  threads: int | None = None) -> Handle:
    """The user's ONNX file as the family's baseline: copied into the artifact store as given, its input layout read
    from its graph (or declared), evaluated with ONNX Runtime and gated on the floor."""
    from compression_pipeline import environment, onnx_tools
    from compression_pipeline.errors import ModelError
    from compression_pipeline.settings import resolve_inside

    b, parts, spec = recipe.baselines["onnx"], _splits(store, splits_h), _spec(splits_h)
    try:
        source = resolve_inside(Path(data_root), b.path)
    except ValueError as e:
        raise ModelError(f"baseline.path {b.path!r}: {e}") from None
    if not source.is_file():
        raise ModelError(f"baseline.path: {source} is not a file (the user's ONNX model, under the data root)")
    try:
        layout = onnx_tools.infer_layout(source, spec) if b.input_layout == "auto" else b.input_layout
        art = store.write_bytes(f"{recipe.name}/onnx_baseline", source.read_bytes(), "onnx", "onnx", "onnx")
        facts, logits = _onnx_facts(store, art, parts, spec, layout, _device(recipe), threads)
    except Exception as e:  # noqa: BLE001 - any ONNX/ORT failure on a user file is reported as that file's problem
        raise ModelError(f"baseline {source}: not an ONNX model this ONNX Runtime runs on the data "
                         f"({type(e).__name__}: {e})") from None
    if logits.ndim != 2 or logits.shape[1] != spec.num_classes:
        raise ModelError(f"baseline {source}: returns {logits.shape[1:]} per sample; the data has "
                         f"{spec.num_classes} classes")
    info = {"name": "baseline", "framework": "onnx", "form": "onnx", "method": "as given", "parent": None,
            "source": b.model_dump(mode="json"), "input_spec": spec.model_dump(mode="json"), "input_layout": layout,
            "seed": recipe.dataset.seed, "versions": environment.versions(), **facts}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/onnx_baseline", "baseline", info, logits, parts["y_test"],
                         None, "onnxruntime")
    return _gated(Handle(artifact=art, info=info), [gate])


def _save_model(recipe, store, name, fw, model, spec, logits, y, reference, threads, extra) -> Handle:
    from compression_pipeline import environment

    with store.writing(f"{recipe.name}/{fw.name}_{name}", fw.suffix, fw.suffix, fw.name) as slot:
        fw.save(model, slot.path)
    params, nonzero = fw.count_params(model)
    extra = {**extra, **_compact(recipe, store, name, fw, model, extra)}
    info = {"name": name, "framework": fw.name, "form": fw.name, "input_spec": spec.model_dump(mode="json"),
            "params": params, "nonzero_params": nonzero, "macs": fw.count_macs(model, spec),
            "file_bytes": slot.artifact.bytes, "seed": recipe.dataset.seed, "threads": _threads(threads),
            "versions": environment.versions(), **extra}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/{fw.name}_{name}", name, info, logits, y, reference, fw.name)
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


def _threads(threads: int | None) -> int:
    from compression_pipeline.benchmark import resolve_threads

    return resolve_threads(threads)


def baseline_reference(model: Handle) -> dict:
    """What a framework-native variant of ``model`` is gated against: the framework baseline's accuracy and test
    predictions, carried down the chain in every model handle."""
    return {"accuracy": model.info["baseline_accuracy"], "predictions": model.info.get("baseline_predictions"),
            "name": "the baseline"}


def export_reference(baseline_export: Handle) -> dict:
    """What an export or an ONNX/TFLite variant is gated against: the baseline's export, on its runtime."""
    return {"accuracy": baseline_export.info["accuracy"], "predictions": baseline_export.info.get("predictions"),
            "name": f"the baseline export ({baseline_export.artifact.path})"}


def _store_predictions(store: ArtifactStore, folder: str, pred: np.ndarray) -> dict:
    """The predicted test labels, stored as .npy next to the model: what paired accuracy gates compare."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(pred, dtype=np.int32), allow_pickle=False)
    return store.write_bytes(f"{folder}_predictions", buf.getvalue(), "npy", "npy").model_dump()


def _read_predictions(store: ArtifactStore, reference: dict) -> np.ndarray:
    from compression_pipeline.artifacts import Artifact
    from compression_pipeline.errors import ArtifactError

    if not reference.get("predictions"):
        raise ArtifactError(f"{reference['name']} has no recorded test predictions (it was materialized by an "
                            "older version of compression_pipeline): re-materialize it, then this asset")
    return np.load(store.path(Artifact.model_validate(reference["predictions"]), verify=True), allow_pickle=False)


def accuracy_gate(recipe: Recipe, store: ArtifactStore, folder: str, name: str, info: dict, logits: np.ndarray,
                  y: np.ndarray, reference: dict | None, runtime: str) -> G.Gate:
    """Record the model's test accuracy and predictions in ``info`` and judge it: against the floor when
    ``reference`` is None (a baseline, its own reference from then on), else its paired drop against the
    reference's predictions on the same test images, with the confidence interval and the recipe's rule."""
    from compression_pipeline.stats import paired_drop

    pred = np.asarray(logits).argmax(1)
    info.update(accuracy=float((pred == y).mean()), accuracy_runtime=runtime, test_samples=len(y),
                predictions=_store_predictions(store, folder, pred))
    if reference is None:
        info.update(baseline_accuracy=info["accuracy"], baseline_predictions=info["predictions"],
                    accuracy_drop=0.0, accuracy_drop_relative=0.0)
        return G.accuracy_floor(info["accuracy"], recipe.gates.accuracy_floor, runtime, len(y))
    tolerance = recipe.tolerance(name)
    paired = paired_drop(pred, _read_predictions(store, reference), y, tolerance.confidence)
    info.update(baseline_accuracy=paired.reference_accuracy, baseline_predictions=reference["predictions"],
                accuracy_drop=paired.drop, accuracy_drop_relative=paired.in_mode("relative")[0],
                accuracy_drop_ci=[paired.ci_low, paired.ci_high], accuracy_drop_confidence=paired.confidence,
                images_worse=paired.worse, images_better=paired.better)
    return G.accuracy_drop(paired, tolerance, runtime)


def _compact(recipe, store, name, fw, model, extra) -> dict:
    """Size of the model in the compact format (every model, so storage claims compare); a weight-shared PyTorch
    model's compact file is also written and checked to rebuild the dense weights bit for bit."""
    from compression_pipeline import compact

    if fw.name != "torch":
        state = {w.path: np.asarray(w) for w in model.weights}
        return {"compact_bytes": len(compact.encode(state, {}))}
    from compression_pipeline.methods import share

    bits = extra.get("shared_bits")
    blob = share.compact_bytes(model, bits, extra.get("shared_tensors", ()))
    if bits is None:
        return {"compact_bytes": len(blob)}
    rebuilt = share.load_compact(blob).state_dict()
    if any(not np.array_equal(v.detach().cpu().numpy(), rebuilt[k].numpy()) for k, v in model.state_dict().items()):
        raise RuntimeError(f"{name}: the compact format did not rebuild the weights exactly")
    art = store.write_bytes(f"{recipe.name}/torch_{name}_compact", blob, "cpz", "compact", "torch")
    return {"compact_bytes": len(blob), "compact_artifact": art.path}


# --- exports and ONNX-level variants ----------------------------------------------------------------------------
def _onnx_facts(store, art, parts, spec, layout, device, threads) -> tuple[dict, np.ndarray]:
    """Facts of an ONNX file and its logits on the test split, run by ONNX Runtime (accuracy: ``accuracy_gate``)."""
    from compression_pipeline import onnx_tools
    from compression_pipeline.data import feed

    path = store.path(art)
    sess = onnx_tools.session(path, device, threads)
    logits = onnx_tools.predict(sess, feed(parts["X_test"], spec, layout))
    params, nonzero = onnx_tools.param_count(path)
    return {"accuracy_provider": sess.get_providers()[0], "params": params, "nonzero_params": nonzero,
            "file_bytes": art.bytes, "gzip_bytes": gzip_bytes(path)}, logits


def _device(recipe: Recipe) -> str:
    return "cpu" if recipe.benchmark.device == "cpu" else "auto"


def export_onnx(recipe: Recipe, store: ArtifactStore, model_h: Handle, splits_h: Handle,
                baseline_export: Handle | None = None, threads: int | None = None) -> Handle:
    """The framework model's deployable ONNX export (in its framework's input layout), checked for parity with the
    model and gated on its ONNX Runtime accuracy."""
    fw = _framework(model_h.info["framework"], threads)
    parts, spec = _splits(store, splits_h), _spec(splits_h)
    model = fw.load(store.path(model_h.artifact, verify=True))
    with store.writing(f"{recipe.name}/{fw.name}_{model_h.info['name']}_onnx", "onnx", "onnx", fw.name) as slot:
        layout = fw.export_onnx(model, slot.path, spec)
    facts, logits = _onnx_facts(store, slot.artifact, parts, spec, layout, _device(recipe), threads)
    ref = fw.predict(model, parts["X_test"], spec)
    return export_handle(recipe, store, model_h, slot.artifact, "onnx", {**facts, "input_layout": layout}, logits,
                         ref, parts["y_test"], baseline_export, "onnxruntime")


def export_tflite(recipe: Recipe, store: ArtifactStore, model_h: Handle, splits_h: Handle,
                  baseline_export: Handle | None = None, threads: int | None = None) -> Handle:
    """A Keras model converted to an fp32 TFLite flatbuffer, run by LiteRT, checked for parity and gated."""
    from compression_pipeline.frameworks import keras_adapter as K

    fw = _framework("tensorflow", threads)
    parts, spec = _splits(store, splits_h), _spec(splits_h)
    model = fw.load(store.path(model_h.artifact, verify=True))
    with store.writing(f"{recipe.name}/tensorflow_{model_h.info['name']}_tflite", "tflite", "tflite",
                       "tensorflow") as slot:
        K.to_tflite(model, slot.path, "fp32")
    facts, logits = _tflite_facts(store, slot.artifact, parts, spec, threads)
    facts.update(params=model_h.info["params"], nonzero_params=model_h.info["nonzero_params"])
    ref = fw.predict(model, parts["X_test"], spec)
    return export_handle(recipe, store, model_h, slot.artifact, "tflite", facts, logits, ref, parts["y_test"],
                         baseline_export, "tflite")


def _tflite_facts(store, art, parts, spec, threads) -> tuple[dict, np.ndarray]:
    from compression_pipeline.frameworks import keras_adapter as K

    path = store.path(art)
    logits = K.predict_tflite(path, parts["X_test"], spec, threads)
    return {"accuracy_provider": "litert-cpu", "file_bytes": art.bytes, "gzip_bytes": gzip_bytes(path),
            "input_layout": spec.default_layout("tensorflow")}, logits


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "tflite": "LiteRT"}


def export_handle(recipe: Recipe, store: ArtifactStore, model: Handle, artifact, form: str, facts: dict,
                  logits: np.ndarray, ref: np.ndarray, y: np.ndarray, baseline_export: Handle | None,
                  runtime: str) -> Handle:
    """The handle of an export (ONNX or TFLite) of any framework's model: parity of its ``logits`` with the source
    model's ``ref``, and its accuracy gate (the floor for the baseline, the paired drop against the baseline's
    export otherwise), measured with ``runtime`` (onnxruntime or tflite)."""
    diff = float(np.abs(logits - ref).max())
    agree = float((logits.argmax(1) == ref.argmax(1)).mean())
    # The model's own facts (method, config, parent, MACs, seed, versions, notes...) travel with its export; what
    # is measured again on the exported file (accuracy, params, sizes) is replaced.
    carried = {k: v for k, v in model.info.items() if k not in _REMEASURED}
    info = {**carried, "form": form, "source_model": model.artifact.path, "source_accuracy": model.info["accuracy"],
            "source_accuracy_runtime": model.info["accuracy_runtime"], **facts, "parity_max_abs_diff": diff}
    gates = [G.parity(diff, recipe.gates.parity_atol, agree, RUNTIME_NAMES[runtime],
                      f"the {model.info['framework']} model")]
    reference = None if baseline_export is None else export_reference(baseline_export)
    folder = str(Path(artifact.path).parent)
    gates.append(accuracy_gate(recipe, store, folder, model.info["name"], info, logits, y, reference, runtime))
    return _gated(Handle(artifact=artifact, info=info), gates)


# Measured again on an export (or replaced by its own reference), never carried over from the source model.
_REMEASURED = ("form", "accuracy", "accuracy_runtime", "accuracy_drop", "accuracy_drop_relative", "params",
               "nonzero_params", "file_bytes", "gzip_bytes", "gates", "history", "finetune_history", "predictions",
               "baseline_accuracy", "baseline_predictions", "accuracy_drop_ci", "accuracy_drop_confidence",
               "images_worse", "images_better", "test_samples")


def onnx_variant(recipe: Recipe, store: ArtifactStore, name: str, framework: str, parent: Handle, splits_h: Handle,
                 baseline_export: Handle, threads: int | None = None) -> Handle:
    """Apply an ONNX-level method (e.g. int8 quantization) to the parent's deployable ONNX file, calibrated on
    training samples in the layout that file takes."""
    from compression_pipeline import environment
    from compression_pipeline.data import feed
    from compression_pipeline.methods import get_method

    variant = recipe.variants[name]
    impl = get_method(variant.method).impls["onnx"]
    parts, spec = _splits(store, splits_h), _spec(splits_h)
    source = store.path(parent.artifact, verify=True)
    layout = parent.info["input_layout"]
    calib = feed(parts["X_train"], spec, layout)
    t0 = time.perf_counter()
    with store.writing(f"{recipe.name}/{framework}_{name}", "onnx", "onnx", framework) as slot:
        method_info = impl(source, slot.path, variant.config, calib)
    compress_s = time.perf_counter() - t0
    facts, logits = _onnx_facts(store, slot.artifact, parts, spec, layout, _device(recipe), threads)
    # The graph computes what the parent's does (int8 or float16 instead of float32): MACs are the parent's.
    info = {"name": name, "framework": framework, "form": "onnx", "method": variant.method,
            "config": variant.config.model_dump(mode="json"), "parent": variant.parent, "seed": recipe.dataset.seed,
            "compress_s": compress_s, **method_info, **facts, "input_layout": layout,
            "input_spec": spec.model_dump(mode="json"), "macs": parent.info.get("macs"),
            "versions": environment.versions()}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/{framework}_{name}", name, info, logits, parts["y_test"],
                         export_reference(baseline_export), "onnxruntime")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


def tflite_variant(recipe: Recipe, store: ArtifactStore, name: str, parent: Handle, splits_h: Handle,
                   baseline_export: Handle, threads: int | None = None) -> Handle:
    """A method that turns the parent Keras model into a TFLite file (post-training quantization); gated on its
    LiteRT accuracy against the TensorFlow baseline's deployed accuracy."""
    from compression_pipeline import environment
    from compression_pipeline.methods import Context, get_method

    fw = _framework("tensorflow", threads)
    variant, parts, spec = recipe.variants[name], _splits(store, splits_h), _spec(splits_h)
    impl = get_method(variant.method).impls["tensorflow"]
    model = fw.load(store.path(parent.artifact, verify=True))
    t0 = time.perf_counter()
    with store.writing(f"{recipe.name}/tensorflow_{name}", "tflite", "tflite", "tensorflow") as slot:
        method_info = impl(model, slot.path, variant.config, Context(framework=fw, splits=parts, spec=spec,
                                                                      seed=recipe.dataset.seed, threads=threads))
    compress_s = time.perf_counter() - t0
    facts, logits = _tflite_facts(store, slot.artifact, parts, spec, threads)
    # Quantization keeps every weight: the parameter counts and MACs are the parent's.
    info = {"name": name, "framework": "tensorflow", "form": "tflite", "method": variant.method,
            "config": variant.config.model_dump(mode="json"), "parent": variant.parent, "seed": recipe.dataset.seed,
            "compress_s": compress_s, **method_info, **facts, "input_spec": spec.model_dump(mode="json"),
            "params": parent.info["params"], "nonzero_params": parent.info["nonzero_params"],
            "macs": parent.info.get("macs"), "versions": environment.versions()}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/tensorflow_{name}", name, info, logits, parts["y_test"],
                         export_reference(baseline_export), "tflite")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


# --- benchmarks -------------------------------------------------------------------------------------------------
def benchmarks(recipe: Recipe, store: ArtifactStore, models: dict[str, Benchmarkable],
               selected: list[str] | None = None, log=None) -> dict[str, Handle]:
    """One measurement session (``session.py``, ``interleave.py``) for ``selected`` models of the family
    (``<framework>_<name>``; all by default), timed together with their references in interleaved rounds on every
    listed runtime that can run each: each one's framework baseline (its speedups' denominator) and the PyTorch
    baseline (what a PyTorch user starts from), so no ratio is ever made of cells timed at different moments.
    Returns a handle per selected model: its rows, each with its speedup and that speedup's interval, and the
    session's facts (rounds, processes, load)."""
    from compression_pipeline import benchmark as B
    from compression_pipeline import environment, session
    from compression_pipeline.interleave import cell_key

    bm = recipe.benchmark
    selected = list(models) if selected is None else [k for k in selected if k in models]
    base = {k: f"{m.deployable.info['framework']}_baseline" for k, m in models.items()}
    wanted = set(selected) | {base[k] for k in selected} | {"torch_baseline"}
    measured = [k for k in models if k in wanted]
    pairs = [(cell_key(k, rt, prec, bs), cell_key(base[k], rt, "fp32", bs)) for k in selected if k != base[k]
             for rt in bm.runtimes for prec in ("fp32", "fp16") for bs in bm.batch_sizes]
    rows, skipped, full = session.measure(store, models, measured, pairs, bm, B.resolve_threads(bm.threads), log)
    # every round's order stays in the artifacts; the handles carry the rest
    facts = {k: v for k, v in full.items() if k not in ("cell_keys", "orders")}
    env = environment.capture(bm.threads)
    out = {}
    for key in selected:
        d = models[key].deployable
        name, fw = d.info["name"], d.info["framework"]
        body = {"model": name, "framework": fw, "protocol": bm.model_dump(), "environment": env, "session": full,
                "results": rows[key], "skipped": skipped[key]}
        art = store.write_bytes(f"{recipe.name}/{fw}_{name}_benchmark", _json(body).encode(), "json", "json")
        summary = [{k: v for k, v in r.items() if k != "samples_ms"} for r in rows[key]]
        out[key] = Handle(artifact=art, info={"name": name, "framework": fw, "results": summary, "environment": env,
                                              "skipped": skipped[key], "session": facts})
    return out


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=True, default=float)


# --- reports and the deployment candidate -----------------------------------------------------------------------
def report(recipe: Recipe, store: ArtifactStore, models: list[tuple[Handle, Handle]], rejected=()) -> Handle:
    """report.json/.md/.html at fixed names for people, plus a content-addressed snapshot of report.json that the
    deployment candidate reads (a later run rewriting report.json never changes what an old handle points at)."""
    from compression_pipeline import report as R

    rep = R.build(recipe, models, rejected)
    paths = R.write(rep, store)
    art = store.write_bytes(f"{recipe.name}/report/snapshots", _json(rep).encode(), "json", "json")
    return Handle(artifact=art, info={"paths": paths, "models": len(rep["models"]), "rejected": len(rep["rejected"]),
                                      "table": R.markdown(rep)})


def deployment_candidate(recipe: Recipe, store: ArtifactStore, report_h: Handle, splits_h: Handle,
                         previous: Handle | None = None) -> Handle:
    """Pick the candidate with the recipe's ``select`` rule, copy its artifact and write its model card.

    When no model meets the constraints the handle keeps ``previous``'s artifact and fails its
    ``constraints_met`` gate, so the last good candidate (what consumers read) is never replaced.
    """
    import json

    from compression_pipeline.artifacts import Artifact
    from compression_pipeline.report import model_card, model_key
    from compression_pipeline.report import select as S
    from compression_pipeline.settings import resolve_inside

    rep = json.loads(store.path(report_h.artifact, verify=True).read_text())
    decision = S.select(rep, recipe.select)
    info = {"rule": decision.rule, "decision": decision.to_dict(), "select": recipe.select.model_dump(mode="json"),
            "report": report_h.artifact.path}
    folder = f"{recipe.name}/deployment_candidate"
    if decision.chosen is None:
        prev = previous.info.get("candidate") if previous else None
        keeps = (f"the previous candidate {prev} ({previous.artifact.path}) stays" if previous and previous.artifact
                 else "there is no previous candidate")
        why = "; ".join(f"{k}: {v}" for k, v in decision.reasons.items())
        gate = G.Gate("constraints_met", False, f"no model meets the rule ({decision.rule}); {keeps}. {why}",
                      {"reasons": decision.reasons, "kept_previous": prev})
        return _gated(Handle(artifact=previous.artifact if previous else None,
                             info={**info, "candidate": None, "kept_previous": prev}), [gate])
    m = next(x for x in rep["models"] if model_key(x) == decision.chosen)
    fmt = m.get("format", "onnx")  # an ONNX file, or a TFLite one for a TFLite variant
    source = store.path(Artifact(path=m["artifact"], format=fmt, sha256=m["sha256"], bytes=m["file_bytes"]),
                        verify=True)
    data = source.read_bytes()
    art = store.write_bytes(folder, data, fmt, fmt, m["framework"])
    splits_facts = {"rows": splits_h.info.get("rows"),
                    "sha256": splits_h.artifact.sha256 if splits_h.artifact else None}
    card = model_card.render(rep, decision, splits_facts, art.model_dump())
    card_art = store.write_bytes(f"{folder}/cards", card.encode(), "md", "md")
    # Stable names for deployment tooling and people; each written atomically, only when a model was chosen.
    for stale in ({"onnx", "tflite"} - {fmt}):  # the current folder holds one model: the chosen one
        resolve_inside(store.root, f"{folder}/current/model.{stale}").unlink(missing_ok=True)
    current = {"model": store.write_bytes_named(f"{folder}/current/model.{fmt}", data),
               "model_card": store.write_text_named(f"{folder}/current/model_card.md", card),
               "decision": store.write_text_named(f"{folder}/current/decision.json", _json(decision.to_dict()))}
    row = S.cell_row(m, recipe.select)
    info.update(candidate=decision.chosen, name=m["name"], framework=m["framework"], objective=recipe.select.objective,
                objective_value=decision.value, accuracy=m["accuracy"], file_bytes=m["file_bytes"],
                source_artifact=m["artifact"], model_card=card_art.path,
                current={k: str(v) for k, v in current.items()})
    if row is not None:
        info["p50_ms"] = row["p50_ms"]
    gate = G.Gate("constraints_met", True, f"{decision.chosen} chosen: {decision.rule}; {recipe.select.objective} "
                                           f"{decision.value:.6g}; {len(decision.reasons)} other model(s) not chosen",
                  {"reasons": decision.reasons, "ranking": decision.ranking})
    return _gated(Handle(artifact=art, info=info), [gate])
