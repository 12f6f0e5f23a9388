"""The PyTorch adapter's contract for every model source it supports, and a clear error for every bad declaration."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compression_pipeline import frameworks
from compression_pipeline.errors import ArtifactError, ModelError, PipelineError
from compression_pipeline.frameworks.base import Fit
from compression_pipeline.frameworks.pytorch import _feed
from compression_pipeline.frameworks.pytorch_layers import FactorizedLinear
from compression_pipeline.settings import PROJECT_ROOT
from compression_pipeline.types import ImportModel, InputSpec, ZooModel

from conftest import zoo_cnn_counts

torch.set_num_threads(1)
FW = frameworks.get("torch")
TEN = tuple("0123456789")
DIGITS = InputSpec(kind="image", shape=(1, 8, 8), class_names=TEN)
RGB32 = InputSpec(kind="image", shape=(3, 32, 32), class_names=TEN)
GRAY28 = InputSpec(kind="image", shape=(1, 28, 28), class_names=TEN)
FEATURES = InputSpec(kind="features", shape=(20,), class_names=("a", "b", "c"), mean=(0.5,) * 20, std=(2.0,) * 20)

USER_MODULE = '''
import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, in_channels=3, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.drop(self.body(self.stem(x)).mean((2, 3))))


class TwoOutputs(SmallNet):
    def forward(self, x):
        out = super().forward(x)
        return out, out


def small_net(in_channels=3, num_classes=10):
    return SmallNet(in_channels, num_classes)


def two_outputs():
    return TwoOutputs()


def not_a_module():
    return {"weights": [1, 2, 3]}
'''


def imported(builder: str, /, weights: str | None = None, **kwargs) -> ImportModel:
    return ImportModel(source="import", builder=builder, kwargs=kwargs, framework="torch", weights=weights)


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """A user's own module, importable from a temporary directory on sys.path (as from the project root)."""
    folder = tmp_path_factory.mktemp("user_models")
    (folder / "fw_user_models.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    yield "fw_user_models"
    sys.path.remove(str(folder))
    sys.modules.pop("fw_user_models", None)


def random_splits(spec: InputSpec, n_train: int = 16, n_val: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("train", n_train), ("val", n_val)):
        out[f"X_{name}"] = rng.random((n, *spec.shape), dtype=np.float32)
        out[f"y_{name}"] = rng.integers(0, spec.num_classes, n)
    return out


@pytest.fixture(scope="module")
def digits(digits_splits) -> dict:
    """A few hundred digits rows in the stored layout (n, 1, 8, 8)."""
    cut = {"train": 300, "val": 100, "test": 100}
    return {k: (v[: cut[k[2:]]].reshape(-1, 1, 8, 8) if k.startswith("X") else v[: cut[k[2:]]])
            for k, v in digits_splits.items()}


def prune(model, spec: InputSpec) -> None:
    """torch-pruning's MetaPruner: L2 group magnitude, half the channels, the classifier (last Linear) kept whole."""
    import torch_pruning as tp

    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    tp.pruner.MetaPruner(model.eval(), torch.zeros((1, *spec.shape)), importance=tp.importance.GroupMagnitudeImportance(
        p=2), pruning_ratio=0.5, ignored_layers=[classifier]).step()


def assert_round_trip_trains_and_exports(model, spec: InputSpec, splits: dict, tmp_path: Path) -> None:
    """Saved and loaded: the same outputs exactly; the loaded model takes an optimizer step and exports to ONNX with
    ONNX Runtime's outputs within 1e-4 of PyTorch's (and within 0.1 % of the largest logit)."""
    import onnxruntime as ort

    FW.save(model, tmp_path / "model.safetensors")
    loaded = FW.load(tmp_path / "model.safetensors")
    x = torch.from_numpy(splits["X_val"][:4])
    model.eval()
    with torch.inference_mode():
        assert (model(x) - loaded(x)).abs().max().item() == 0.0
    assert FW.count_params(loaded) == FW.count_params(model)
    assert FW.count_macs(loaded, spec) == FW.count_macs(model, spec)

    trained = FW.copy(loaded)  # one optimizer step, on a copy: the export below checks the loaded weights
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained.train()
    loss = nn.functional.cross_entropy(trained(torch.from_numpy(splits["X_train"][:4])),
                                       torch.from_numpy(splits["y_train"][:4]).long())
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(loaded.parameters(), trained.parameters()))

    assert FW.export_onnx(loaded, tmp_path / "model.onnx", spec) == FW.layout(spec)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_outputs()[0].name == "logits"
    xs = splits["X_val"][:3]  # batch 3: the batch dimension is dynamic
    onnx_logits = session.run(None, {"input": _feed(xs, spec)})[0]  # an export takes normalized inputs
    assert onnx_logits.shape == (3, spec.num_classes)
    torch_logits = FW.predict(loaded, xs, spec)
    scale = np.abs(torch_logits).max()  # randomly initialized models can have tiny logits: also a relative bound
    assert scale > 0 and np.abs(onnx_logits - torch_logits).max() <= min(1e-4, 1e-3 * scale)


# --- the contract, per model source ------------------------------------------------------------------------------
CASES = {
    "zoo_cnn": (ZooModel(arch="cnn", width=4), DIGITS),
    "zoo_mlp": (ZooModel(arch="mlp", width=16), FEATURES),
    "resnet18": (imported("torchvision.models:resnet18", num_classes=10), RGB32),
    "mobilenet_v3_small": (imported("torchvision.models:mobilenet_v3_small", num_classes=10), RGB32),
    "timm": (imported("timm:create_model", model_name="test_efficientnet", num_classes=10, in_chans=1,
                      pretrained=False), GRAY28),
    "user_module": (imported("fw_user_models:small_net", num_classes=10), RGB32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_contract(case, user_module, tmp_path):
    source, spec = CASES[case]
    splits = random_splits(spec)
    model = FW.build(source, spec, seed=0)
    again = FW.build(source, spec, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    lines = []
    history = FW.fit(model, splits, spec, Fit(epochs=1, batch_size=8), log=lines.append)
    assert [set(h) for h in history] == [{"epoch", "loss", "val_accuracy"}] and np.isfinite(history[0]["loss"])
    assert len(lines) == 1 and re.fullmatch(
        rf"epoch 1/1: loss {history[0]['loss']:.4f}, val accuracy {history[0]['val_accuracy']:.4f} "
        r"\([0-9.]+ s/epoch, 0 s left\)", lines[0]), lines
    logits = FW.predict(model, splits["X_val"], spec)
    assert logits.shape == (8, spec.num_classes) and logits.dtype == np.float32

    params, nonzero = FW.count_params(model)
    assert params == sum(p.numel() for p in model.parameters()) and 0 < nonzero <= params
    macs = FW.count_macs(model, spec)
    prune(model, spec)
    assert FW.count_params(model)[0] < params and FW.count_macs(model, spec) < macs
    assert_round_trip_trains_and_exports(model, spec, splits, tmp_path)


def test_zoo_cnn_architecture_names_and_seeded_weights():
    """Stable layer names (the Keras twin's), the hand-counted parameters and MACs, any image size, seeded weights."""
    model = FW.build(ZooModel(width=4), DIGITS, seed=3).eval()
    again = FW.build(ZooModel(width=4), DIGITS, seed=3).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert [n for n, _ in model.named_children()] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert (FW.count_params(model)[0], FW.count_macs(model, DIGITS)) == zoo_cnn_counts(1, 8, 8, 4, 10)
    odd = InputSpec(kind="image", shape=(3, 5, 7), class_names=("a", "b"))
    assert FW.predict(FW.build(ZooModel(width=4), odd, seed=0), np.zeros((2, 3, 5, 7)), odd).shape == (2, 2)
    assert FW.count_params(FW.build(ZooModel(width=4), odd))[0] == zoo_cnn_counts(3, 5, 7, 4, 2)[0]


def test_mlp_on_flattened_images_and_its_macs():
    model = FW.build(ZooModel(arch="mlp", width=32), DIGITS, seed=0)
    assert FW.count_macs(model, DIGITS) == 64 * 32 + 32 * 32 + 32 * 10
    assert FW.layout(DIGITS) == "NCHW" and FW.layout(FEATURES) == "NF"


def test_resnet18_macs_counted_by_hand():
    # 32x32 input: stem 7x7/2 -> 16x16, max-pool -> 8x8; each stage halves it; 1x1 downsampling convs; the fc.
    stem = 16 * 16 * 64 * 3 * 49
    stage1 = 4 * 8 * 8 * 64 * 64 * 9
    stages = sum((hw * c * (c // 2) * 9) + 3 * (hw * c * c * 9) + hw * c * (c // 2)
                 for hw, c in ((16, 128), (4, 256), (1, 512)))
    model = FW.build(CASES["resnet18"][0], RGB32)
    assert FW.count_macs(model, RGB32) == stem + stage1 + stages + 512 * 10 == 37_016_576


def test_fit_is_seeded_and_learns(digits_splits):
    """The same seed gives the same trajectory (shuffling, dropout, initial weights), and training learns."""
    runs = []
    for _ in range(2):
        model = FW.build(ZooModel(width=8), DIGITS, seed=0)
        history = FW.fit(model, digits_splits, DIGITS, Fit(epochs=2, lr=3e-3, seed=0))
        runs.append((history, FW.predict(model, digits_splits["X_test"], DIGITS)))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])
    assert float((runs[0][1].argmax(1) == digits_splits["y_test"]).mean()) > 0.5
    assert [h["epoch"] for h in runs[0][0]] == [1, 2] and runs[0][0][1]["loss"] < runs[0][0][0]["loss"]


def test_keep_zero_keeps_pruned_weights_exactly_zero(digits):
    from torch.nn.utils import prune as torch_prune

    model = FW.build(ZooModel(width=4), DIGITS, seed=0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch_prune.l1_unstructured(m, "weight", amount=0.5)
            torch_prune.remove(m, "weight")
    zeros = {n: p == 0 for n, p in model.named_parameters() if p.dim() >= 2}
    free = FW.copy(model)
    FW.fit(model, digits, DIGITS, Fit(epochs=1), keep_zero=True)
    FW.fit(free, digits, DIGITS, Fit(epochs=1))
    for name, p in model.named_parameters():
        if name in zeros:
            assert torch.equal(p == 0, zeros[name]), name  # exactly the same zeros, no more, no fewer
    assert any(bool((p[zeros[n]] != 0).any()) for n, p in free.named_parameters() if n in zeros)


def test_distillation_changes_the_loss(digits):
    teacher = FW.build(ZooModel(width=8), DIGITS, seed=1)
    FW.fit(teacher, digits, DIGITS, Fit(epochs=1, lr=3e-3))
    plain = FW.fit(FW.build(ZooModel(width=4), DIGITS, seed=0), digits, DIGITS, Fit(epochs=1))
    distilled = FW.fit(FW.build(ZooModel(width=4), DIGITS, seed=0), digits, DIGITS, Fit(epochs=1, alpha=0.7),
                       teacher=teacher)
    assert np.isfinite(distilled[0]["loss"]) and distilled[0]["loss"] != plain[0]["loss"]


def test_inputs_are_normalized_per_feature():
    model = FW.build(ZooModel(arch="mlp", width=8), FEATURES, seed=0)
    X = np.random.default_rng(0).random((4, 20), dtype=np.float32)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy((X - 0.5) / 2.0)).numpy()
    assert np.allclose(FW.predict(model, X, FEATURES), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"samples of shape \(21,\) do not match the input specification's \(20,\)"):
        FW.predict(model, np.zeros((2, 21)), FEATURES)


# --- compression edits survive save/load ---------------------------------------------------------------------------
def test_factorized_and_pruned_round_trip(digits, tmp_path):
    model = FW.build(ZooModel(width=8), DIGITS, seed=0)
    prune(model, DIGITS)
    model.fc1 = FactorizedLinear.from_linear(model.fc1, rank=4)
    assert FW.count_params(model)[0] < sum(p.numel() for p in FW.build(ZooModel(width=8), DIGITS).parameters())
    assert_round_trip_trains_and_exports(model, DIGITS, digits, tmp_path)


def test_factorized_linear_is_the_truncated_svd():
    dense = nn.Linear(12, 6)
    full = FactorizedLinear.from_linear(dense, rank=6)
    x = torch.randn(3, 12)
    assert torch.allclose(full(x), dense(x), atol=1e-5)
    with pytest.raises(ValueError, match="rank 7 of a \\(6, 12\\) weight: 1..6 is allowed"):
        FactorizedLinear.from_linear(dense, rank=7)


def test_identity_replacement_and_a_copy_round_trip(user_module, tmp_path):
    model = FW.build(CASES["user_module"][0], RGB32, seed=0)
    model.drop = nn.Identity()
    twin = FW.copy(model)
    FW.save(twin, tmp_path / "m.safetensors")
    loaded = FW.load(tmp_path / "m.safetensors")
    assert isinstance(loaded.drop, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), loaded(x))


def test_a_foreign_replacement_or_an_attached_reparametrization_cannot_be_saved(user_module, tmp_path):
    from torch.nn.utils import prune as torch_prune

    model = FW.build(CASES["user_module"][0], RGB32, seed=0)
    model.head = nn.Sequential(nn.Linear(16, 10))
    with pytest.raises(ModelError, match="module 'head' is a Sequential in place of the Linear .* only "
                                         r"\['FactorizedLinear', 'Identity'\]"):
        FW.save(model, tmp_path / "m.safetensors")
    model = FW.build(CASES["user_module"][0], RGB32, seed=0)
    torch_prune.l1_unstructured(model.head, "weight", amount=0.5)
    with pytest.raises(ModelError, match="head.weight_mask.*torch.nn.utils.prune still attached"):
        FW.save(model, tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="not built by the PyTorch adapter"):
        FW.save(nn.Linear(2, 2), tmp_path / "m.safetensors")


# --- adapted: torchvision classifiers on other inputs ---------------------------------------------------------------
@pytest.mark.parametrize("builder", ["torchvision.models:resnet18", "torchvision.models:mobilenet_v3_small"])
def test_adapted_fits_the_stem_to_small_gray_images(builder, tmp_path):
    source = imported("compression_pipeline.frameworks.pytorch_zoo:adapted", builder=builder,
                      kwargs={"num_classes": 10}, in_channels=1, small_input=True)
    model = FW.build(source, GRAY28, seed=0)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1 and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert FW.predict(model, np.zeros((2, 1, 28, 28)), GRAY28).shape == (2, 10)
    FW.save(model, tmp_path / "m.safetensors")  # the adaptation is part of the source: nothing to record
    meta = json.loads(_metadata(tmp_path / "m.safetensors")["edits"])
    assert meta == {"replaced": [], "attributes": {}}
    with pytest.raises(ModelError, match="kwargs.weights='DEFAULT' would download trained weights"):
        FW.build(imported("compression_pipeline.frameworks.pytorch_zoo:adapted", builder=builder,
                          kwargs={"weights": "DEFAULT"}), GRAY28)


def test_adapted_drops_the_max_pool_alone_and_refuses_it_where_there_is_none():
    """max_pool=False keeps the stem's stride 2: a ResNet sees 14x14 maps from 28x28 images (7x7 with the pool)."""
    source = imported("compression_pipeline.frameworks.pytorch_zoo:adapted", builder="torchvision.models:resnet18",
                      kwargs={"num_classes": 10}, in_channels=1, max_pool=False)
    model = FW.build(source, GRAY28, seed=0)
    assert model.conv1.stride == (2, 2) and model.conv1.in_channels == 1
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    maps = {}
    model.layer1.register_forward_hook(lambda mod, inp, out: maps.update(layer1=out.shape[-2:]))
    assert FW.predict(model, np.zeros((2, 1, 28, 28)), GRAY28).shape == (2, 10)
    assert tuple(maps["layer1"]) == (14, 14)
    with pytest.raises(ModelError, match="max_pool=False, but torchvision.models:mobilenet_v3_small has no stem"):
        FW.build(imported("compression_pipeline.frameworks.pytorch_zoo:adapted",
                          builder="torchvision.models:mobilenet_v3_small", max_pool=False), GRAY28)
    with pytest.raises(ModelError, match="stem_stride must be a positive integer, got 0"):
        FW.build(imported("compression_pipeline.frameworks.pytorch_zoo:adapted",
                          builder="torchvision.models:resnet18", stem_stride=0), GRAY28)


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# --- torchvision with the CPU torch wheel --------------------------------------------------------------------------
def test_torchvision_imports_in_a_fresh_process_through_the_builder_path():
    """A fresh process (as a Dagster step worker) builds a torchvision model through the adapter alone; then either
    torchvision's own operators loaded (a CUDA torch, a CPU torchvision) or only their schemas exist, and its
    detection ops say so when called."""
    script = textwrap.dedent("""
        import torch
        from compression_pipeline import frameworks
        from compression_pipeline.types import ImportModel, InputSpec
        spec = InputSpec(kind="image", shape=(3, 32, 32), class_names=tuple("0123456789"))
        source = ImportModel(source="import", builder="timm:create_model", framework="torch",
                             kwargs={"model_name": "test_efficientnet", "num_classes": 10})
        frameworks.get("torch").build(source, spec)
        import torchvision
        try:
            torchvision.ops.nms(torch.zeros(2, 4), torch.zeros(2), 0.5)
            print("real ops", torchvision.extension._has_ops())
        except RuntimeError as e:
            print("schemas only", torchvision.extension._has_ops(), "Couldn't load custom C++ ops" in str(e))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] in ("real ops True", "schemas only False True")


# --- bad declarations --------------------------------------------------------------------------------------------
NOT_IMPORTABLE = "builder 'no_such_module_xyz:build': cannot import module 'no_such_module_xyz'.*project root"
TUPLE = r"returned a tuple for input \(2, 3, 32, 32\); a classifier returns one tensor of logits, shape \(batch, 10\)"
CLASSES = r"returned shape \(2, 5\) for input \(2, 3, 32, 32\); expected \(2, 10\).*num_classes=10"
CHANNELS = r"\(2, 1, 28, 28\) \(N, C, H, W\), fails in the model: RuntimeError: .*\[2, 1, 28, 28\] to have 3 channels"


@pytest.mark.parametrize(("builder", "kwargs", "spec", "message"), [
    ("no_such_module_xyz:build", {}, RGB32, NOT_IMPORTABLE),
    ("torchvision.models:no_such_net", {}, RGB32, "module 'torchvision.models' has no attribute 'no_such_net'"),
    ("fw_user_models:not_a_module", {}, RGB32, "returned a dict, not a torch.nn.Module"),
    ("fw_user_models:two_outputs", {}, RGB32, TUPLE),
    ("fw_user_models:small_net", {"num_classes": 5}, RGB32, CLASSES),
    ("fw_user_models:small_net", {}, GRAY28, CHANNELS),
    ("fw_user_models:small_net", {"depth": 3}, RGB32, "called with {'depth': 3} failed: TypeError"),
])
def test_bad_builders_say_what_is_wrong(builder, kwargs, spec, message, user_module):
    with pytest.raises(ModelError, match=message):
        FW.build(imported(builder, **kwargs), spec)


def test_zoo_cnn_refuses_feature_vectors():
    with pytest.raises(ModelError, match="zoo cnn takes images, but the data are features of shape \\(20,\\)"):
        FW.build(ZooModel(), FEATURES)


@pytest.fixture
def trained_weights(user_module, tmp_path):
    """The data root and a helper writing a state dict of the user's model, edited, as a safetensors file there."""
    from safetensors.torch import save_file

    state = FW.build(CASES["user_module"][0], RGB32, seed=5).state_dict()

    def write(edit=None) -> str:
        s = {k: v.clone() for k, v in state.items()}
        if edit:
            edit(s)
        save_file(s, str(tmp_path / "w.safetensors"))
        return "w.safetensors"

    return tmp_path, state, write


def test_weights_are_loaded(trained_weights):
    root, state, write = trained_weights
    model = FW.build(imported("fw_user_models:small_net", weights=write(), num_classes=10), RGB32, seed=0,
                     data_root=root)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("head.bias"), "missing 1: head.bias"),
    (lambda s: s.update(extra=torch.zeros(2)), "unexpected 1: extra"),
    (lambda s: s.update({"head.weight": torch.zeros(10, 8)}), r"mis-shaped 1: head.weight: \(10, 8\) instead of \("),
])
def test_weights_that_do_not_fit_are_listed(trained_weights, edit, message):
    root, _, write = trained_weights
    with pytest.raises(ModelError, match="builder 'fw_user_models:small_net': weights 'w.safetensors' do not fit the "
                                         "model it builds: " + message):
        FW.build(imported("fw_user_models:small_net", weights=write(edit), num_classes=10), RGB32, data_root=root)


class _Tripwire:
    """Unpickling this creates a file: proof that nothing was unpickled when the file stays absent."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_pickle_is_never_unpickled_as_weights_or_as_a_stored_model(user_module, tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / "w.safetensors").write_bytes(pickle.dumps({"head.weight": _Tripwire(marker)}))
    with pytest.raises(ModelError, match="weights 'w.safetensors' are not a safetensors file .* never unpickled"):
        FW.build(imported("fw_user_models:small_net", weights="w.safetensors"), RGB32, data_root=tmp_path)
    torch.save(FW.build(ZooModel(width=4), DIGITS).state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "tripwire.safetensors").write_bytes(pickle.dumps(_Tripwire(marker)))
    for name in ("model.safetensors", "tripwire.safetensors"):
        with pytest.raises(ArtifactError, match="is not a readable safetensors model file .* never unpickled"):
            FW.load(tmp_path / name)
    assert not marker.exists()


def test_truncated_and_foreign_model_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    FW.save(FW.build(ZooModel(width=4), DIGITS), tmp_path / "m.safetensors")
    whole = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[: len(whole) - 100])
    with pytest.raises(ArtifactError, match="cut.safetensors is not a readable safetensors model file"):
        FW.load(tmp_path / "cut.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ArtifactError, match="foreign.safetensors is a safetensors file without this project's model "
                                            "metadata"):
        FW.load(tmp_path / "foreign.safetensors")


def test_weights_outside_the_data_root_are_refused(user_module, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"")
    (root / "w.safetensors").symlink_to(tmp_path / "outside.safetensors")
    with pytest.raises(PipelineError, match="outside the allowed root"):
        FW.build(imported("fw_user_models:small_net", weights="w.safetensors"), RGB32, data_root=root)
    with pytest.raises(ModelError, match="weights file 'gone.safetensors' not found under the data root"):
        FW.build(imported("fw_user_models:small_net", weights="gone.safetensors"), RGB32, data_root=root)
