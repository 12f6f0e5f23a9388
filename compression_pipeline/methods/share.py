"""Weight sharing (Deep Compression): per-layer k-means of the weights into at most 2^b shared values.

Zeros left by pruning stay zero and take no cluster. Centroids start evenly spaced over the weight range
(``linear``, the initialisation Han et al. found best) or at quantiles of the weights (``density``).
Optional fine-tuning trains the centroids only: each weight reads its centroid, so the gradients of all the
weights of a cluster add up in that centroid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from compression_pipeline.methods.finetune import select
from compression_pipeline.methods.registry import Context, MethodConfig, register


class ShareWeights(MethodConfig):
    bits: int = Field(5, ge=2, le=8, description="2^bits shared values per layer (zero included when pruned)")
    init: Literal["linear", "density"] = "linear"
    finetune_epochs: int = Field(0, ge=0, description="epochs of centroid-only fine-tuning")
    finetune_lr: float = Field(1e-3, gt=0)
    max_iter: int = Field(30, ge=1, description="k-means iterations")
    layers: list[str] | None = Field(None, min_length=1, description="patterns of module names whose weights are "
                                     "shared, e.g. ['layer*', 'fc']; every convolution and dense layer if unset")


SHARE_NOTE = ("storage result: the dense ONNX file still holds float32 weights; the compact format (codebooks + packed "
              "indices, zlib) is what shrinks")


@register("share_weights", ShareWeights, "per-layer k-means weight sharing (Deep Compression)")("torch")
def share_weights(module, config: ShareWeights, ctx: Context):
    layers = shared_layers(module, config.layers)
    clusters = cluster(layers, config)
    training = None
    if config.finetune_epochs:
        training = finetune_centroids(module, layers, clusters, ctx, config.finetune_epochs, config.finetune_lr)
    distinct = {name: len(np.unique(layer.weight.detach().cpu().numpy())) for name, layer in layers.items()}
    return module, {"shared_bits": config.bits, "shared_tensors": sorted(layers), "distinct_values": distinct,
                    "note": SHARE_NOTE, "training": training}


def _kmeans_1d(values: np.ndarray, k: int, init: str, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    k = min(k, len(np.unique(values)))
    if init == "linear":
        start = np.linspace(values.min(), values.max(), k)
    else:
        start = np.quantile(values, (np.arange(k) + 0.5) / k)
    km = KMeans(n_clusters=k, init=start.reshape(-1, 1), n_init=1, max_iter=max_iter).fit(values.reshape(-1, 1))
    return km.cluster_centers_.reshape(-1).astype(np.float32), km.labels_.astype(np.int64)


def shared_layers(module, patterns: list[str] | None = None) -> dict[str, object]:
    """The layers whose weights are shared, by weight name (``<module>.weight``): every convolution and dense layer
    (or those ``patterns`` select); biases and normalization stay float."""
    from torch import nn

    layers = {n: m for n, m in module.named_modules()
              if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight is not None}
    return {f"{n}.weight": layers[n] for n in select(list(layers), patterns, "share_weights", "modules")}


def cluster(layers: dict[str, object], config: ShareWeights) -> dict[str, tuple]:
    """Replace each shared weight with its centroids; returns {tensor name: (centroids, labels, nonzero mask)}."""
    import torch

    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach().cpu().numpy().reshape(-1)
        mask = w != 0
        k = 2 ** config.bits - (0 if mask.all() else 1)  # a pruned layer spends one of its 2^b values on zero
        centroids, labels = _kmeans_1d(w[mask], k, config.init, config.max_iter)
        new = np.zeros_like(w)
        new[mask] = centroids[labels]
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(new.reshape(layer.weight.shape)))
        out[name] = (centroids, labels, mask)
    return out


def finetune_centroids(module, layers: dict[str, object], clusters: dict[str, tuple], ctx: Context, epochs: int,
                       lr: float, batch_size: int = 64) -> dict:
    """Train only the centroids: weight = centroids[labels] at the nonzero positions, zero elsewhere. Returns how
    it was trained (``pytorch_train.History.training``)."""
    import torch
    from torch.nn.utils import parametrize

    from compression_pipeline.frameworks import pytorch
    from compression_pipeline.frameworks.base import Fit

    class Shared(torch.nn.Module):
        def __init__(self, centroids, labels, mask, shape):
            super().__init__()
            self.centroids = torch.nn.Parameter(torch.from_numpy(centroids.copy()))
            self.register_buffer("labels", torch.from_numpy(labels))
            self.register_buffer("positions", torch.from_numpy(np.flatnonzero(mask)))
            self.numel, self.shape = int(mask.size), tuple(shape)

        def forward(self, _original):
            flat = torch.zeros(self.numel, dtype=self.centroids.dtype, device=self.centroids.device)
            return flat.index_put((self.positions,), self.centroids[self.labels]).reshape(self.shape)

    for name, (c, lab, mask) in clusters.items():
        layer = layers[name]
        parametrize.register_parametrization(layer, "weight", Shared(c, lab, mask, layer.weight.shape), unsafe=True)
    params = [p for n, p in module.named_parameters() if n.endswith(("centroids", "bias"))]
    # The one training loop, on the centroids and biases only, at a constant rate, the last epoch kept.
    history = pytorch.train(module, ctx.splits, ctx.spec, Fit(epochs=epochs, batch_size=batch_size, lr=lr,
                                                             seed=ctx.seed, setup=ctx.training),
                            params=lambda _module: params, schedule=False, keep_best=False)
    for name in clusters:
        parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=True)
    return history.training


def compact_bytes(module, bits: int | None = None, tensors: list[str] = ()) -> bytes:
    """The model in the compact format (codebooks + packed indices + sparse bitmaps, zlib-coded): the ``tensors``
    that ``share_weights`` shared at ``bits`` as indices, every other tensor raw, plus what rebuilds the module
    (frameworks/pytorch_io). Any model: one nothing was shared in is stored raw."""
    from compression_pipeline import compact
    from compression_pipeline.frameworks import pytorch_io

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    return compact.encode(state, {name: bits for name in tensors} if bits else {}, pytorch_io.metadata(module))


def load_compact(blob: bytes):
    """Rebuild the dense module from compact bytes. Raises CompactFormatError when corrupt."""
    import torch

    from compression_pipeline import compact
    from compression_pipeline.frameworks import pytorch_io

    state, meta = compact.decode(blob)
    return pytorch_io.rebuild(meta, {k: torch.from_numpy(v) for k, v in state.items()}, "compact model")
