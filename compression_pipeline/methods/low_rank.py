"""Low-rank decomposition: truncated SVD of dense layers, by rank or by retained energy.

A (out x in) weight W = U S V^T is replaced by its best rank-r approximation, stored as two factors (in -> r
without bias, r -> out with the original bias): r (in + out) parameters instead of in x out. In PyTorch the layer
becomes a ``FactorizedLinear`` (two Linear children), in Keras a ``FactorizedDense``; both are rebuilt from their
stored files without pickle. Convolutions are left dense. Without ``layers``, every dense layer that the rank makes
smaller is factorized (the others are left alone and listed); a layer named in ``layers`` that the rank would not
make smaller is an error.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from compression_pipeline.methods.finetune import FineTune, finetune, select, wants_teacher
from compression_pipeline.methods.registry import Context, register


class LowRank(FineTune):
    """Truncated SVD of dense layers: give ``rank``, or ``energy`` (smallest rank keeping that share of sum(s^2))."""

    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0, le=1)
    layers: list[str] | None = Field(None, min_length=1, description="patterns of dense layer names (PyTorch module "
                                     "paths, Keras layer names), e.g. ['fc1']; every dense layer if unset")

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


def plan(name: str, n_out: int, n_in: int, s: np.ndarray, config: LowRank, params_before: int,
         has_bias: bool) -> dict | None:
    """The rank of one (out x in) layer with singular values ``s`` and its facts; None when that rank would not
    make the layer smaller and ``layers`` did not name it (named, that is an error)."""
    s = np.asarray(s, dtype=np.float64)
    r = _rank_for(s, config)
    if r * (n_in + n_out) >= n_in * n_out:
        if config.layers is None:
            return None
        raise ValueError(f"low_rank: rank {r} of {name} ({n_out}x{n_in}) would not reduce its parameters; "
                         f"a rank below {n_in * n_out // (n_in + n_out) + 1} does"
                         + ("" if config.rank is not None else f" (energy {config.energy} needs rank {r})"))
    return {"layer": name, "shape": [n_out, n_in], "rank": r,
            "energy_retained": float((s[:r] ** 2).sum() / (s ** 2).sum()), "params_before": params_before,
            "params_after": r * (n_in + n_out) + (n_out if has_bias else 0)}


def summary(facts: list[dict], model_macs: int, skipped: list[str], finetune_info: dict) -> dict:
    """The method's facts and note (either framework). A dense layer's MACs per sample equal its weight count: the
    share of the model's MACs that factorizing can remove says how much latency to expect."""
    if not facts:
        raise ValueError(f"low_rank: no dense layer gets smaller at this rank (every one was left alone: {skipped})")
    before, after = sum(f["params_before"] for f in facts), sum(f["params_after"] for f in facts)
    share = sum(f["shape"][0] * f["shape"][1] for f in facts) / max(model_macs, 1)
    note = (f"{'+'.join(f['layer'] for f in facts)}: {after / before:.2f}x parameters; those layers do {share:.0%} "
            f"of the model's MACs, so expect at most a {1 / (1 - share * (1 - after / before)):.2f}x speedup")
    return {"factorized": facts, "left_dense": skipped, "factorized_params_before": before,
            "factorized_params_after": after, "factorized_params_ratio": after / before,
            "factorized_macs_share": share, "note": note, **finetune_info}


@register("low_rank", LowRank, "truncated SVD of dense layers")("torch")
def low_rank_torch(model, config: LowRank, ctx: Context):
    import torch
    from torch import nn

    from compression_pipeline.frameworks.pytorch_layers import FactorizedLinear

    fw = ctx.framework
    teacher, macs = fw.copy(model), fw.count_macs(model, ctx.spec)
    factorized = {n for n, m in model.named_modules() if isinstance(m, FactorizedLinear)}
    linears = {n: m for n, m in model.named_modules()
               if type(m) is nn.Linear and n.rpartition(".")[0] not in factorized}
    facts, skipped = [], []
    for name in select(list(linears), config.layers, "low_rank", "dense layers"):
        layer = linears[name]
        s = torch.linalg.svdvals(layer.weight.detach().float()).numpy()
        fact = plan(name, layer.out_features, layer.in_features, s, config,
                    sum(p.numel() for p in layer.parameters()), layer.bias is not None)
        if fact is None:
            skipped.append(name)
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, FactorizedLinear.from_linear(layer,
                                                                                                      fact["rank"]))
        facts.append(fact)
    _say(ctx, facts)
    info = summary(facts, macs, skipped, {})
    return model.eval(), {**info, **finetune(model, config, ctx, teacher if wants_teacher(config) else None)}


@register("low_rank", LowRank)("tensorflow")
def low_rank_keras(model, config: LowRank, ctx: Context):
    import keras

    from compression_pipeline.frameworks.keras_layers import FactorizedDense, all_layers, replace_layers

    fw = ctx.framework
    macs = fw.count_macs(model, ctx.spec)
    dense = {layer.name: layer for layer in all_layers(model) if type(layer) is keras.layers.Dense}
    facts, skipped, factors = [], [], {}
    for name in select(list(dense), config.layers, "low_rank", "dense layers"):
        layer = dense[name]
        kernel = np.asarray(layer.kernel, dtype=np.float64)  # Keras: (in x out), the transpose of PyTorch's weight
        u, s, vh = np.linalg.svd(kernel, full_matrices=False)
        n_in, n_out = kernel.shape
        fact = plan(name, n_out, n_in, s, config, layer.count_params(), layer.use_bias)
        if fact is None:
            skipped.append(name)
            continue
        r, root = fact["rank"], np.sqrt(s[:fact["rank"]])
        weights = [(u[:, :r] * root[None, :]).astype(np.float32), (root[:, None] * vh[:r]).astype(np.float32)]
        factors[name] = (r, weights + ([np.asarray(layer.bias)] if layer.use_bias else []))
        facts.append(fact)
    info = summary(facts, macs, skipped, {})

    def swap(layer):
        if layer.name not in factors or type(layer) is not keras.layers.Dense:
            return None
        r, weights = factors[layer.name]
        return FactorizedDense(layer.units, r, activation=layer.activation, use_bias=layer.use_bias,
                               name=layer.name), weights

    new = replace_layers(model, swap)
    _say(ctx, facts)
    return new, {**info, **finetune(new, config, ctx, model if wants_teacher(config) else None)}


def _say(ctx: Context, facts: list[dict]) -> None:
    ctx.say("low_rank: " + ", ".join(f"{f['layer']} rank {f['rank']} ({f['energy_retained']:.1%} energy)"
                                     for f in facts))
