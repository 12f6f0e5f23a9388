"""The method registry: a method is one frozen config model plus one implementation per form it accepts.

A *form* is what a model is stored as between assets: ``torch`` (safetensors plus what rebuilds the module),
``tensorflow`` (a ``.keras`` file), ``onnx`` (a deployable ONNX file) or ``tflite`` (a deployable TFLite flatbuffer).
A method that has an ``onnx`` implementation works on the exported artifact of any framework-native model (and on a
user's ONNX file); a method with only a ``torch`` (or ``tensorflow``) implementation needs a parent of that
framework. An implementation keeps its form unless it declares what it produces (TFLite post-training quantization
works on a ``tensorflow`` model and produces ``tflite``).

Signatures: a ``torch`` / ``tensorflow`` implementation is ``fn(model, config, ctx) -> (model, info)``; an ``onnx``
one ``fn(src, dst, config, calibration) -> info`` (calibration: training samples as the graph takes them); one
producing ``tflite`` from a ``tensorflow`` model ``fn(model, dst, config, ctx) -> info``. ``info`` holds JSON-able
facts (and an optional human ``note``) for the handle. Adding a method touches the methods package and its tests,
never the orchestration. Importing ``compression_pipeline.methods`` registers the built-in methods; ask for a
method through that package (``compression_pipeline.methods.get_method``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from compression_pipeline.types import InputSpec

Form = Literal["torch", "tensorflow", "onnx", "tflite"]
NATIVE_FORMS = ("torch", "tensorflow")  # framework-native: trainable, and exported to ONNX for deployment


class MethodConfig(BaseModel):
    """Base of every method's config: frozen and strict, so a typo in a recipe is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Method:
    name: str
    config: type[MethodConfig]
    impls: dict[str, Callable[..., Any]]  # form -> implementation
    description: str = ""
    produces: dict[str, str] = field(default_factory=dict)  # form -> output form, where it is not the same

    def output_form(self, parent_form: str) -> str:
        """Form of the produced model: the implementation's declared output, else the form it works on."""
        if parent_form in self.impls:
            return self.produces.get(parent_form, parent_form)
        return "onnx"

    def accepts(self, parent_form: str) -> bool:
        # A framework-native parent can always be handed over as its ONNX export; a TFLite file cannot.
        return parent_form in self.impls or ("onnx" in self.impls and parent_form in NATIVE_FORMS)


@dataclass
class Context:
    """What a framework-native implementation may use besides the model: the framework's adapter
    (``frameworks.base.Framework``), the splits in the stored layout and their input specification."""

    framework: Any  # the adapter of the model's framework
    splits: dict  # X_train, y_train, X_val, y_val, X_test, y_test (numpy, stored layout)
    spec: InputSpec
    seed: int = 0
    threads: int | None = None
    data_root: Path | None = None  # where a student's trained weights are read from
    training: Any = None  # the recipe's TrainingSetup for this model (None: one process, CPU, fp32)
    log: Callable[[str], Any] | None = field(default=None, repr=False)

    def say(self, message: str) -> None:
        if self.log:
            self.log(message)

    def accuracy(self, model) -> float:
        """The model's accuracy on the test split."""
        logits = self.framework.predict(model, self.splits["X_test"], self.spec)
        return float((logits.argmax(1) == self.splits["y_test"]).mean())


METHODS: dict[str, Method] = {}


def register(name: str, config: type[MethodConfig], description: str = ""):
    """Decorator registering ``fn`` as the implementation of ``name`` for one form: ``@register(...)(form)``, or
    ``@register(...)(form, produces=other_form)`` when the result is stored in another form."""

    def for_form(form: str, produces: str | None = None):
        def wrap(fn):
            existing = METHODS.get(name)
            if existing and existing.config is not config:
                raise TypeError(f"method {name!r} is registered with config {existing.config.__name__}; every "
                                f"form's implementation must share it")
            impls = dict(existing.impls) if existing else {}
            impls[form] = fn
            outputs = dict(existing.produces) if existing else {}
            if produces and produces != form:
                outputs[form] = produces
            METHODS[name] = Method(name, config, impls, description or (existing.description if existing else ""),
                                   outputs)
            return fn

        return wrap

    return for_form


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {sorted(METHODS)}") from None


def methods_for(form: str) -> list[str]:
    """Names of the methods that accept a parent in ``form`` (what a recipe may ask of such a model)."""
    return sorted(n for n, m in METHODS.items() if m.accepts(form))
