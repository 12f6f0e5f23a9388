"""Each compression method on a tiny trained model, in every framework it supports: it runs, keeps the model's
interface, makes its size claim true, survives a save/load without pickle and an ONNX export with parity, and its
config round-trips. The same tests run on the zoo's CNN in PyTorch and in Keras (`framework` fixture), and the
PyTorch-only methods also on a torchvision ResNet (any architecture, not the zoo's layer names)."""

import gzip

import numpy as np
import pytest
from pydantic import ValidationError

from compression_pipeline import onnx_tools
from compression_pipeline.data import feed
from compression_pipeline.frameworks import get
from compression_pipeline.methods import Context, get_method
from compression_pipeline.methods.low_rank import LowRank
from compression_pipeline.recipe import parse_recipe
from compression_pipeline.types import ImportModel, ZooModel

from conftest import fit


@pytest.fixture(scope="module", params=["torch", "tensorflow"])
def framework(request):
    return request.param


@pytest.fixture(scope="module")
def trained(framework, digits_data):
    """A width-8 zoo CNN trained 3 epochs on digits in ``framework`` (about 20k parameters, ~0.8 accuracy)."""
    parts, spec = digits_data
    fw = get(framework)
    fw.set_threads(None)
    model = fw.build(ZooModel(arch="cnn", width=8), spec, seed=0)
    fw.fit(model, parts, spec, fit(3))
    return fw, model


@pytest.fixture
def ctx(trained, digits_data):
    parts, spec = digits_data
    return Context(framework=trained[0], splits=parts, spec=spec, seed=0)


def _apply(name, trained, ctx, **config):
    fw, model = trained
    method = get_method(name)
    return method.impls[fw.name](fw.copy(model), method.config.model_validate(config), ctx)


def _round_trip_and_export(fw, model, spec, tmp_path, X):
    """Save/load (no pickle), export to ONNX; return (loaded, onnx path, max |ONNX - framework|)."""
    path = tmp_path / f"m.{fw.suffix}"
    fw.save(model, path)
    loaded = fw.load(path)
    assert np.array_equal(fw.predict(model, X, spec), fw.predict(loaded, X, spec))
    onnx_path = tmp_path / "m.onnx"
    layout = fw.export_onnx(loaded, onnx_path, spec)
    out = onnx_tools.predict(onnx_tools.session(onnx_path, "cpu", 1), feed(X, spec, layout))
    assert out.shape == (len(X), spec.num_classes)
    return loaded, onnx_path, float(np.abs(out - fw.predict(loaded, X, spec)).max())


def _gz(path) -> int:
    return len(gzip.compress(path.read_bytes(), 9))


def test_prune_unstructured_reaches_its_sparsity_and_only_gzip_shrinks(trained, ctx, digits_data, tmp_path):
    fw, parent = trained
    parts, spec = digits_data
    model, info = _apply("prune_unstructured", trained, ctx, sparsity=0.7, finetune_epochs=1)
    assert info["weight_sparsity"] == pytest.approx(0.7, abs=1e-3)  # still exact after fine-tuning
    params, nonzero = fw.count_params(model)
    assert params == fw.count_params(parent)[0]  # nothing is removed
    kernels = sum(k.size for k in fw.kernels(model).values())
    assert params - nonzero >= round(0.7 * kernels) - 1
    assert "no dense speedup" in info["note"] and info["finetune_epochs"] == 1
    X = parts["X_test"]
    _, path, diff = _round_trip_and_export(fw, model, spec, tmp_path, X)
    assert diff < 1e-4
    dense = tmp_path / "dense.onnx"
    fw.export_onnx(parent, dense, spec)
    # The claim, both halves: the dense file does not shrink, its gzip does.
    assert abs(path.stat().st_size - dense.stat().st_size) < 0.02 * dense.stat().st_size
    assert _gz(path) < 0.6 * _gz(dense)
    assert onnx_tools.param_count(path) == (params, nonzero)


def test_prune_unstructured_on_the_layers_named(trained, ctx):
    fw, _ = trained
    model, info = _apply("prune_unstructured", trained, ctx, sparsity=0.5, layers=["fc*"])
    zeros = {name: float((k == 0).mean()) for name, k in fw.kernels(model).items()}
    assert info["pruned_kernels"] == 2
    assert all(v == 0 for n, v in zeros.items() if n.startswith("conv")) and zeros
    with pytest.raises(ValueError, match=r"\['dense\*'\] match none of the model's kernels"):
        _apply("prune_unstructured", trained, ctx, sparsity=0.5, layers=["dense*"])


def test_low_rank_factorizes_the_named_layer_as_the_truncated_svd(trained, ctx, digits_data, tmp_path):
    fw, parent = trained
    parts, spec = digits_data
    model, info = _apply("low_rank", trained, ctx, rank=6, layers=["fc1"])
    (fact,) = info["factorized"]
    n_out, n_in = fact["shape"]
    assert (n_out, n_in) == (64, 256) and fact["params_after"] == 6 * (n_in + n_out) + n_out
    assert info["factorized_params_ratio"] == pytest.approx(fact["params_after"] / (n_in * n_out + n_out))
    assert fw.count_params(model)[0] == fw.count_params(parent)[0] - (n_in * n_out + n_out) + fact["params_after"]
    assert fw.count_macs(model, spec) == fw.count_macs(parent, spec) - n_in * n_out + 6 * (n_in + n_out)
    X = parts["X_test"]
    # Without fine-tuning, the model computes the parent with fc1's weight replaced by its best rank-6
    # approximation: the logits stay close, not equal.
    assert np.abs(fw.predict(model, X, spec) - fw.predict(parent, X, spec)).max() < 5.0
    _, _, diff = _round_trip_and_export(fw, model, spec, tmp_path, X)
    assert diff < 1e-4


def test_low_rank_by_energy_and_fine_tuned(trained, ctx):
    _, info = _apply("low_rank", trained, ctx, energy=0.5, layers=["fc1"], finetune_epochs=1,
                     finetune_teacher="parent")
    (fact,) = info["factorized"]
    assert fact["energy_retained"] >= 0.5
    assert info["finetune_epochs"] == 1 and len(info["finetune_history"]) == 1


def test_low_rank_without_layers_takes_every_dense_layer_it_makes_smaller(trained, ctx):
    _, info = _apply("low_rank", trained, ctx, rank=9)
    # fc1 (256 -> 64) gets smaller at rank 9; the classifier (64 -> 10: 640 weights, 9 x 74 = 666 factorized)
    # would not, and is left dense
    assert [f["layer"] for f in info["factorized"]] == ["fc1"] and info["left_dense"] == ["fc2"]


def test_low_rank_refuses_a_rank_that_saves_nothing_and_bad_configs(trained, ctx):
    with pytest.raises(ValueError, match="would not reduce"):
        _apply("low_rank", trained, ctx, rank=60, layers=["fc1"])
    for bad in ({}, {"rank": 4, "energy": 0.9}, {"energy": 1.5}, {"rank": 4, "layers": []}):
        with pytest.raises(ValidationError):
            LowRank.model_validate(bad)


def test_distill_trains_a_smaller_student_and_the_same_student_alone(trained, ctx, digits_data, tmp_path):
    fw, _ = trained
    parts, spec = digits_data
    model, info = _apply("distill", trained, ctx, student={"arch": "cnn", "width": 4}, epochs=2, lr=3e-3)
    assert info["student_params"] == fw.count_params(model)[0] <= 0.3 * info["teacher_params"]
    ab = info["ablation"]
    assert set(ab) >= {"distilled_accuracy", "student_alone_accuracy", "gain", "epochs", "seed"}
    X, y = parts["X_test"], parts["y_test"]
    assert ab["distilled_accuracy"] == pytest.approx(float((fw.predict(model, X, spec).argmax(1) == y).mean()))
    assert ab["gain"] == pytest.approx(ab["distilled_accuracy"] - ab["student_alone_accuracy"])
    assert len(info["history"]) == len(ab["alone_history"]) == 2 and ab["runtime"] == fw.name
    assert "trained alone" in info["note"]
    _, _, diff = _round_trip_and_export(fw, model, spec, tmp_path, X)
    assert diff < 1e-4


def test_a_student_of_another_framework_is_refused(trained, ctx):
    other = "tensorflow" if trained[0].name == "torch" else "torch"
    student = {"source": "import", "builder": "m:f", "framework": other}
    with pytest.raises(ValueError, match="a student is trained in its teacher's framework"):
        _apply("distill", trained, ctx, student=student, epochs=1)


def test_registry_has_keras_implementations_only_where_written():
    for name in ("prune_unstructured", "low_rank", "distill"):
        assert {"torch", "tensorflow"} <= set(get_method(name).impls)
    for name in ("prune_structured", "share_weights"):
        assert "tensorflow" not in get_method(name).impls


def test_the_facts_are_the_same_in_both_frameworks(digits_data):
    """A report compares frameworks on equal terms: each method records the same facts in each."""
    parts, spec = digits_data
    configs = {"prune_unstructured": {"sparsity": 0.5, "finetune_epochs": 1},
               "low_rank": {"rank": 4, "layers": ["fc1"], "finetune_epochs": 1},
               "distill": {"student": {"arch": "cnn", "width": 2}, "epochs": 1}}
    facts = {}
    for framework in ("torch", "tensorflow"):
        fw = get(framework)
        model = fw.build(ZooModel(arch="cnn", width=4), spec, seed=0)
        ctx = Context(framework=fw, splits=parts, spec=spec)
        facts[framework] = {name: _apply(name, (fw, model), ctx, **c)[1] for name, c in configs.items()}
    for name in configs:
        t, k = facts["torch"][name], facts["tensorflow"][name]
        assert set(t) == set(k), name
    assert set(facts["torch"]["distill"]["ablation"]) == set(facts["tensorflow"]["distill"]["ablation"])
    low_t, low_k = facts["torch"]["low_rank"], facts["tensorflow"]["low_rank"]
    assert low_t["factorized"][0]["shape"] == low_k["factorized"][0]["shape"]
    assert low_t["factorized_macs_share"] == pytest.approx(low_k["factorized_macs_share"])


# --- PyTorch only: channel pruning and weight sharing, on the zoo CNN and on a torchvision ResNet -----------------
@pytest.fixture(scope="module")
def torch_cnn(tiny_cnn):
    return get("torch"), tiny_cnn()


def test_prune_structured_removes_channels_and_keeps_the_classifier(torch_cnn, digits_data, tmp_path):
    fw, parent = torch_cnn
    parts, spec = digits_data
    ctx = Context(framework=fw, splits=parts, spec=spec)
    model, info = _apply("prune_structured", torch_cnn, ctx, ratio=0.5, finetune_epochs=1, finetune_teacher="parent")
    assert [model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels] == [4, 8, 8]
    assert model.fc1.out_features == 32 and model.fc2.out_features == 10 and info["classifier"] == "fc2"
    assert info["pruned_layers"]["conv1"] == [8, 4]
    params, nonzero = fw.count_params(model)
    assert params == nonzero and params <= 0.3 * fw.count_params(parent)[0]  # halving both sides: ~1/4
    assert fw.count_macs(model, spec) <= 0.3 * fw.count_macs(parent, spec)
    _, path, diff = _round_trip_and_export(fw, model, spec, tmp_path, parts["X_test"])
    assert diff < 1e-4 and onnx_tools.param_count(path)[0] == params


def test_prune_structured_keeps_the_layers_it_is_told_to(torch_cnn, digits_data):
    fw, _ = torch_cnn
    ctx = Context(framework=fw, splits=digits_data[0], spec=digits_data[1])
    model, _ = _apply("prune_structured", torch_cnn, ctx, ratio=0.5, keep=["conv1", "fc1"], importance="l1")
    assert model.conv1.out_channels == 8 and model.fc1.out_features == 64 and model.conv2.out_channels == 8


def test_a_factorized_model_can_be_pruned_and_reloaded(torch_cnn, digits_data, tmp_path):
    fw, _ = torch_cnn
    parts, spec = digits_data
    ctx = Context(framework=fw, splits=parts, spec=spec)
    model, _ = _apply("low_rank", torch_cnn, ctx, rank=8, layers=["fc1"])
    method = get_method("prune_structured")
    pruned, _ = method.impls["torch"](model, method.config(ratio=0.5), ctx)
    assert pruned.fc1.rank == 4 and pruned.conv1.out_channels == 4
    _, _, diff = _round_trip_and_export(fw, pruned, spec, tmp_path, parts["X_test"][:50])
    assert diff < 1e-4


def test_channel_pruning_and_sharing_on_a_torchvision_resnet(tmp_path):
    """Any architecture: a ResNet-18 (residual groups pruned together by torch-pruning's dependency graph)."""
    from compression_pipeline.types import InputSpec

    rng = np.random.default_rng(0)
    spec = InputSpec(kind="image", shape=(3, 16, 16), class_names=("a", "b", "c"))
    parts = {f"X_{s}": rng.random((24, 3, 16, 16), dtype=np.float32) for s in ("train", "val", "test")}
    parts.update({f"y_{s}": rng.integers(0, 3, 24) for s in ("train", "val", "test")})
    fw = get("torch")
    source = ImportModel(source="import", framework="torch", builder="compression_pipeline.frameworks.pytorch_zoo:"
                         "adapted", kwargs={"builder": "torchvision.models:resnet18", "kwargs": {"num_classes": 3},
                                            "in_channels": 3, "small_input": True})
    resnet = fw.build(source, spec, seed=0)
    ctx = Context(framework=fw, splits=parts, spec=spec)
    pruned, info = _apply("prune_structured", (fw, resnet), ctx, ratio=0.5)
    assert info["classifier"] == "fc" and pruned.fc.out_features == 3
    assert fw.count_params(pruned)[0] <= 0.3 * fw.count_params(resnet)[0]
    shared, sinfo = _apply("share_weights", (fw, pruned), ctx, bits=4)
    assert max(sinfo["distinct_values"].values()) <= 16 and len(sinfo["shared_tensors"]) == 21  # 20 convs + fc
    _, _, diff = _round_trip_and_export(fw, shared, spec, tmp_path, parts["X_test"])
    assert diff < 1e-4


# --- ONNX-level methods, on either framework's export --------------------------------------------------------------
def test_fp16_halves_the_file_keeps_float32_io_and_runs_on_cpu(trained, digits_data, tmp_path):
    import onnx

    fw, parent = trained
    parts, spec = digits_data
    src, dst = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    layout = fw.export_onnx(parent, src, spec)
    method = get_method("fp16")
    info = method.impls["onnx"](src, dst, method.config(), None)
    assert info["float16_initializers"] > 0 and "no speedup" in info["note"]
    model = onnx.load(str(dst))
    onnx.checker.check_model(model)
    assert model.ir_version <= onnx_tools.IR_VERSION
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [f32, f32]
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    X = feed(parts["X_test"], spec, layout)
    sess = onnx_tools.session(dst, "cpu", 1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    out, ref = onnx_tools.predict(sess, X), onnx_tools.predict(onnx_tools.session(src), X)
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 0.05
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.99


@pytest.mark.parametrize("activations", ["auto", "uint8", "int8"])
def test_static_int8_records_its_activation_type(trained, digits_data, tmp_path, activations):
    fw, parent = trained
    parts, spec = digits_data
    src, dst = tmp_path / "fp32.onnx", tmp_path / "q.onnx"
    layout = fw.export_onnx(parent, src, spec)
    quant = get_method("quantize_static")
    info = quant.impls["onnx"](src, dst, quant.config(samples=64, activation_type=activations),
                               feed(parts["X_train"], spec, layout))
    assert dst.stat().st_size < 0.5 * src.stat().st_size
    if activations == "auto":  # both were built and timed here; the faster one kept
        timings = info["activation_type_p50_ms"]
        assert set(timings) == {"uint8", "int8"} and info["activation_type"] == min(timings, key=timings.get)
    else:
        assert info["activation_type"] == activations and info["activation_type_choice"] == "declared"
    X = feed(parts["X_test"], spec, layout)
    q, ref = onnx_tools.predict(onnx_tools.session(dst), X), onnx_tools.predict(onnx_tools.session(src), X)
    assert (q.argmax(1) == ref.argmax(1)).mean() > 0.95


def test_fp16_refuses_an_already_quantized_model(trained, digits_data, tmp_path):
    fw, parent = trained
    parts, spec = digits_data
    src, q = tmp_path / "fp32.onnx", tmp_path / "q.onnx"
    layout = fw.export_onnx(parent, src, spec)
    quant = get_method("quantize_static")
    quant.impls["onnx"](src, q, quant.config(samples=32, activation_type="int8"),
                        feed(parts["X_train"], spec, layout))
    fp16 = get_method("fp16")
    with pytest.raises(ValueError, match="already quantized"):
        fp16.impls["onnx"](q, tmp_path / "h.onnx", fp16.config(), None)


CONFIGS = {
    "prune_unstructured": {"sparsity": 0.8, "finetune_epochs": 3, "finetune_teacher": "parent", "layers": ["conv*"]},
    "prune_structured": {"ratio": 0.5, "importance": "l1", "keep": ["conv1"], "finetune_epochs": 2},
    "low_rank": {"rank": 16, "layers": ["fc1", "fc2"], "finetune_lr": 0.0005},
    "distill": {"student": {"arch": "cnn", "width": 16}, "temperature": 2.0, "alpha": 0.5, "epochs": 5},
    "fp16": {"keep_io_types": True, "op_block_list": ["Softmax"]},
    "quantize_static": {"activation_type": "uint8", "samples": 64},
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
