"""The Keras 3 (``tensorflow`` form) implementations of unstructured pruning, low rank and distillation.

Each one takes the same config as its PyTorch twin and returns the same facts, so a report compares the two
frameworks on equal terms. Pruning is written natively: tfmot only supports Keras 2. Structured pruning and weight
sharing have no Keras implementation (torch-pruning's dependency graph and the centroid fine-tuning are PyTorch
code); a recipe asking for them on a TensorFlow model is refused when it is loaded. Keras is imported inside the
functions: importing this package never imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

from compression_pipeline.methods.distill import Distill, result
from compression_pipeline.methods.finetune import FineTune
from compression_pipeline.methods.low_rank import LowRank, plan_layer, summary
from compression_pipeline.methods.pruning import UNSTRUCTURED_NOTE, PruneUnstructured
from compression_pipeline.methods.registry import Context, register


def finetune_keras(model, config: FineTune, ctx: Context, teacher=None, masks: dict | None = None) -> dict:
    """Fine-tune ``model`` in place as configured (the Keras twin of ``finetune.finetune``); ``masks`` keep pruned
    weights at zero. Returns the same facts: epochs, teacher, per-epoch history (best validation epoch kept)."""
    from compression_pipeline import keras_backend as K

    if config.finetune_epochs == 0:
        return {"finetune_epochs": 0}
    history = K.train_keras(model, ctx.splits, ctx.image_shape, config.finetune_epochs, config.finetune_batch_size,
                            config.finetune_lr, ctx.seed, log=ctx.log,
                            teacher=teacher if config.finetune_teacher == "parent" else None,
                            temperature=config.finetune_temperature, alpha=config.finetune_alpha, masks=masks)
    return {"finetune_epochs": config.finetune_epochs, "finetune_teacher": config.finetune_teacher,
            "finetune_history": history}


@register("prune_unstructured", PruneUnstructured)("tensorflow")
def prune_unstructured(model, spec, config: PruneUnstructured, ctx: Context):
    """Global magnitude pruning of every Conv2D and Dense kernel (biases kept), like ``torch.nn.utils.prune``'s
    global L1 ranking: exactly round(sparsity x kernel weights) weights are zeroed, and stay zero while fine-tuning."""
    from compression_pipeline import keras_backend as K

    teacher = K.copy_keras(model) if config.finetune_epochs and config.finetune_teacher == "parent" else None
    layers = K.weight_layers(model)
    kernels = [np.asarray(layer.kernel) for layer in layers]
    magnitudes = np.concatenate([np.abs(k).ravel() for k in kernels])
    n_prune = round(config.sparsity * magnitudes.size)
    keep = np.ones(magnitudes.size, dtype=np.float32)
    keep[np.argpartition(magnitudes, n_prune)[:n_prune]] = 0.0  # the n smallest, whatever their layer
    masks, start = {}, 0
    for layer, kernel in zip(layers, kernels):
        masks[layer.name] = keep[start: start + kernel.size].reshape(kernel.shape)
        start += kernel.size
        layer.kernel.assign(kernel * masks[layer.name])
    info = finetune_keras(model, config, ctx, teacher, masks)
    zeros = sum(int((np.asarray(layer.kernel) == 0).sum()) for layer in layers)
    return model, spec, {"weight_sparsity": zeros / magnitudes.size, "note": UNSTRUCTURED_NOTE, **info}


def _layer_params(layer) -> int:
    return sum(part.count_params() for part in (layer if isinstance(layer, tuple) else (layer,)))


@register("low_rank", LowRank)("tensorflow")
def low_rank(model, spec, config: LowRank, ctx: Context):
    """Truncated SVD of Dense fc layers. A Keras kernel is (in x out), the transpose of PyTorch's weight: the
    rank-r kernel U_r S_r V_r^T becomes Dense(r) with kernel U_r sqrt(S_r), then Dense(out) with sqrt(S_r) V_r^T
    and the original bias; facts and shapes are reported as (out, in), like the PyTorch implementation."""
    from compression_pipeline import keras_backend as K

    old = K.named_layers(model)
    ranks, factors, facts = list(spec.linear_ranks), {}, []
    for name in config.layers:
        kernel, bias = K.dense_kernel(old[name])
        u, s, vh = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
        n_in, n_out = kernel.shape
        fact = plan_layer(name, n_out, n_in, s, config, _layer_params(old[name]), bias is not None)
        r = fact["rank"]
        root = np.sqrt(s[:r])
        factors[name] = ((u[:, :r] * root[None, :]).astype(np.float32),  # A: in x r
                         (root[:, None] * vh[:r]).astype(np.float32), bias)  # B: r x out
        ranks[int(name[-1]) - 1] = r
        facts.append(fact)
    new_spec = spec.model_validate({**spec.model_dump(), "linear_ranks": tuple(ranks)})
    new = K.build_keras(new_spec)
    for name, layer in K.named_layers(new).items():
        if name in factors:
            a, b, bias = factors[name]
            layer[0].set_weights([a])
            layer[1].set_weights([b, bias])
        elif isinstance(layer, tuple):
            for part, source in zip(layer, old[name]):
                part.set_weights(source.get_weights())
        else:
            layer.set_weights(old[name].get_weights())
    ctx.say("low_rank: " + ", ".join(f"{f['layer']} rank {f['rank']} ({f['energy_retained']:.1%} energy)"
                                     for f in facts))
    return new, new_spec, summary(facts, spec, finetune_keras(new, config, ctx, teacher=model))


@register("distill", Distill)("tensorflow")
def distill(model, spec, config: Distill, ctx: Context):
    """A Keras student of the zoo, trained against the parent and, from the same initial weights, alone."""
    from compression_pipeline import keras_backend as K
    from compression_pipeline import zoo

    s_spec = zoo.cnn_spec(config.student.width, tuple(spec.in_shape[1:]), spec.num_classes)
    initial = K.build_keras(s_spec, seed=ctx.seed).get_weights()  # identical initial weights for both runs
    runs = {}
    for label, teacher in (("distilled", model), ("alone", None)):
        student = K.build_keras(s_spec)
        student.set_weights(initial)
        ctx.say(f"distill: training the student {label}")
        history = K.train_keras(student, ctx.splits, ctx.image_shape, config.epochs, config.batch_size, config.lr,
                                ctx.seed, log=ctx.log, teacher=teacher, temperature=config.temperature,
                                alpha=config.alpha)
        acc = K.accuracy(K.predict_keras(student, ctx.splits["X_test"], ctx.image_shape), ctx.splits["y_test"])
        runs[label] = (student, acc, history)
    return runs["distilled"][0], s_spec, result(runs, K.count_params(model)[0],
                                                K.count_params(runs["distilled"][0])[0], config, ctx.seed,
                                                "tensorflow")
