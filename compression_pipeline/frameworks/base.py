"""The framework adapter: what the pipeline needs of a deep-learning framework, written once per framework, so a
stage (baseline, variant, export) and a method that only trains or predicts are written once for all of them.

An adapter works on the framework's own model object (a ``torch.nn.Module``, a ``keras.Model``) and on values:
the splits in the stored layout (``types.InputSpec``), paths of files it writes or reads. It never imports Dagster.
Where a method needs the framework's internals (pruning a layer, factorizing a weight), the method module holds one
implementation per framework, side by side; what they share (ranking, SVD ranks, facts) is written once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compression_pipeline.types import InputSpec, Layout, TrainingSetup


@dataclass(frozen=True)
class Fit:
    """How a model is trained or fine-tuned: Adam with a cosine schedule, the best validation epoch kept; with a
    teacher, distillation (loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * cross-entropy)."""

    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    temperature: float = 4.0
    alpha: float = 0.7
    # Where and how (devices, processes, precision, preload, augmentation): None is the single-process CPU loop.
    # PyTorch takes every field; Keras one process in fp32 without augmentation (the recipe refuses the rest).
    setup: TrainingSetup | None = None


class History(list):
    """A fit's per-epoch history ({"epoch", "loss", "val_accuracy"} each), with ``training``: how it was trained
    (device, processes, backend, precision, preload, augmentation, epochs, wall time, samples per second). A list,
    so every caller of ``fit`` reads it as before."""

    training: dict | None = None


def pace(done: int, total: int, started: float) -> str:
    """``"<s> s/epoch, <m> min left"`` after ``done`` of ``total`` epochs begun at ``started`` (perf_counter): the
    part of an epoch line that says how long a long training has to go."""
    import time

    per = (time.perf_counter() - started) / max(done, 1)
    left = per * (total - done)
    return f"{per:.1f} s/epoch, " + (f"{left / 60:.1f} min left" if left >= 60 else f"{left:.0f} s left")


class Framework(ABC):
    """One deep-learning framework as the pipeline sees it."""

    name: str  # "torch" | "tensorflow"
    suffix: str  # the file suffix of a stored model: "safetensors" (with its rebuild recipe) | "keras"

    # --- models ---------------------------------------------------------------------------------------------------
    @abstractmethod
    def build(self, source, spec: InputSpec, seed: int | None = None, data_root: Path | None = None) -> Any:
        """The model a recipe's model source declares (``recipe.ZooModel`` or ``recipe.ImportModel``), for inputs
        ``spec`` and ``spec.num_classes`` outputs, with its initial weights seeded, or the user's trained weights
        (a file under ``data_root``) loaded. Checks that the model takes a batch of ``spec``'s samples and returns
        ``spec.num_classes`` logits, and says which when it does not."""

    @abstractmethod
    def save(self, model, path: Path) -> None:
        """Write ``model`` to ``path`` in a format that is loaded without unpickling anything and rebuilds any
        model this pipeline produced (pruned, factorized) exactly."""

    @abstractmethod
    def load(self, path: Path) -> Any:
        """The model ``save`` wrote. A file that is not one (a pickle in its place, say) is an ``ArtifactError``."""

    @abstractmethod
    def copy(self, model) -> Any:
        """An independent copy (same architecture and weights, no shared state): a teacher, say."""

    @abstractmethod
    def set_threads(self, threads: int | None) -> None:
        """The framework's thread count for this process's training and evaluation (None: one per core this
        process may use). Always set: the count changes the order of float sums, hence the trained weights."""

    # --- data -----------------------------------------------------------------------------------------------------
    @abstractmethod
    def layout(self, spec: InputSpec) -> Layout:
        """The input layout this framework's models take: NCHW (PyTorch) or NHWC (Keras) images, NF vectors."""

    @abstractmethod
    def fit(self, model, splits: dict[str, np.ndarray], spec: InputSpec, fit: Fit, teacher=None,
            keep_zero: bool = False, log: Callable[[str], Any] | None = None) -> list[dict]:
        """Train ``model`` in place on ``splits`` (X_train, y_train, X_val, y_val; stored layout), the weights of
        the best validation epoch kept; with ``keep_zero``, weights that are zero when training starts stay zero (a
        pruned model's masks). Returns one {"epoch", "loss", "val_accuracy"} per epoch, as a list whose ``training``
        attribute records how it was trained (``pytorch_train.History``: device, processes, backend, precision,
        preload, augmentation, epochs, wall time, samples per second)."""

    @abstractmethod
    def predict(self, model, X: np.ndarray, spec: InputSpec, batch_size: int = 256) -> np.ndarray:
        """Logits (n, classes) float32 for samples ``X`` in the stored layout, in inference mode."""

    # --- weights --------------------------------------------------------------------------------------------------
    @abstractmethod
    def kernels(self, model) -> dict[str, np.ndarray]:
        """Copies of the kernels of every convolution and dense layer (tensors of 2+ dimensions), by name (PyTorch
        ``<module path>.weight``, Keras ``<layer>/<variable>``), in the framework's own layout: what unstructured
        pruning ranks. ``set_kernels`` writes such arrays back."""

    @abstractmethod
    def set_kernels(self, model, kernels: dict[str, np.ndarray]) -> None:
        """Write ``kernels`` (a subset of ``kernels(model)``'s names, same shapes) into the model."""

    # --- facts and exports ----------------------------------------------------------------------------------------
    @abstractmethod
    def count_params(self, model) -> tuple[int, int]:
        """(parameters, nonzero parameters)."""

    @abstractmethod
    def count_macs(self, model, spec: InputSpec) -> int:
        """Multiply-accumulates of one sample's forward pass in the weight layers (convolutions, dense layers)."""

    @abstractmethod
    def export_onnx(self, model, path: Path, spec: InputSpec) -> Layout:
        """Write an ONNX file with one input (a dynamic batch dimension) in this framework's layout and one output
        (the logits); returns that layout. The file's IR version is one every supported ONNX Runtime reads."""
