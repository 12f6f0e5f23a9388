"""Weight sharing and the compact format, on tiny models."""

import numpy as np
import pytest

from compression_pipeline import compact
from compression_pipeline.frameworks import get
from compression_pipeline.methods import Context
from compression_pipeline.methods.share import (
    ShareWeights,
    cluster,
    compact_bytes,
    finetune_centroids,
    load_compact,
    shared_layers,
)


@pytest.fixture
def module(tiny_cnn):
    return tiny_cnn()


def _accuracy(model, splits, spec, part="val"):
    return float((get("torch").predict(model, splits[f"X_{part}"], spec).argmax(1) == splits[f"y_{part}"]).mean())


@pytest.mark.parametrize("bits, init", [(2, "linear"), (4, "density"), (5, "linear")])
def test_clustering_limits_distinct_values(module, bits, init):
    cluster(shared_layers(module), ShareWeights(bits=bits, init=init))
    for name, layer in shared_layers(module).items():
        assert len(np.unique(layer.weight.detach().numpy())) <= 2 ** bits, name


def test_zeros_stay_zero_and_centroid_finetune_keeps_sharing(module, digits_data):
    import torch

    splits, spec = digits_data
    with torch.no_grad():
        for layer in shared_layers(module).values():  # prune the smaller half of every layer
            w = layer.weight
            w[w.abs() < w.abs().median()] = 0
    zeros = {n: (l.weight == 0).clone() for n, l in shared_layers(module).items()}
    before = _accuracy(module, splits, spec)
    layers = shared_layers(module)
    clusters = cluster(layers, ShareWeights(bits=3))
    ctx = Context(framework=get("torch"), splits=splits, spec=spec)
    finetune_centroids(module, layers, clusters, ctx, epochs=1, lr=1e-3)
    after = _accuracy(module, splits, spec)
    for name, layer in shared_layers(module).items():
        w = layer.weight.detach()
        assert torch.equal(w == 0, zeros[name]), name  # zeros are zeros, and only they are
        assert len(torch.unique(w)) <= 2 ** 3, name
    assert after > before - 0.1  # fine-tuning the centroids does not wreck the model


def test_compact_format_round_trips_bit_for_bit(module):
    layers = shared_layers(module)
    cluster(layers, ShareWeights(bits=4))
    blob = compact_bytes(module, bits=4, tensors=list(layers))
    rebuilt = load_compact(blob)  # the module rebuilt from the model's source: no pickle, no spec of the zoo's
    shared = module
    for k, v in shared.state_dict().items():
        assert np.array_equal(v.numpy(), rebuilt.state_dict()[k].numpy()), k
    dense_bytes = sum(v.numel() * 4 for v in shared.state_dict().values())
    assert len(blob) < dense_bytes / 6  # 4-bit indices + codebooks, then entropy coded


def test_sparse_layers_store_only_nonzero_indices():
    rng = np.random.default_rng(0)
    w = rng.choice(np.array([-0.5, 0.25, 0.75], np.float32), size=(64, 64))
    w[rng.random(w.shape) < 0.9] = 0
    state = {"w": w, "b": rng.standard_normal(64).astype(np.float32)}
    blob = compact.encode(state, {"w": 2})
    back, _ = compact.decode(blob)
    assert np.array_equal(back["w"], w) and np.array_equal(back["b"], state["b"])
    assert len(blob) < 0.1 * w.nbytes


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"NOTCOMPACT" + b[10:], "bad magic"),
    (lambda b: b[: len(b) // 2], "truncated or corrupt"),
    (lambda b: b[:-40] + bytes(40), "truncated or corrupt"),
])
def test_a_corrupt_compact_file_is_refused(module, damage, message):
    layers = shared_layers(module)
    cluster(layers, ShareWeights(bits=3))
    blob = compact_bytes(module, bits=3, tensors=list(layers))
    with pytest.raises(compact.CompactFormatError, match=message):
        load_compact(damage(blob))


def test_too_many_values_for_the_bit_width_is_an_error():
    with pytest.raises(ValueError, match="more than 2\\^2"):
        compact.encode({"w": np.arange(10, dtype=np.float32)}, {"w": 2})
