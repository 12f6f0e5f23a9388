"""Each compression method on a tiny trained CNN: it runs, keeps the model's interface, makes its size claim
true, survives a save/load without pickle and an ONNX export with parity, and its config round-trips."""

import copy
import gzip

import numpy as np
import pytest
from pydantic import ValidationError

from compression_pipeline import onnx_tools, train, zoo
from compression_pipeline.data import as_images
from compression_pipeline.methods import TorchContext, get_method
from compression_pipeline.methods.low_rank import LowRank
from compression_pipeline.recipe import parse_recipe

SHAPE = (8, 8)


@pytest.fixture(scope="module")
def parent(tiny_cnn):
    """A width-8 CNN trained for 3 epochs (about 20k parameters, ~0.8 accuracy)."""
    return tiny_cnn()


@pytest.fixture
def ctx(digits_splits):
    return TorchContext(splits=digits_splits, image_shape=SHAPE, seed=0, threads=None)


def _apply(name, parent, ctx, **config):
    module, spec = parent
    method = get_method(name)
    return method.impls["torch"](copy.deepcopy(module), spec, method.config.model_validate(config), ctx)


def _logits(module, X):
    return train.predict(module, X, SHAPE)


def _round_trip_and_export(module, spec, tmp_path, X):
    """Save/load through safetensors + spec (no pickle), export to ONNX; return (loaded, onnx path, max diff)."""
    zoo.save_torch(module, spec, tmp_path / "m.safetensors")
    loaded, spec2 = zoo.load_torch(tmp_path / "m.safetensors")
    assert spec2 == spec and zoo.spec_of(loaded, spec) == spec
    assert np.array_equal(_logits(module, X), _logits(loaded, X))
    path = tmp_path / "m.onnx"
    onnx_tools.export_torch(loaded, spec2, path)
    out = onnx_tools.predict(onnx_tools.session(path, "cpu", 1), X, SHAPE)
    assert out.shape == (len(X), spec.num_classes)
    return loaded, path, float(np.abs(out - _logits(loaded, X)).max())


def _gz(path) -> int:
    return len(gzip.compress(path.read_bytes(), 9))


def test_prune_unstructured_reaches_its_sparsity_and_only_gzip_shrinks(parent, ctx, digits_splits, tmp_path):
    module, spec, info = _apply("prune_unstructured", parent, ctx, sparsity=0.7, finetune_epochs=1)
    assert spec == parent[1]  # same architecture: nothing is removed
    assert not any(k.endswith(("_orig", "_mask")) for k in module.state_dict())  # masks made permanent
    assert info["weight_sparsity"] == pytest.approx(0.7, abs=1e-3)  # still exact after fine-tuning
    params, nonzero = zoo.count_params(module)
    weights = sum(m.weight.numel() for m in module.modules() if hasattr(m, "weight") and m.weight is not None)
    assert params - nonzero >= round(0.7 * weights) - 1
    assert "no dense speedup" in info["note"] and info["finetune_epochs"] == 1
    X = digits_splits["X_test"]
    _, path, diff = _round_trip_and_export(module, spec, tmp_path, X)
    assert diff < 1e-4
    dense = tmp_path / "dense.onnx"
    onnx_tools.export_torch(parent[0], parent[1], dense)
    # The claim, both halves: the dense file does not shrink, its gzip does.
    assert abs(path.stat().st_size - dense.stat().st_size) < 0.02 * dense.stat().st_size
    assert _gz(path) < 0.6 * _gz(dense)
    assert onnx_tools.param_count(path) == (params, nonzero)


def test_prune_structured_removes_channels_and_keeps_the_classifier(parent, ctx, digits_splits, tmp_path):
    module, spec, info = _apply("prune_structured", parent, ctx, ratio=0.5, finetune_epochs=1,
                                finetune_teacher="parent")
    assert spec.channels == (4, 8, 8) and spec.hidden == 32 and spec.num_classes == 10
    assert info["channels_before"] == [8, 16, 16] and info["channels_after"] == [4, 8, 8]
    params, nonzero = zoo.count_params(module)
    base_params, _ = zoo.count_params(parent[0])
    assert params == nonzero and params <= 0.3 * base_params  # halving both sides of every layer: ~1/4
    assert zoo.count_macs(spec) <= 0.3 * zoo.count_macs(parent[1])
    X = digits_splits["X_test"]
    loaded, path, diff = _round_trip_and_export(module, spec, tmp_path, X)
    assert diff < 1e-4
    assert onnx_tools.param_count(path)[0] == params
    assert train.accuracy(_logits(loaded, X), digits_splits["y_test"]) > 0.3  # fine-tuned, not broken


def test_prune_structured_keeps_the_layers_it_is_told_to(parent, ctx):
    _, spec, _ = _apply("prune_structured", parent, ctx, ratio=0.5, keep=["conv1", "fc1"], importance="l1")
    assert spec.channels == (8, 8, 8) and spec.hidden == 64


def test_low_rank_factorizes_fc1_exactly_as_the_truncated_svd(parent, ctx, digits_splits, tmp_path):
    import torch

    module, spec, info = _apply("low_rank", parent, ctx, rank=6)
    assert spec.linear_ranks == (6, None)
    (fact,) = info["factorized"]
    n_out, n_in = fact["shape"]
    assert (n_out, n_in) == (64, 256) and fact["params_after"] == 6 * (n_in + n_out) + n_out
    assert info["factorized_params_ratio"] == pytest.approx(fact["params_after"] / (n_in * n_out + n_out))
    assert info["factorized_params_ratio"] < 0.15
    # Without fine-tuning, the model is the parent with fc1's weight replaced by its best rank-6 approximation.
    reference = copy.deepcopy(parent[0])
    u, s, vh = torch.linalg.svd(reference[9].weight.detach(), full_matrices=False)
    with torch.no_grad():
        reference[9].weight.copy_(u[:, :6] @ torch.diag(s[:6]) @ vh[:6])
    X = digits_splits["X_test"]
    assert np.abs(_logits(module, X) - _logits(reference, X)).max() < 1e-4
    _, _, diff = _round_trip_and_export(module, spec, tmp_path, X)
    assert diff < 1e-4


def test_low_rank_by_energy_and_fine_tuned(parent, ctx, digits_splits):
    _module, spec, info = _apply("low_rank", parent, ctx, energy=0.5, finetune_epochs=1, finetune_teacher="parent")
    (fact,) = info["factorized"]
    assert fact["energy_retained"] >= 0.5 and spec.linear_ranks[0] == fact["rank"]
    # the smallest such rank: one fewer would not retain the energy
    w = parent[0][9].weight.detach()
    import torch

    s = torch.linalg.svdvals(w)
    assert float((s[: fact["rank"] - 1] ** 2).sum() / (s ** 2).sum()) < 0.5
    assert info["finetune_epochs"] == 1 and len(info["finetune_history"]) == 1


def test_low_rank_refuses_a_rank_that_saves_nothing_and_bad_configs(parent, ctx):
    with pytest.raises(ValueError, match="would not reduce"):
        _apply("low_rank", parent, ctx, rank=60)
    for bad in ({}, {"rank": 4, "energy": 0.9}, {"energy": 1.5}, {"rank": 4, "layers": ["conv1"]}):
        with pytest.raises(ValidationError):
            LowRank.model_validate(bad)


def test_a_factorized_model_can_be_pruned_and_reloaded(parent, ctx, digits_splits, tmp_path):
    module, spec, _ = _apply("low_rank", parent, ctx, rank=8)
    method = get_method("prune_structured")
    pruned, pspec, _ = method.impls["torch"](module, spec, method.config(ratio=0.5), ctx)
    assert pspec.linear_ranks == (4, None) and pspec.channels == (4, 8, 8)
    _, _, diff = _round_trip_and_export(pruned, pspec, tmp_path, digits_splits["X_test"][:50])
    assert diff < 1e-4


def test_distill_trains_a_smaller_student_and_the_same_student_alone(parent, ctx, digits_splits, tmp_path):
    module, spec, info = _apply("distill", parent, ctx, student={"width": 4}, epochs=2, lr=3e-3)
    assert spec == zoo.cnn_spec(4)
    assert info["student_params"] == zoo.count_params(module)[0] <= 0.3 * info["teacher_params"]
    ab = info["ablation"]
    assert set(ab) >= {"distilled_accuracy", "student_alone_accuracy", "gain", "epochs", "seed"}
    X, y = digits_splits["X_test"], digits_splits["y_test"]
    assert ab["distilled_accuracy"] == train.accuracy(_logits(module, X), y)
    assert ab["gain"] == pytest.approx(ab["distilled_accuracy"] - ab["student_alone_accuracy"])
    assert len(info["history"]) == len(ab["alone_history"]) == 2
    assert "trained alone" in info["note"]
    _, _, diff = _round_trip_and_export(module, spec, tmp_path, X)
    assert diff < 1e-4


def test_fp16_halves_the_file_keeps_float32_io_and_runs_on_cpu(parent, digits_splits, tmp_path):
    import onnx

    src, dst = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    onnx_tools.export_torch(*parent, src)
    method = get_method("fp16")
    info = method.impls["onnx"](src, dst, method.config(), None)
    assert info["float16_initializers"] > 0 and "no speedup" in info["note"]
    model = onnx.load(str(dst))
    onnx.checker.check_model(model)
    assert model.ir_version <= onnx_tools.IR_VERSION
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [f32, f32]
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    X = digits_splits["X_test"]
    sess = onnx_tools.session(dst, "cpu", 1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    out, ref = onnx_tools.predict(sess, X, SHAPE), onnx_tools.predict(onnx_tools.session(src), X, SHAPE)
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 0.05
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.99


def test_fp16_refuses_an_already_quantized_model(parent, digits_splits, tmp_path):
    src, q = tmp_path / "fp32.onnx", tmp_path / "q.onnx"
    onnx_tools.export_torch(*parent, src)
    quant = get_method("quantize_static")
    quant.impls["onnx"](src, q, quant.config(samples=32), as_images(digits_splits["X_train"], SHAPE))
    fp16 = get_method("fp16")
    with pytest.raises(ValueError, match="already quantized"):
        fp16.impls["onnx"](q, tmp_path / "h.onnx", fp16.config(), None)


def test_macs_are_the_conv_and_linear_multiply_accumulates(parent):
    _module, spec = parent
    c0, c1, c2 = spec.channels
    expected = (c0 * 1 * 9 * 64 + c1 * c0 * 9 * 64 + c2 * c1 * 9 * 16 + 256 * 64 + 64 * 10)
    assert zoo.count_macs(spec) == expected
    factorized = spec.model_validate({**spec.model_dump(), "linear_ranks": (8, None)})
    assert zoo.count_macs(factorized) == expected - 256 * 64 + 8 * (256 + 64)


CONFIGS = {
    "prune_unstructured": {"sparsity": 0.8, "finetune_epochs": 3, "finetune_teacher": "parent"},
    "prune_structured": {"ratio": 0.5, "importance": "l1", "keep": ["conv1"], "finetune_epochs": 2},
    "low_rank": {"rank": 16, "layers": ["fc1", "fc2"], "finetune_lr": 0.0005},
    "distill": {"student": {"arch": "cnn", "width": 16}, "temperature": 2.0, "alpha": 0.5, "epochs": 5},
    "fp16": {"keep_io_types": True, "op_block_list": ["Softmax"]},
}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_config_round_trips_through_a_recipe(tiny_recipe_dict, method):
    tiny_recipe_dict["variants"] = {"v": {"from": "baseline", "method": method, **CONFIGS[method]}}
    recipe = parse_recipe(tiny_recipe_dict)
    config = recipe.variants["v"].config
    dumped = config.model_dump(mode="json")
    assert type(config).model_validate(dumped) == config
    for key, value in CONFIGS[method].items():
        assert dumped[key] == (value if not isinstance(value, dict) else {**dumped[key], **value})
    # and back into a recipe: the same validated variant, the same code version
    tiny_recipe_dict["variants"] = {"v": {"from": "baseline", "method": method, **dumped}}
    again = parse_recipe(tiny_recipe_dict)
    assert again.variants["v"].config == config
    assert again.entry_version("variants.v") == recipe.entry_version("variants.v")
