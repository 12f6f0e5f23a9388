"""Pruning: unstructured (global weight magnitude, a storage result) and structured (channels physically removed).

Unstructured pruning zeroes individual weights: the dense ONNX file keeps every zero and every multiply, so it
gives no dense speedup and no smaller file; only the gzip size shrinks. It is reported as exactly that.
Structured pruning (torch-pruning's MetaPruner) removes whole channels and hidden units with everything that
depends on them, so parameters, MACs and latency really drop; the result is the same CNN with smaller widths,
saved as (spec, safetensors) like any other model of the zoo.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from compression_pipeline.methods.finetune import FineTune, finetune
from compression_pipeline.methods.registry import TorchContext, register

UNSTRUCTURED_NOTE = ("storage only: no dense speedup (zeros are still stored and multiplied in the dense ONNX file; "
                     "only the gzip size shrinks)")


class PruneUnstructured(FineTune):
    """Global L1 magnitude pruning of every conv and linear weight to a target sparsity; masks made permanent."""

    sparsity: float = Field(gt=0, lt=1, description="share of conv/linear weights set to zero (global ranking)")


class PruneStructured(FineTune):
    """Channel pruning with torch-pruning: group magnitude importance, the same ratio in every prunable layer."""

    ratio: float = Field(0.5, gt=0, lt=1, description="share of channels / hidden units removed per layer")
    importance: Literal["l1", "l2"] = Field("l2", description="norm of the group magnitude importance")
    keep: list[Literal["conv1", "conv2", "conv3", "fc1"]] = Field(
        default_factory=list, description="layers whose outputs are not pruned (the classifier fc2 never is)")
    round_to: int | None = Field(None, ge=1, description="round kept channel counts to a multiple of this")


def _weight_layers(module):
    from torch import nn

    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@register("prune_unstructured", PruneUnstructured, "global magnitude pruning of weights (a storage result)")("torch")
def prune_unstructured(module, spec, config: PruneUnstructured, ctx: TorchContext):
    from torch.nn.utils import prune

    teacher = copy.deepcopy(module) if config.finetune_epochs and config.finetune_teacher == "parent" else None
    targets = [(m, "weight") for m in _weight_layers(module)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=config.sparsity)
    # Fine-tuning runs with the masks in place (weight = weight_orig * mask), so pruned weights stay zero.
    info = finetune(module, config, ctx, teacher)
    for m, name in targets:
        prune.remove(m, name)  # make the mask permanent: a plain weight with zeros, no hooks, no extra tensors
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    total = sum(m.weight.numel() for m, _ in targets)
    return module, spec, {"weight_sparsity": zeros / total, "note": UNSTRUCTURED_NOTE, **info}


@register("prune_structured", PruneStructured, "channel pruning with torch-pruning (channels removed)")("torch")
def prune_structured(module, spec, config: PruneStructured, ctx: TorchContext):
    import torch
    import torch_pruning as tp

    from compression_pipeline import zoo

    teacher = copy.deepcopy(module) if config.finetune_epochs and config.finetune_teacher == "parent" else None
    layers = zoo.named_layers(module)
    ignored = [layers["fc2"]] + [layers[name] for name in config.keep]  # the classifier keeps its classes
    importance = tp.importance.GroupMagnitudeImportance(p=1 if config.importance == "l1" else 2)
    pruner = tp.pruner.MetaPruner(module, torch.zeros((1, *spec.in_shape)), importance=importance,
                                  pruning_ratio=config.ratio, ignored_layers=ignored, round_to=config.round_to)
    pruner.step()
    new_spec = zoo.spec_of(module, spec)
    ctx.say(f"prune_structured: channels {spec.channels} -> {new_spec.channels}, hidden {spec.hidden} -> "
            f"{new_spec.hidden}")
    info = finetune(module, config, ctx, teacher)
    return module, new_spec, {"channels_before": list(spec.channels), "channels_after": list(new_spec.channels),
                              "hidden_before": spec.hidden, "hidden_after": new_spec.hidden, **info}
