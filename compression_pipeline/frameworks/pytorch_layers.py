"""Layer classes a compression method may put into a PyTorch model in place of one of its modules.

A stored model is rebuilt from its source, then these replacements are applied (``pytorch_io``): only the classes in
``REPLACEMENTS`` are accepted, each constructed from the JSON arguments its ``init_args()`` returned when the model
was saved (``nn.Identity`` takes none). Nothing else in a model file can name a class to construct.
"""

from __future__ import annotations

import torch
from torch import nn


class FactorizedLinear(nn.Module):
    """A Linear layer whose (out x in) weight W is stored as a rank-r product B A: ``first`` (in -> r, no bias) then
    ``second`` (r -> out, with the original bias); r (in + out) weights instead of in x out. Two plain Linear
    children, so structured pruning, MAC counting and ONNX export see ordinary dense layers."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    # Read from the children (not stored): a pruner that narrows a child leaves nothing stale here.
    in_features = property(lambda self: self.first.in_features)
    out_features = property(lambda self: self.second.out_features)
    rank = property(lambda self: self.first.out_features)

    def forward(self, x):
        return self.second(self.first(x))

    def init_args(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "bias": self.second.bias is not None}

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> FactorizedLinear:
        """The best rank-``rank`` approximation of ``linear`` (truncated SVD, sqrt of the singular values on each
        factor so both are equally scaled)."""
        weight = linear.weight.detach().float()
        if not 1 <= rank <= min(weight.shape):
            raise ValueError(f"rank {rank} of a {tuple(weight.shape)} weight: 1..{min(weight.shape)} is allowed")
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        root = s[:rank].sqrt()
        out = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        with torch.no_grad():
            out.first.weight.copy_(root[:, None] * vh[:rank])
            out.second.weight.copy_(u[:, :rank] * root[None, :])
            if linear.bias is not None:
                out.second.bias.copy_(linear.bias)
        return out.to(device=linear.weight.device, dtype=linear.weight.dtype)


# The classes a stored model may put in place of a module, by class name.
REPLACEMENTS: dict[str, type[nn.Module]] = {"FactorizedLinear": FactorizedLinear, "Identity": nn.Identity}
