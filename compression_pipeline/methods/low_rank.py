"""Low-rank decomposition: truncated SVD of the fully connected layers, by rank or by retained energy.

A (out x in) weight W = U S V^T is replaced by its best rank-r approximation, stored as two Linear layers
(in -> r without bias, r -> out with the original bias): r (in + out) parameters instead of in x out. The
factorized model is the zoo's CNN with ``linear_ranks`` set, so it is rebuilt from its spec without pickle.
The CNN has no 1x1 convolutions; its 3x3 convolutions are left dense.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from compression_pipeline.methods.finetune import FineTune, finetune
from compression_pipeline.methods.registry import TorchContext, register


class LowRank(FineTune):
    """Truncated SVD of fc layers: give ``rank``, or ``energy`` (smallest rank keeping that share of sum(s^2))."""

    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0, le=1)
    layers: list[Literal["fc1", "fc2"]] = Field(default_factory=lambda: ["fc1"], min_length=1)

    @model_validator(mode="after")
    def _rank_or_energy(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of 'rank' (an integer) or 'energy' (a share of sum(s^2) in (0, 1])")
        return self


def _rank_for(s: np.ndarray, config: LowRank) -> int:
    if config.rank is not None:
        return min(config.rank, len(s))
    share = np.cumsum(s ** 2) / (s ** 2).sum()
    return int((share < config.energy - 1e-12).sum()) + 1


def check_reduces(name: str, n_out: int, n_in: int, r: int, config: LowRank) -> None:
    """Refuse a rank that would not make the layer smaller."""
    if r * (n_in + n_out) >= n_in * n_out:
        raise ValueError(f"low_rank: rank {r} of {name} ({n_out}x{n_in}) would not reduce its parameters; "
                         f"a rank below {n_in * n_out // (n_in + n_out) + 1} does"
                         + ("" if config.rank is not None else f" (energy {config.energy} needs rank {r})"))


def plan_layer(name: str, n_out: int, n_in: int, s: np.ndarray, config: LowRank, params_before: int,
               has_bias: bool) -> dict:
    """The rank of one (out x in) layer with singular values ``s``, checked, and its facts (either framework)."""
    r = _rank_for(np.asarray(s, dtype=np.float64), config)
    check_reduces(name, n_out, n_in, r, config)
    s = np.asarray(s, dtype=np.float64)
    return {"layer": name, "shape": [n_out, n_in], "rank": r,
            "energy_retained": float((s[:r] ** 2).sum() / (s ** 2).sum()), "params_before": params_before,
            "params_after": r * (n_in + n_out) + (n_out if has_bias else 0)}


def summary(facts: list[dict], spec, finetune_info: dict) -> dict:
    """The method's facts and note (either framework). A dense layer's MACs per sample equal its weight count: the
    share of the model's MACs that factorizing can remove says how much latency to expect (convolutions dominate
    this CNN's MACs)."""
    from compression_pipeline import zoo

    before, after = sum(f["params_before"] for f in facts), sum(f["params_after"] for f in facts)
    share = sum(f["shape"][0] * f["shape"][1] for f in facts) / zoo.count_macs(spec)
    note = (f"{'+'.join(f['layer'] for f in facts)}: {after / before:.2f}x parameters; those layers do {share:.0%} "
            f"of the model's MACs, so expect at most a {1 / (1 - share * (1 - after / before)):.2f}x speedup")
    return {"factorized": facts, "factorized_params_before": before, "factorized_params_after": after,
            "factorized_params_ratio": after / before, "factorized_macs_share": share, "note": note, **finetune_info}


@register("low_rank", LowRank, "truncated SVD of fully connected layers")("torch")
def low_rank(module, spec, config: LowRank, ctx: TorchContext):
    import torch

    from compression_pipeline import zoo

    old = zoo.named_layers(module)
    ranks, factors, facts = list(spec.linear_ranks), {}, []
    for name in config.layers:
        weight, bias = zoo.dense_linear(old[name])
        u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
        n_out, n_in = weight.shape
        fact = plan_layer(name, n_out, n_in, s.numpy(), config, sum(p.numel() for p in old[name].parameters()),
                          bias is not None)
        r = fact["rank"]
        root = s[:r].sqrt()
        factors[name] = (root[:, None] * vh[:r], u[:, :r] * root[None, :], bias)  # A (r x in), B (out x r)
        ranks[int(name[-1]) - 1] = r
        facts.append(fact)
    new_spec = spec.model_validate({**spec.model_dump(), "linear_ranks": tuple(ranks)})
    new = zoo.build_torch(new_spec)
    with torch.no_grad():
        for name, layer in zoo.named_layers(new).items():
            if name in factors:
                a, b, bias = factors[name]
                layer[0].weight.copy_(a)
                layer[1].weight.copy_(b)
                layer[1].bias.copy_(bias)
            else:
                layer.load_state_dict(old[name].state_dict())
    new.eval()
    ctx.say("low_rank: " + ", ".join(f"{f['layer']} rank {f['rank']} ({f['energy_retained']:.1%} energy)"
                                     for f in facts))
    return new, new_spec, summary(facts, spec, finetune(new, config, ctx, teacher=module))
