"""The TensorFlow stages of a family: the Keras baseline and variants, their ONNX and TFLite exports, and TFLite
post-training-quantized variants. Values in, a ``Handle`` out, like ``stages``; nothing here imports Dagster.

A Keras model is stored in Keras' own ``.keras`` format (loaded with ``safe_mode``), gated on its TensorFlow
accuracy, then exported twice: to ONNX (tf2onnx; its deployable for ONNX Runtime and the ONNX-level methods) and to
TFLite (run by LiteRT), each export with a parity check against the Keras model.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import Recipe
from compression_pipeline.stages import (
    _compact_bytes,
    _gated,
    _onnx_facts,
    _splits,
    accuracy_gate,
    baseline_reference,
    export_handle,
    export_reference,
    gzip_bytes,
)


def set_threads(threads: int | None) -> None:
    """TensorFlow's threads for a training or export step (None: one per core), set before TF starts its runtime:
    a step process does it first thing; in a process where TF already runs, the running value stays."""
    from compression_pipeline.runtimes.tf_function import configure_threads

    configure_threads(threads, inter_op=None)


def _context(recipe: Recipe, parts: dict, threads, log):
    from compression_pipeline.methods import Context

    return Context(splits=parts, image_shape=recipe.dataset.image_shape, seed=recipe.dataset.seed, threads=threads,
                   log=log)


def _method_inputs(recipe: Recipe, store: ArtifactStore, name: str, parent: Handle, splits_h: Handle, threads):
    """What a tensorflow-form method needs: its variant, implementation, the splits and the parent Keras model."""
    from compression_pipeline.methods import get_method

    set_threads(threads)
    variant = recipe.variants[name]
    model, spec = _load(store, parent)
    return variant, get_method(variant.method).impls["tensorflow"], _splits(store, splits_h), model, spec


def _load(store: ArtifactStore, handle: Handle):
    from compression_pipeline import keras_backend as K
    from compression_pipeline import zoo

    return K.load_keras(store.path(handle.artifact, verify=True)), zoo.CNNSpec.model_validate(handle.info["spec"])


# --- models -----------------------------------------------------------------------------------------------------
def keras_baseline(recipe: Recipe, store: ArtifactStore, splits_h: Handle, threads: int | None = None,
                   log=None) -> Handle:
    """The zoo's CNN built in Keras 3 and trained on the same splits as the PyTorch baseline."""
    from compression_pipeline import keras_backend as K
    from compression_pipeline import zoo

    set_threads(threads)
    parts = _splits(store, splits_h)
    b, ds = recipe.baseline, recipe.dataset
    spec = zoo.cnn_spec(b.width, ds.image_shape, len(ds.classes))
    model = K.build_keras(spec, seed=ds.seed)
    t0 = time.perf_counter()
    history = K.train_keras(model, parts, ds.image_shape, b.epochs, b.batch_size, b.lr, ds.seed, log=log)
    train_s = time.perf_counter() - t0
    logits = K.predict_keras(model, parts["X_test"], ds.image_shape)
    return _save_keras(recipe, store, "baseline", model, spec, logits, parts["y_test"], None,
                       {"method": "train", "parent": None, "history": history, "compress_s": train_s})


def keras_variant(recipe: Recipe, store: ArtifactStore, name: str, parent: Handle, splits_h: Handle,
                  threads: int | None = None, log=None) -> Handle:
    """A Keras-native method (pruning, low rank, distillation) on the parent Keras model; gated on TF accuracy."""
    from compression_pipeline import keras_backend as K

    variant, impl, parts, model, spec = _method_inputs(recipe, store, name, parent, splits_h, threads)
    t0 = time.perf_counter()
    model, spec, method_info = impl(model, spec, variant.config, _context(recipe, parts, threads, log))
    compress_s = time.perf_counter() - t0
    logits = K.predict_keras(model, parts["X_test"], recipe.dataset.image_shape)
    return _save_keras(recipe, store, name, model, spec, logits, parts["y_test"], baseline_reference(parent),
                       {**method_info, "method": variant.method, "config": variant.config.model_dump(mode="json"),
                        "parent": variant.parent, "compress_s": compress_s})


def _save_keras(recipe, store, name, model, spec, logits, y, reference, extra) -> Handle:
    from compression_pipeline import environment, zoo
    from compression_pipeline import keras_backend as K

    with tempfile.TemporaryDirectory() as tmp:  # Keras names its format by the file suffix: save, then store
        path = Path(tmp) / "model.keras"
        K.save_keras(model, path)
        with store.writing(f"{recipe.name}/tensorflow_{name}", "keras", "keras", "tensorflow") as slot:
            shutil.copyfile(path, slot.path)
    params, nonzero = K.count_params(model)
    weights = {w.path: np.asarray(w.numpy()) for w in model.weights}
    info = {"name": name, "framework": "tensorflow", "form": "tensorflow", "spec": spec.model_dump(mode="json"),
            "params": params, "nonzero_params": nonzero, "macs": zoo.count_macs(spec),
            "file_bytes": slot.artifact.bytes, "compact_bytes": _compact_bytes(weights),
            "seed": recipe.dataset.seed, "versions": environment.versions(), **extra}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/tensorflow_{name}", name, info, logits, y, reference,
                         "tensorflow")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])


# --- exports ----------------------------------------------------------------------------------------------------
def export_onnx(recipe: Recipe, store: ArtifactStore, model_h: Handle, splits_h: Handle,
                baseline_export: Handle | None = None, threads: int | None = None) -> Handle:
    """The Keras model's ONNX export (tf2onnx on a tf.function, NHWC input), checked for parity and accuracy."""
    from compression_pipeline import keras_backend as K

    set_threads(threads)
    parts = _splits(store, splits_h)
    model, _ = _load(store, model_h)
    with store.writing(f"{recipe.name}/tensorflow_{model_h.info['name']}_onnx", "onnx", "onnx", "tensorflow") as slot:
        K.export_onnx(model, slot.path)
    facts, logits = _onnx_facts(store, slot.artifact, parts, recipe.dataset.image_shape,
                                "cpu" if recipe.benchmark.device == "cpu" else "auto", threads)
    ref = K.predict_keras(model, parts["X_test"], recipe.dataset.image_shape)
    return export_handle(recipe, store, model_h, slot.artifact, "onnx", facts, logits, ref, parts["y_test"],
                         baseline_export, "onnxruntime")


def export_tflite(recipe: Recipe, store: ArtifactStore, model_h: Handle, splits_h: Handle,
                  baseline_export: Handle | None = None, threads: int | None = None) -> Handle:
    """The Keras model converted to an fp32 TFLite flatbuffer, run by LiteRT, checked for parity and accuracy."""
    from compression_pipeline import keras_backend as K

    set_threads(threads)
    parts = _splits(store, splits_h)
    model, _ = _load(store, model_h)
    with store.writing(f"{recipe.name}/tensorflow_{model_h.info['name']}_tflite", "tflite", "tflite",
                       "tensorflow") as slot:
        K.to_tflite(model, slot.path, "fp32")
    facts, logits = _tflite_facts(store, slot.artifact, parts, recipe.dataset.image_shape, threads)
    facts.update(params=model_h.info["params"], nonzero_params=model_h.info["nonzero_params"])
    ref = K.predict_keras(model, parts["X_test"], recipe.dataset.image_shape)
    return export_handle(recipe, store, model_h, slot.artifact, "tflite", facts, logits, ref, parts["y_test"],
                         baseline_export, "tflite")


def _tflite_facts(store, art, parts, image_shape, threads) -> tuple[dict, np.ndarray]:
    from compression_pipeline import keras_backend as K

    path = store.path(art)
    logits = K.predict_tflite(K.tflite_interpreter(path, threads), parts["X_test"], image_shape)
    return {"accuracy_provider": "litert-cpu", "file_bytes": art.bytes, "gzip_bytes": gzip_bytes(path)}, logits


# --- TFLite post-training quantization ----------------------------------------------------------------------------
def tflite_variant(recipe: Recipe, store: ArtifactStore, name: str, parent: Handle, splits_h: Handle,
                   baseline_export: Handle, threads: int | None = None) -> Handle:
    """A method that turns the parent Keras model into a TFLite file (post-training quantization); gated on its
    LiteRT accuracy against the TensorFlow baseline's deployed accuracy."""
    from compression_pipeline import environment

    variant, impl, parts, model, _ = _method_inputs(recipe, store, name, parent, splits_h, threads)
    t0 = time.perf_counter()
    with store.writing(f"{recipe.name}/tensorflow_{name}", "tflite", "tflite", "tensorflow") as slot:
        method_info = impl(model, slot.path, variant.config, _context(recipe, parts, threads, None))
    compress_s = time.perf_counter() - t0
    facts, logits = _tflite_facts(store, slot.artifact, parts, recipe.dataset.image_shape, threads)
    # Quantization keeps every weight: the parameter counts and MACs are the parent's.
    info = {"name": name, "framework": "tensorflow", "form": "tflite", "method": variant.method,
            "config": variant.config.model_dump(mode="json"), "parent": variant.parent, "seed": recipe.dataset.seed,
            "compress_s": compress_s, **method_info, **facts, "params": parent.info["params"],
            "nonzero_params": parent.info["nonzero_params"], "macs": parent.info.get("macs"),
            "versions": environment.versions()}
    gate = accuracy_gate(recipe, store, f"{recipe.name}/tensorflow_{name}", name, info, logits, parts["y_test"],
                         export_reference(baseline_export), "tflite")
    return _gated(Handle(artifact=slot.artifact, info=info), [gate])
