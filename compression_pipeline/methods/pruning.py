"""Pruning: unstructured (global weight magnitude, a storage result) and structured (channels physically removed).

Unstructured pruning zeroes individual weights: the dense ONNX file keeps every zero and every multiply, so it
gives no dense speedup and no smaller file; only the gzip size shrinks. It is reported as exactly that, and it is
written once for every framework on its adapter's kernels. Structured pruning (torch-pruning's MetaPruner on the
model's dependency graph: residual and depthwise layers are pruned together as torch-pruning groups them) removes
whole channels and hidden units with everything that depends on them, so parameters, MACs and latency really drop;
the classifier keeps its outputs. A pruned PyTorch model is saved as its source plus the edits (frameworks/
pytorch_io), so any architecture is rebuilt without pickle.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from compression_pipeline.methods.finetune import FineTune, finetune, select, wants_teacher
from compression_pipeline.methods.registry import Context, register

UNSTRUCTURED_NOTE = ("storage only: no dense speedup (zeros are still stored and multiplied in the dense ONNX file; "
                     "only the gzip size shrinks)")


class PruneUnstructured(FineTune):
    """Global magnitude pruning of every convolution and dense kernel (or those ``layers`` selects) to a sparsity."""

    sparsity: float = Field(gt=0, lt=1, description="share of the selected weights set to zero (global ranking)")
    layers: list[str] | None = Field(None, min_length=1, description="patterns of kernel names (PyTorch "
                                     "'<module>.weight', Keras '<layer>/kernel'), e.g. ['conv*', 'fc1*']; all if unset")


class PruneStructured(FineTune):
    """Channel pruning with torch-pruning: group magnitude importance, the same ratio in every prunable layer."""

    ratio: float = Field(0.5, gt=0, lt=1, description="share of channels / hidden units removed per layer")
    importance: Literal["l1", "l2"] = Field("l2", description="norm of the group magnitude importance")
    keep: list[str] = Field(default_factory=list, description="patterns of module names whose outputs are not "
                            "pruned (the classifier never is)")
    round_to: int | None = Field(None, ge=1, description="round kept channel counts to a multiple of this")


def prune_unstructured(model, config: PruneUnstructured, ctx: Context):
    fw = ctx.framework
    teacher = fw.copy(model) if wants_teacher(config) else None
    kernels = fw.kernels(model)
    names = select(list(kernels), config.layers, "prune_unstructured", "kernels")
    magnitudes = np.concatenate([np.abs(kernels[n]).ravel() for n in names])
    n_prune = round(config.sparsity * magnitudes.size)
    keep = np.ones(magnitudes.size, dtype=bool)
    keep[np.argpartition(magnitudes, n_prune)[:n_prune]] = False  # the n smallest, whatever their layer
    masked, start = {}, 0
    for n in names:
        size = kernels[n].size
        masked[n] = kernels[n] * keep[start: start + size].reshape(kernels[n].shape)
        start += size
    fw.set_kernels(model, masked)
    info = finetune(model, config, ctx, teacher, keep_zero=True)  # fine-tuning never revives a pruned weight
    after = fw.kernels(model)
    zeros = sum(int((after[n] == 0).sum()) for n in names)
    return model, {"weight_sparsity": zeros / magnitudes.size, "pruned_kernels": len(names),
                   "note": UNSTRUCTURED_NOTE, **info}


register("prune_unstructured", PruneUnstructured, "global magnitude pruning of weights (a storage result)")(
    "torch")(prune_unstructured)
register("prune_unstructured", PruneUnstructured)("tensorflow")(prune_unstructured)


def classifier(model, num_classes: int):
    """The module producing the logits: the last Linear (or 1x1-capable convolution) with ``num_classes``
    outputs. It keeps its outputs whatever the pruning ratio."""
    from torch import nn

    found = None
    for name, m in model.named_modules():
        outputs = m.out_features if isinstance(m, nn.Linear) else m.out_channels if isinstance(m, nn.Conv2d) else None
        if outputs == num_classes:
            found = (name, m)
    if found is None:
        raise ValueError(f"prune_structured: no Linear or Conv2d layer with {num_classes} outputs (the classes): "
                         "cannot tell the classifier, whose outputs must not be pruned")
    return found


@register("prune_structured", PruneStructured, "channel pruning with torch-pruning (channels removed)")("torch")
def prune_structured(model, config: PruneStructured, ctx: Context):
    import torch
    import torch_pruning as tp

    fw = ctx.framework
    teacher = fw.copy(model) if wants_teacher(config) else None
    head_name, head = classifier(model, ctx.spec.num_classes)
    names = [n for n, _ in model.named_modules() if n]
    kept = set(select(names, config.keep, "prune_structured", "modules")) if config.keep else set()
    ignored = [head] + [m for n, m in model.named_modules() if n in kept]
    widths_before = _widths(model)
    params_before = fw.count_params(model)[0]
    model.eval()
    example = torch.zeros((1, *ctx.spec.sample_shape(fw.layout(ctx.spec))))
    importance = tp.importance.GroupMagnitudeImportance(p=1 if config.importance == "l1" else 2)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=config.ratio,
                                  ignored_layers=ignored, round_to=config.round_to)
    pruner.step()
    after = _widths(model)
    widths = {n: [w, after.get(n)] for n, w in widths_before.items() if after.get(n) != w}
    ctx.say(f"prune_structured: {len(widths)} layers narrowed, {params_before:,} -> "
            f"{fw.count_params(model)[0]:,} parameters (classifier {head_name} kept)")
    info = finetune(model, config, ctx, teacher)
    return model, {"pruned_layers": widths, "classifier": head_name, "params_before": params_before, **info}


def _widths(model) -> dict[str, int]:
    """Output channels / features of every convolution and dense layer."""
    from torch import nn

    return {n: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
