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
def torch_baseline(recipe: Recipe, store: ArtifactStore, splits_h: Handle, threads: int | None = None,
                   log=None) -> Handle:
    from compression_pipeline import train, zoo

    train.set_threads(threads)
    parts = _splits(store, splits_h)
    b, ds = recipe.baseline, recipe.dataset
    spec = zoo.cnn_spec(b.width, ds.image_shape, len(ds.classes))
    module = zoo.build_torch(spec, seed=ds.seed)
    t0 = time.perf_counter()
    history = train.train(module, parts, ds.image_shape, b.epochs, b.batch_size, b.lr, ds.seed, log=log)
    train_s = time.perf_counter() - t0
    logits = train.predict(module, parts["X_test"], ds.image_shape)
    return _save_torch(recipe, store, "baseline", module, spec, logits, parts["y_test"], None,
                       {"method": "train", "parent": None, "history": history, "compress_s": train_s})


def torch_variant(recipe: Recipe, store: ArtifactStore, name: str, framework: str, parent: Handle, splits_h: Handle,
                  threads: int | None = None, log=None) -> Handle:
    """Apply a torch-form method (pruning, low rank, distillation) to the parent model; gate on torch accuracy."""
    from compression_pipeline import train, zoo
    from compression_pipeline.methods import TorchContext, get_method

    train.set_threads(threads)
    variant = recipe.variants[name]
    impl = get_method(variant.method).impls["torch"]
    parts = _splits(store, splits_h)
    module, spec = zoo.load_torch(store.path(parent.artifact, verify=True))
    ctx = TorchContext(splits=parts, image_shape=recipe.dataset.image_shape, seed=recipe.dataset.seed,
                       threads=threads, log=log)
    t0 = time.perf_counter()
    module, spec, method_info = impl(module, spec, variant.config, ctx)
    compress_s = time.perf_counter() - t0
    module.eval()
    logits = train.predict(module, parts["X_test"], recipe.dataset.image_shape)
    return _save_torch(recipe, store, name, module, spec, logits, parts["y_test"], baseline_reference(parent),
                       {**method_info, "method": variant.method, "config": variant.config.model_dump(mode="json"),
                        "parent": variant.parent, "compress_s": compress_s})


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


def _compact(recipe, store, name, module, spec, bits: int | None) -> dict:
    """Size of the model in the compact format (for every torch model, so storage claims compare); a weight-shared
    model's compact file is also written and checked to rebuild the dense weights bit for bit."""
    from compression_pipeline.methods import share

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    if bits is None:
        return {"compact_bytes": _compact_bytes(state)}
    blob = share.compact_bytes(module, spec, bits)
    rebuilt, _ = share.load_compact(blob)
    if any(not np.array_equal(v, rebuilt.state_dict()[k].numpy()) for k, v in state.items()):
        raise RuntimeError(f"{name}: the compact format did not rebuild the weights exactly")
    art = store.write_bytes(f"{recipe.name}/torch_{name}_compact", blob, "cpz", "compact", "torch")
    return {"compact_bytes": len(blob), "compact_artifact": art.path}


def _compact_bytes(state: dict[str, np.ndarray]) -> int:
    """Size of a model's weights in the compact format (any framework's weights, as arrays by name)."""
    from compression_pipeline import compact

    return len(compact.encode(state, {}))


def _save_torch(recipe, store, name, module, spec, logits, y, reference, extra) -> Handle:
    from compression_pipeline import environment, zoo

    with store.writing(f"{recipe.name}/torch_{name}", "safetensors", "safetensors", "torch") as slot:
        zoo.save_torch(module, spec, slot.path)
    params, nonzero = zoo.count_params(module)
    extra = {**extra, **_compact(recipe, store, name, module, spec, extra.get("shared_bits"))}
    info = {"name": name, "framework": "torch", "form": "torch", "spec": spec.model_dump(mode="json"),
            "params": params, "nonzero_params": nonzero, "macs": zoo.count_macs(spec),
            "file_bytes": slot.artifact.bytes, "seed": recipe.dataset.seed,
            "versions": environment.versions(), **extra}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/torch_{name}", name, info, logits, y, reference, "torch")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


# --- exports and ONNX-level variants ----------------------------------------------------------------------------
def _onnx_facts(store, art, parts, image_shape, device, threads) -> tuple[dict, np.ndarray]:
    """Facts of an ONNX file and its logits on the test split, run by ONNX Runtime (accuracy: ``accuracy_gate``)."""
    from compression_pipeline import onnx_tools

    path = store.path(art)
    sess = onnx_tools.session(path, device, threads)
    logits = onnx_tools.predict(sess, parts["X_test"], image_shape)
    params, nonzero = onnx_tools.param_count(path)
    return {"accuracy_provider": sess.get_providers()[0], "params": params, "nonzero_params": nonzero,
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
    return export_handle(recipe, store, model, slot.artifact, "onnx", facts, logits, ref, parts["y_test"],
                         baseline_export, "onnxruntime")


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
    """Apply an ONNX-level method (e.g. int8 quantization) to the parent's deployable ONNX file."""
    from compression_pipeline import environment
    from compression_pipeline.methods import get_method

    variant = recipe.variants[name]
    impl = get_method(variant.method).impls["onnx"]
    from compression_pipeline import onnx_tools

    parts = _splits(store, splits_h)
    source = store.path(parent.artifact, verify=True)
    # Calibration samples in the layout the graph takes: NCHW for PyTorch exports, NHWC for Keras exports.
    layout = onnx_tools.input_layout(source, recipe.dataset.image_shape)
    calib = data.as_images(parts["X_train"], recipe.dataset.image_shape).reshape(-1, *layout)
    t0 = time.perf_counter()
    with store.writing(f"{recipe.name}/{framework}_{name}", "onnx", "onnx", framework) as slot:
        method_info = impl(source, slot.path, variant.config, calib)
    compress_s = time.perf_counter() - t0
    facts, logits = _onnx_facts(store, slot.artifact, parts, recipe.dataset.image_shape, _device(recipe), threads)
    # The graph computes what the parent's does (int8 or float16 instead of float32): MACs are the parent's.
    info = {"name": name, "framework": framework, "form": "onnx", "method": variant.method,
            "config": variant.config.model_dump(mode="json"), "parent": variant.parent, "seed": recipe.dataset.seed,
            "compress_s": compress_s, **method_info, **facts, "macs": parent.info.get("macs"),
            "versions": environment.versions()}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/{framework}_{name}", name, info, logits, parts["y_test"],
                         export_reference(baseline_export), "onnxruntime")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


# --- benchmarks -------------------------------------------------------------------------------------------------
def benchmark(recipe: Recipe, store: ArtifactStore, deployable: Handle, model: Handle | None = None,
              tflite: Handle | None = None) -> Handle:
    """The model on every listed runtime that can run it, with one protocol: ``deployable`` (its ONNX file, or the
    TFLite file of a TFLite variant) on ONNX Runtime or LiteRT; ``model`` (the framework-native model, if any) on
    PyTorch eager or a compiled tf.function; ``tflite`` (a Keras model's TFLite export) on LiteRT."""
    from compression_pipeline import benchmark as B
    from compression_pipeline import environment
    from compression_pipeline.runtimes import litert
    from compression_pipeline.runtimes import onnxruntime as ort_runtime

    bm = recipe.benchmark
    protocol = B.Protocol(bm.warmup_runs, bm.warmup_s, bm.min_runs, bm.min_time_s)
    spec = input_spec(recipe)
    fmt = deployable.artifact.format
    openers = {}  # runtime -> a function that opens the model's session on it
    if fmt == "onnx":  # a PyTorch export takes NCHW, a Keras export NHWC: the framework's layout
        openers["onnxruntime"] = lambda: ort_runtime.open(
            store.path(deployable.artifact, verify=True), spec, spec.default_layout(deployable.info["framework"]),
            bm.device, bm.threads)
    tflite_file = deployable if fmt == "tflite" else tflite
    if tflite_file is not None:
        openers["tflite"] = lambda: litert.open(store.path(tflite_file.artifact, verify=True), spec,
                                                spec.default_layout("tensorflow"), bm.threads)
    native = model.info["framework"] if model is not None else None
    if native == "torch":
        openers["torch"] = lambda: _open_torch(store, model, recipe, spec)
    if native == "tensorflow":
        openers["tensorflow"] = lambda: _open_tensorflow(store, model, recipe, spec)
    rows, skipped = [], []  # skipped: cells not run here (e.g. fp16 on CPU), each with its reason
    for runtime in bm.runtimes:
        if runtime in openers:
            got, why = B.run([openers[runtime]], bm.batch_sizes, protocol)
            rows, skipped = rows + got, skipped + why
        else:
            skipped.append({"runtime": runtime, "precision": "fp32", "applicable": False,
                            "reason": f"{runtime} cannot run this model: a {deployable.info['framework']} model in "
                                      f"{deployable.info.get('form', fmt)} form"})
    name, fw = deployable.info["name"], deployable.info["framework"]
    env = environment.capture(bm.threads)
    body = {"model": name, "framework": fw, "protocol": bm.model_dump(), "environment": env, "results": rows,
            "skipped": skipped}
    art = store.write_bytes(f"{recipe.name}/{fw}_{name}_benchmark", _json(body).encode(), "json", "json")
    summary = [{k: v for k, v in r.items() if k != "samples_ms"} for r in rows]
    return Handle(artifact=art, info={"name": name, "framework": fw, "results": summary, "environment": env,
                                      "skipped": skipped})


def input_spec(recipe: Recipe):
    """The family's samples as the runtimes take them: (1, h, w) grayscale images (until the splits carry their
    own ``InputSpec``)."""
    from compression_pipeline.types import InputSpec

    ds = recipe.dataset
    return InputSpec(kind="image", shape=(1, *ds.image_shape), scale=1 / ds.value_max,
                     class_names=tuple(str(c) for c in ds.classes))


def _open_torch(store, model, recipe, spec):
    import importlib

    from compression_pipeline import zoo
    from compression_pipeline.runtimes import torch_eager

    importlib.import_module("torch")  # before the clock starts: a process cost, not the model's load time
    bm = recipe.benchmark
    t0 = time.perf_counter()
    module, _ = zoo.load_torch(store.path(model.artifact, verify=True))
    return torch_eager.open(module, spec, spec.default_layout("torch"), bm.device, bm.threads,
                            load_s=time.perf_counter() - t0)


def _open_tensorflow(store, model, recipe, spec):
    from compression_pipeline import keras_backend as K
    from compression_pipeline.runtimes import tf_function

    bm = recipe.benchmark
    tf_function.configure_threads(bm.threads)  # before the model loads (and TF starts): TF fixes its thread count
    t0 = time.perf_counter()
    keras_model = K.load_keras(store.path(model.artifact, verify=True))
    return tf_function.open(keras_model, spec, spec.default_layout("tensorflow"), bm.device, bm.threads,
                            load_s=time.perf_counter() - t0)


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
