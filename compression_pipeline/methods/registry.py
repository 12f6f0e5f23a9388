"""The method registry: a method is one frozen config model plus one implementation per form it accepts.

A *form* is what a model is stored as between assets: ``torch`` (an architecture spec plus
safetensors weights) or ``onnx`` (a deployable ONNX file). A method that has an ``onnx``
implementation works on the exported artifact of any framework; a method with only a ``torch``
implementation needs a PyTorch parent. Adding a method touches this package and its tests, never
the orchestration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

Form = Literal["torch", "onnx"]


class MethodConfig(BaseModel):
    """Base of every method's config: frozen and strict, so a typo in a recipe is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Method:
    name: str
    config: type[MethodConfig]
    impls: dict[str, Callable[..., Any]]  # form -> implementation
    description: str = ""

    def output_form(self, parent_form: str) -> str:
        """Form of the produced model: a method keeps the form it works on."""
        return parent_form if parent_form in self.impls else "onnx"

    def accepts(self, parent_form: str) -> bool:
        # A framework-native parent can always be handed over as its ONNX export.
        return parent_form in self.impls or "onnx" in self.impls


@dataclass
class TorchContext:
    """What a ``torch``-form implementation may use besides the model: ``fn(module, spec, config, ctx)`` returns
    ``(module, spec, info)``; ``info`` holds JSON-able facts (and an optional human ``note``) for the handle."""

    splits: dict  # X_train, y_train, X_val, y_val, X_test, y_test (numpy, pixels in [0, 1])
    image_shape: tuple[int, int]
    seed: int = 0
    threads: int | None = None
    log: Callable[[str], Any] | None = field(default=None, repr=False)

    def say(self, message: str) -> None:
        if self.log:
            self.log(message)


METHODS: dict[str, Method] = {}


def register(name: str, config: type[MethodConfig], description: str = ""):
    """Decorator registering ``fn`` as the implementation of ``name`` for one form: ``@register(...)(form)``."""

    def for_form(form: str):
        def wrap(fn):
            existing = METHODS.get(name)
            impls = dict(existing.impls) if existing else {}
            impls[form] = fn
            METHODS[name] = Method(name, config, impls, description or (existing.description if existing else ""))
            return fn

        return wrap

    return for_form


def get_method(name: str) -> Method:
    from compression_pipeline import methods  # noqa: F401  (registers the built-in methods)

    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {sorted(METHODS)}") from None
