"""Keras models in and out: a model a user's builder makes (with their trained weights), and the ``.keras`` files the
pipeline stores. Nothing is ever unpickled: ``.keras`` archives are loaded with ``safe_mode=True`` (each layer rebuilt
from its registered class and config), weights files are HDF5 arrays.
"""

from __future__ import annotations

import contextlib
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from compression_pipeline.errors import ArtifactError, PipelineError
from compression_pipeline.frameworks.builders import import_callable
from compression_pipeline.settings import resolve_inside
from compression_pipeline.types import ImportModel, InputSpec

LAMBDA_NOTE = ("a Keras Lambda layer holding a Python lambda is stored as code, and a .keras file with code is "
               "refused when loaded (safe_mode: loading it would run that code); write the operation as a layer class "
               "registered with keras.saving.register_keras_serializable, or as a named function")


def build_import(source: ImportModel, spec: InputSpec, seed: int | None, data_root: Path | None):
    """Call the user's builder with its kwargs (Keras' global seed set first), load the trained weights if any,
    and check the model against ``spec`` (``check``)."""
    import keras

    who = f"model builder {source.builder!r}"
    if source.framework != "tensorflow":
        raise PipelineError(f"{who} is declared with framework {source.framework!r}; the Keras adapter builds "
                            f"'tensorflow' models")
    fn = import_callable(source.builder)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    try:
        model = fn(**source.kwargs)
    except Exception as e:
        raise PipelineError(f"{who} called with kwargs {source.kwargs} failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, keras.Model):
        raise PipelineError(f"{who} returned a {type(model).__module__}.{type(model).__name__}, not a Keras 3 model "
                            f"(keras.Model: Sequential, Functional or a subclass)")
    if source.weights:
        if data_root is None:
            raise PipelineError(f"{who}: weights {source.weights!r} are a file under the data root, and no data root "
                                f"was given")
        load_weights(model, resolve_inside(data_root, source.weights), who)
    check(model, spec, who)
    return model


def check(model, spec: InputSpec, who: str) -> None:
    """Refuse a model the pipeline cannot use, saying why: one that does not take a batch of ``spec``'s samples,
    does not return one logit per class, ends with a softmax, or cannot be stored safely (a Lambda holding a lambda).

    A softmax output is refused rather than stripped: the pipeline's losses, distillation and parity checks work on
    logits, and silently editing a user's model would change what they declared."""
    layout = spec.default_layout("tensorflow")
    shape = (2, *spec.sample_shape(layout))
    try:
        out = model(np.zeros(shape, np.float32), training=False)
    except Exception as e:  # Keras' message: colour codes, the problem, then a dump of the (zero) inputs
        problem = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split("Arguments received by")[0].strip()
        raise PipelineError(f"{who}: the model does not take a batch of this dataset's samples, shape {shape} "
                            f"({layout}, float32): {type(e).__name__}: {problem[:600]}") from e
    if isinstance(out, (list, tuple, dict)):
        raise PipelineError(f"{who}: the model returns {len(out)} outputs; the pipeline needs one, the logits")
    out = np.asarray(out)
    if out.shape != (2, spec.num_classes):
        raise PipelineError(f"{who}: for inputs of shape {shape} the model returns shape {out.shape}; the pipeline "
                            f"needs (2, {spec.num_classes}): one logit per class of the dataset "
                            f"({spec.num_classes} classes)")
    if out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        raise PipelineError(f"{who}: the model's outputs are probabilities (non-negative, each row sums to 1: it ends "
                            f"with a softmax); the pipeline works on logits. keras.applications models take "
                            f"classifier_activation=None (add it to kwargs); otherwise end the model without softmax")
    refuse_lambdas(model, who)


def refuse_lambdas(model, who: str) -> None:
    import keras

    from compression_pipeline.frameworks.keras_layers import all_layers

    lambdas = [layer.name for layer in all_layers(model)
               if isinstance(layer, keras.layers.Lambda) and getattr(layer.function, "__name__", "") == "<lambda>"]
    if lambdas:
        raise PipelineError(f"{who}: layers {lambdas} cannot be stored: {LAMBDA_NOTE}")


def load_weights(model, path: Path, who: str) -> None:
    """Load a user's trained weights into the model their builder made: a ``.keras`` file (its weights must match
    the model's layer by layer) or a ``.weights.h5`` file (Keras' save_weights). Any mismatch is an error naming the
    layers; a partial load never passes silently."""
    if not path.is_file():
        raise PipelineError(f"{who}: weights file {path} does not exist")
    if path.name.endswith(".keras"):
        stored = load(path)
        differences = _differences(model, stored)
        if differences:
            raise PipelineError(f"{who}: the weights in {path} do not fit the model it builds: "
                                + "; ".join(differences))
        model.set_weights(stored.get_weights())
        return
    import h5py

    if not h5py.is_hdf5(path):
        raise PipelineError(f"{who}: {path} is not an HDF5 weights file (what Keras' save_weights writes to a "
                            f".weights.h5 file); nothing else is read as weights, a pickle never")
    try:
        with _every_weight_or_error():
            model.load_weights(str(path))
    except ValueError as e:  # Keras names the layers that failed; the values it prints are noise
        raise PipelineError(f"{who}: the weights in {path} do not fit the model it builds: "
                            f"{re.sub(r', value=[^>]*', '', str(e))}") from None
    with h5py.File(path, "r") as f:  # Keras ignores arrays the model has no place for: a different model's file
        stored = []
        f.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset)
                     and not name.startswith("optimizer/") else None)
    if len(stored) != len(model.weights):
        raise PipelineError(f"{who}: {path} holds {len(stored)} weight arrays, the model {len(model.weights)}: the "
                            f"file is another model's (arrays: {stored[:8]}{' ...' if len(stored) > 8 else ''})")


@contextlib.contextmanager
def _every_weight_or_error():
    """Keras only warns when it skips a nested container's weights (files of older Keras versions), leaving those
    layers at their initial values: a ValueError here, unless loading failed anyway (a shape mismatch makes Keras
    give that warning too, then its own error, which names the layers)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    skipped = [w for w in caught if "freshly-initialized weights" in str(w.message)]
    for w in caught:
        if w not in skipped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if skipped:
        raise ValueError(str(skipped[0].message))


def _differences(model, stored) -> list[str]:
    """The weight layers (depth first) whose weight shapes differ between two models, by position."""
    import keras

    from compression_pipeline.frameworks.keras_layers import all_layers

    def weighted(m):
        return [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in all_layers(m)
                if layer.weights and not isinstance(layer, keras.Model)]

    mine, theirs = weighted(model), weighted(stored)
    out = [f"layer {a} {sa} vs the file's {b} {sb}" for (a, sa), (b, sb) in zip(mine, theirs) if sa != sb]
    if len(mine) > len(theirs):
        out.append(f"the file lacks layers {[name for name, _ in mine[len(theirs):]]}")
    if len(theirs) > len(mine):
        out.append(f"the file has extra layers {[name for name, _ in theirs[len(mine):]]}")
    return out[:6] + ([f"... {len(out) - 6} more"] if len(out) > 6 else [])


def copy(model):
    """An independent, uncompiled copy: same architecture, layer names and weights, no shared variables, no
    optimizer. (``keras.models.clone_model`` would recompile it from its compile config, which fails for the
    distillation loss, a closure.)"""
    import keras

    from compression_pipeline.frameworks.keras_layers import custom_objects

    try:
        with keras.saving.custom_object_scope(custom_objects()):
            clone = type(model).from_config(model.get_config())
    except Exception as e:
        raise PipelineError(f"Keras model {model.name!r} ({type(model).__name__}) cannot be rebuilt from its config "
                            f"({type(e).__name__}: {e}); a subclassed model needs get_config() and a class "
                            f"registered with keras.saving.register_keras_serializable") from e
    clone.set_weights(model.get_weights())
    return clone


def save(model, path: Path) -> None:
    """``path``: a .keras archive of the architecture and weights only, whatever the name. A trained model is
    compiled, and saving it as is would also store its optimizer's state (Adam's two moments: the file ~3x the
    weights) and its loss closure."""
    import shutil
    import tempfile

    refuse_lambdas(model, f"saving Keras model {model.name!r} to {path}")
    # Keras picks the format by the name's suffix: save under a .keras name, then move the bytes where asked
    # (the artifact store hands out temporary names).
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / "model.keras"
        copy(model).save(str(named))
        shutil.copyfile(named, path)


def load(path: Path):
    """The model in a .keras archive, loaded with safe_mode=True and the project's layers known."""
    import keras

    from compression_pipeline.frameworks.keras_layers import custom_objects

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"Keras model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path} is not a .keras archive (a zip of config.json and model.weights.h5): a "
                            f"truncated file, or another format (a pickle?) in its place; model files are never "
                            f"unpickled")
    try:
        with _every_weight_or_error():
            return keras.models.load_model(str(path), safe_mode=True, compile=False, custom_objects=custom_objects())
    except Exception as e:
        if "Lambda" in str(e):
            raise ArtifactError(f"{path}: refused: {LAMBDA_NOTE}") from e
        raise ArtifactError(f"{path} could not be loaded as a Keras model (safe_mode): {type(e).__name__}: "
                            f"{str(e)[:800]}") from e
