"""The Keras (``tensorflow`` form) compression methods on a tiny trained Keras CNN: each reaches its claim, keeps the
model rebuildable from its spec through a safe ``.keras`` round trip, and reports the facts of its PyTorch twin.
TensorFlow training is not bit-reproducible: accuracies are checked against ranges."""

import numpy as np
import pytest

from compression_pipeline import keras_backend as K
from compression_pipeline import onnx_tools, zoo
from compression_pipeline.methods import Context, get_method

SHAPE = (8, 8)


@pytest.fixture(scope="module")
def trained(digits_splits):
    """A width-8 Keras CNN trained 3 epochs (about 20k parameters); each call returns a fresh copy."""
    spec = zoo.cnn_spec(8)
    model = K.build_keras(spec, seed=0)
    K.train_keras(model, digits_splits, SHAPE, epochs=3, lr=3e-3, seed=0)

    def fresh():
        return K.copy_keras(model), spec

    return fresh


@pytest.fixture
def ctx(digits_splits):
    return Context(splits=digits_splits, image_shape=SHAPE, seed=0)


def _apply(name, model, spec, ctx, form="tensorflow", **config):
    method = get_method(name)
    return method.impls[form](model, spec, method.config.model_validate(config), ctx)


def _test_accuracy(model, splits):
    return K.accuracy(K.predict_keras(model, splits["X_test"], SHAPE), splits["y_test"])


def _assert_rebuilds(model, spec, tmp_path, X):
    """Saved as .keras, loaded with safe_mode, and rebuilt from the returned spec: the same model each time."""
    K.save_keras(model, tmp_path / "m.keras")
    loaded = K.load_keras(tmp_path / "m.keras")
    assert K.spec_of(loaded, spec) == spec
    rebuilt = K.build_keras(spec)
    rebuilt.set_weights(loaded.get_weights())
    ref = K.predict_keras(model, X, SHAPE)
    assert np.array_equal(K.predict_keras(loaded, X, SHAPE), ref)
    assert np.abs(K.predict_keras(rebuilt, X, SHAPE) - ref).max() < 1e-6


def test_registry_has_keras_twins_only_where_written():
    for name in ("prune_unstructured", "low_rank", "distill"):
        assert {"torch", "tensorflow"} <= set(get_method(name).impls)
    for name in ("prune_structured", "share_weights"):
        assert "tensorflow" not in get_method(name).impls


def test_prune_reaches_its_sparsity_globally_and_keeps_it_through_finetuning(trained, ctx, digits_splits, tmp_path):
    model, spec = trained()
    before = {layer.name: np.abs(np.asarray(layer.kernel)) for layer in K.weight_layers(model)}
    parent_acc = _test_accuracy(model, digits_splits)
    pruned, new_spec, info = _apply("prune_unstructured", model, spec, ctx, sparsity=0.7, finetune_epochs=2,
                                    finetune_teacher="parent")
    assert new_spec == spec
    kernels = {layer.name: np.asarray(layer.kernel) for layer in K.weight_layers(pruned)}
    total = sum(k.size for k in kernels.values())
    zeros = sum(int((k == 0).sum()) for k in kernels.values())
    assert info["weight_sparsity"] == pytest.approx(zeros / total) == pytest.approx(0.7, abs=1e-4)
    # Global ranking: every zeroed weight was no larger than every kept one, whatever its layer.
    cut = [before[n][kernels[n] == 0] for n in kernels]
    kept = [before[n][kernels[n] != 0] for n in kernels]
    assert max(c.max() for c in cut) <= min(k.min() for k in kept)
    assert "no dense speedup" in info["note"]
    assert info["finetune_epochs"] == 2 and info["finetune_teacher"] == "parent"
    assert len(info["finetune_history"]) == 2
    assert _test_accuracy(pruned, digits_splits) > parent_acc - 0.25
    _assert_rebuilds(pruned, new_spec, tmp_path, digits_splits["X_test"][:64])


def test_low_rank_is_the_rank_r_approximation_with_fewer_parameters(trained, ctx, digits_splits, tmp_path):
    model, spec = trained()
    X = digits_splits["X_test"]
    kernel, bias = K.dense_kernel(K.named_layers(model)["fc1"])
    u, s, vh = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
    expected = K.copy_keras(model)  # the parent with fc1's kernel replaced by its best rank-4 approximation
    K.named_layers(expected)["fc1"].set_weights([((u[:, :4] * s[:4]) @ vh[:4]).astype(np.float32), bias])
    new, new_spec, info = _apply("low_rank", model, spec, ctx, rank=4)
    assert new_spec.linear_ranks == (4, None) and info["finetune_epochs"] == 0
    n_in, n_out = kernel.shape
    fact = info["factorized"][0]
    assert fact["shape"] == [n_out, n_in] and fact["rank"] == 4
    assert fact["params_before"] == n_in * n_out + n_out and fact["params_after"] == 4 * (n_in + n_out) + n_out
    assert K.count_params(model)[0] - K.count_params(new)[0] == fact["params_before"] - fact["params_after"]
    assert K.count_params(new)[0] == zoo.count_params(zoo.build_torch(new_spec))[0]
    assert np.abs(K.predict_keras(new, X, SHAPE) - K.predict_keras(expected, X, SHAPE)).max() < 1e-4
    assert 0 < info["factorized_macs_share"] < 1 and "speedup" in info["note"]
    _assert_rebuilds(new, new_spec, tmp_path, X[:64])


def test_low_rank_energy_picks_the_smallest_rank_and_refuses_a_useless_one(trained, ctx):
    model, spec = trained()
    s = np.linalg.svd(K.dense_kernel(K.named_layers(model)["fc1"])[0].astype(np.float64), compute_uv=False)
    share = np.cumsum(s ** 2) / (s ** 2).sum()
    rank = int(np.argmax(share >= 0.8)) + 1
    _, new_spec, info = _apply("low_rank", model, spec, ctx, energy=0.8)
    assert new_spec.linear_ranks[0] == rank and share[rank - 2] < 0.8 <= info["factorized"][0]["energy_retained"]
    with pytest.raises(ValueError, match="would not reduce its parameters"):
        _apply("low_rank", trained()[0], spec, ctx, rank=60)


def test_low_rank_finetunes_a_factorized_model_and_refactorizes_it(trained, ctx, digits_splits, tmp_path):
    model, spec = trained()
    new, new_spec, info = _apply("low_rank", model, spec, ctx, rank=8, layers=["fc1", "fc2"], finetune_epochs=2,
                                 finetune_teacher="parent")
    assert new_spec.linear_ranks == (8, 8) and len(info["finetune_history"]) == 2
    assert _test_accuracy(new, digits_splits) > 0.5
    _assert_rebuilds(new, new_spec, tmp_path, digits_splits["X_test"][:64])
    K.export_onnx(new, tmp_path / "m.onnx")  # the factorized layers (a Dense without bias) export with parity
    X = digits_splits["X_test"]
    out = onnx_tools.predict(onnx_tools.session(tmp_path / "m.onnx", "cpu", 1), X, SHAPE)
    assert np.abs(out - K.predict_keras(new, X, SHAPE)).max() < 1e-4
    # A factorized parent is factorized again from its product: rank 4 of the rank-8 fc1.
    _again, again_spec, again_info = _apply("low_rank", new, new_spec, ctx, rank=4)
    assert again_spec.linear_ranks == (4, 8)
    assert again_info["factorized"][0]["params_before"] == info["factorized"][0]["params_after"]


def test_distill_reports_the_ablation_from_identical_initial_weights(trained, ctx, digits_splits, tmp_path):
    model, spec = trained()
    student, s_spec, info = _apply("distill", model, spec, ctx, student={"width": 4}, epochs=3, lr=3e-3)
    assert s_spec == zoo.cnn_spec(4) and K.spec_of(student, s_spec) == s_spec
    ab = info["ablation"]
    assert ab["runtime"] == "tensorflow" and ab["epochs"] == 3 and len(ab["alone_history"]) == 3
    assert 0.3 < ab["distilled_accuracy"] <= 1 and 0.3 < ab["student_alone_accuracy"] <= 1
    assert ab["gain"] == pytest.approx(ab["distilled_accuracy"] - ab["student_alone_accuracy"])
    assert ab["distilled_accuracy"] == pytest.approx(_test_accuracy(student, digits_splits))
    assert info["student_params"] == zoo.count_params(zoo.build_torch(s_spec))[0]
    assert info["student_params_ratio"] == pytest.approx(info["student_params"] / K.count_params(model)[0])
    _assert_rebuilds(student, s_spec, tmp_path, digits_splits["X_test"][:64])  # trained with the KD loss closure


def test_the_facts_have_the_keys_of_the_pytorch_twins(trained, tiny_cnn, ctx):
    configs = {"prune_unstructured": {"sparsity": 0.5, "finetune_epochs": 1},
               "low_rank": {"rank": 4, "finetune_epochs": 1},
               "distill": {"student": {"width": 2}, "epochs": 1}}
    for name, config in configs.items():
        keras_info = _apply(name, *trained(), ctx, **config)[2]
        torch_info = _apply(name, *tiny_cnn(), ctx, form="torch", **config)[2]
        assert set(keras_info) == set(torch_info), name
        if name == "distill":
            assert set(keras_info["ablation"]) == set(torch_info["ablation"])
        if name == "low_rank":
            assert set(keras_info["factorized"][0]) == set(torch_info["factorized"][0])
            assert keras_info["factorized_macs_share"] == pytest.approx(torch_info["factorized_macs_share"])
