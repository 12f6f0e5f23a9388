"""What methods share: fine-tuning after a destructive method (a config mixin and the one helper that runs it, on
any framework through its adapter), and the selection of layers by name patterns.

Fine-tuning may distill from the unmodified parent (``finetune_teacher: parent``): the parent's soft labels
recover more of a pruned model's accuracy on a small dataset than hard labels alone (measured on digits:
structured 50 % pruning + 10 epochs, 0.956 with labels alone, 0.967 with the parent as teacher, baseline 0.972).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field

from compression_pipeline.frameworks.base import Fit
from compression_pipeline.methods.registry import Context, MethodConfig


class FineTune(MethodConfig):
    finetune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning after the method; 0: none")
    finetune_lr: float = Field(1e-3, gt=0)
    finetune_batch_size: int = Field(64, ge=1)
    finetune_teacher: Literal["none", "parent"] = "none"
    finetune_temperature: float = Field(4.0, gt=0)
    finetune_alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation loss vs cross-entropy")


def finetune(model, config: FineTune, ctx: Context, teacher=None, keep_zero: bool = False) -> dict:
    """Fine-tune ``model`` in place as configured (``teacher``: the parent, used when the config asks for it;
    ``keep_zero``: pruned weights stay zero). Returns facts for the handle: epochs, teacher, the per-epoch history
    (best validation epoch kept)."""
    if config.finetune_epochs == 0:
        return {"finetune_epochs": 0}
    fit = Fit(epochs=config.finetune_epochs, batch_size=config.finetune_batch_size, lr=config.finetune_lr,
              seed=ctx.seed, temperature=config.finetune_temperature, alpha=config.finetune_alpha,
              setup=ctx.training)
    history = ctx.framework.fit(model, ctx.splits, ctx.spec, fit,
                                teacher=teacher if config.finetune_teacher == "parent" else None,
                                keep_zero=keep_zero, log=ctx.log)
    return {"finetune_epochs": config.finetune_epochs, "finetune_teacher": config.finetune_teacher,
            "finetune_history": list(history), "training": getattr(history, "training", None)}


def wants_teacher(config: FineTune) -> bool:
    return bool(config.finetune_epochs) and config.finetune_teacher == "parent"


def select(names: list[str], patterns: list[str] | None, method: str, what: str = "layers") -> list[str]:
    """The ``names`` matching any of ``patterns`` (shell-style, e.g. ``fc*`` or ``layer4.*``; all when None). A
    pattern that matches nothing is an error listing what there is: a typo never silently selects nothing."""
    if patterns is None:
        return list(names)
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise ValueError(f"{method}: {what} {unmatched} match none of the model's {what}: {shown}")
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]
