"""The method registry: a method is one frozen config model plus one implementation per form it accepts.

A *form* is what a model is stored as between assets: ``torch`` (an architecture spec plus
safetensors weights), ``tensorflow`` (a ``.keras`` file), ``onnx`` (a deployable ONNX file) or ``tflite``
(a deployable TFLite flatbuffer). A method that has an ``onnx`` implementation works on the exported
artifact of any framework-native model; a method with only a ``torch`` (or ``tensorflow``) implementation
needs a parent of that framework. An implementation keeps its form unless it declares what it produces
(TFLite post-training quantization works on a ``tensorflow`` model and produces ``tflite``).

Signatures: a ``torch`` / ``tensorflow`` implementation is ``fn(model, spec, config, ctx) -> (model, spec,
info)``; an ``onnx`` one ``fn(src, dst, config, calibration) -> info``; one producing ``tflite`` from a
``tensorflow`` model ``fn(model, dst, config, ctx) -> info``. Adding a method touches this package and its
tests, never the orchestration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

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
class TorchContext:
    """What a framework-native implementation may use besides the model: ``fn(model, spec, config, ctx)`` returns
    ``(model, spec, info)``; ``info`` holds JSON-able facts (and an optional human ``note``) for the handle."""

    splits: dict  # X_train, y_train, X_val, y_val, X_test, y_test (numpy, pixels in [0, 1])
    image_shape: tuple[int, int]
    seed: int = 0
    threads: int | None = None
    log: Callable[[str], Any] | None = field(default=None, repr=False)

    def say(self, message: str) -> None:
        if self.log:
            self.log(message)


Context = TorchContext  # the same context serves torch and tensorflow implementations

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
    from compression_pipeline import methods  # noqa: F401  (registers the built-in methods)

    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {sorted(METHODS)}") from None


def methods_for(form: str) -> list[str]:
    """Names of the methods that accept a parent in ``form`` (what a recipe may ask of such a model)."""
    from compression_pipeline import methods  # noqa: F401

    return sorted(n for n, m in METHODS.items() if m.accepts(form))
