"""Layers that compression methods put into Keras models, and the one way a layer is replaced inside any Sequential or
Functional model.

Every layer here is registered as Keras-serializable: a ``.keras`` file stores a layer as its registered class name
and config, never as code, so files holding these layers load with ``safe_mode=True`` once this module is imported
(``keras_io.load`` imports it). This module imports Keras at its top: import it only inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras
import numpy as np
from keras import ops

PACKAGE = "compression_pipeline"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FactorizedDense(keras.layers.Layer):
    """A Dense layer whose kernel (in x units) is the product of two factors, ``a`` (in x rank) and ``b`` (rank x
    units): ``activation(x @ a @ b + bias)``, rank * (in + units) weights and multiply-accumulates instead of
    in * units. One layer rather than two Dense, so it keeps the name of the layer it replaces (``fc1`` stays
    ``fc1`` for a recipe's ``layers: [fc1]``)."""

    def __init__(self, units: int, rank: int, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1 or int(rank) < 1:
            raise ValueError(f"FactorizedDense {kwargs.get('name')!r}: units and rank are positive integers, got "
                             f"units={units}, rank={rank}")
        self.units, self.rank, self.use_bias = int(units), int(rank), bool(use_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        n_in = input_shape[-1]
        self.a = self.add_weight(name="a", shape=(n_in, self.rank), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.rank, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        y = ops.matmul(ops.matmul(inputs, self.a), self.b)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "rank": self.rank, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


def custom_objects() -> dict:
    """The project's layers by registered name, for ``keras.models.load_model``."""
    return {f"{PACKAGE}>{cls.__name__}": cls for cls in (FactorizedDense,)}


def all_layers(model) -> Iterator:
    """Every layer of ``model``, depth first, the layers of nested Sequential/Functional models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


Replacement = tuple["keras.layers.Layer", list[np.ndarray]]


def replace_layers(model, replace: Callable[[keras.layers.Layer], Replacement | None]):
    """A new model like ``model`` (Sequential or Functional, nested ones included) in which every layer for which
    ``replace(layer)`` returns ``(new_layer, weights)`` is ``new_layer`` (unbuilt; it is called where the old one was)
    with ``weights`` set, and every other layer is a copy with the old layer's weights. ``model`` is unchanged; the
    new one is not compiled.

    E.g. a Dense named fc1 replaced by a rank-r factorization: ``replace_layers(model, lambda l: (FactorizedDense(
    l.units, r, l.activation, name=l.name), [a, b, bias]) if l.name == "fc1" else None)``."""
    if not any(cls.__name__ in ("Sequential", "Functional") for cls in type(model).__mro__):
        raise TypeError(f"cannot replace layers inside {type(model).__name__} model {model.name!r}: only Sequential "
                        f"and Functional models expose their layer graph (a subclassed model's call() is code)")
    pairs = []  # (old layer, new layer, weights to set or None to copy the old ones)

    def clone(layer):
        swap = replace(layer)
        if swap is None:
            new, weights = layer.__class__.from_config(layer.get_config()), None
        else:
            new, weights = swap
        pairs.append((layer, new, weights))
        return new

    # recursive: the layers of nested models are offered to `replace` too (otherwise the whole nested model is)
    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new, weights in pairs:  # weights exist only once the new model is built, i.e. now
        try:
            new.set_weights(old.get_weights() if weights is None else weights)
        except ValueError as e:
            raise ValueError(f"replace_layers: layer {old.name!r} ({type(old).__name__} -> {type(new).__name__}): "
                             f"weights do not fit: {e}") from None
    return new_model
