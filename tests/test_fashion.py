"""The Fashion-MNIST family (assets/fashion.yaml) on a slice, through Dagster: the recipe as shipped (IDX files of
Debian's dataset-fashion-mnist, the class names, a torchvision ResNet-18 in PyTorch and a padded MobileNetV2 in
Keras as two baselines of one family) with fewer rows, epochs and variants. It checks that every stage runs on these
networks and what their sizes must be; the accuracy numbers come from the full family (`make run FAMILY=fashion`,
README), not from 1,500 images and one epoch."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from compression_pipeline.definitions import build_definitions
from compression_pipeline.recipe import parse_recipe
from compression_pipeline.settings import PROJECT_ROOT

from conftest import write_recipe

pytestmark = pytest.mark.e2e(minutes=3)
# Where Debian's dataset-fashion-mnist puts the files (scripts/test_services.sh installs it for make test).
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# What is particular to these networks: int8 of both, channel pruning through a ResNet's residual dependencies, Deep
# Compression's size on 11M weights, TFLite int8 of a MobileNetV2. Distillation and the two-step int8 chains run
# on the digits family's end-to-end test (test_launch.py).
KEEP = ("int8", "pruned50", "sparse90", "tflite_int8", "sparse90_shared4")


def shipped() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "assets" / "fashion.yaml").read_text())


def test_the_shipped_recipe_declares_two_networks_and_the_issue_variants():
    r = parse_recipe(shipped())
    assert {fw: b.builder for fw, b in r.baselines.items()} == {
        "torch": "compression_pipeline.frameworks.pytorch_zoo:adapted",
        "tensorflow": "compression_pipeline.frameworks.keras_zoo:padded"}
    assert r.dataset.source == "idx" and r.dataset.classes == CLASSES
    assert r.frameworks_of("pruned50_int8") == ["torch"] and r.frameworks_of("tflite_int8") == ["tensorflow"]
    assert r.tolerance("int8").value == 0.005 and r.gates.max_accuracy_drop.value == 0.01


def test_the_family_on_a_slice(roots):
    if not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST is not installed at {FASHION}: scripts/test_services.sh installs Debian's "
                    f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    shutil.copytree(FASHION, roots.data_root / "fashion-mnist")
    recipe = shipped()
    recipe["dataset"]["max_rows"] = 1500  # a stratified slice: ~1,160 train, 130 validation, 214 test images
    for b in recipe["baseline"]:
        b["epochs"] = 1
    recipe["baseline"][1]["kwargs"]["kwargs"]["alpha"] = 0.35
    # 214 test images and one epoch: the gates here check plumbing, not how well a variant keeps accuracy (sparse90
    # is not fine-tuned). No floor: after 9 steps MobileNetV2's batch-norm statistics have not caught up with its
    # weights and it predicts near chance in inference mode (the full family trains 4,220 steps).
    recipe["gates"] = {"accuracy_floor": 0.0, "max_accuracy_drop": {"value": 1.0}, "parity_atol": 0.05}
    variants = {k: v for k, v in recipe["variants"].items() if k in KEEP}
    for k, v in variants.items():
        v.pop("max_accuracy_drop", None)
        if "samples" in v:
            v["samples"] = 64
        if v["method"] == "quantize_static":
            v["activation_type"] = "uint8"  # one quantization (auto measures both types on the machine)
        if v.get("finetune_epochs"):
            v["finetune_epochs"] = 1 if k == "pruned50" else 0  # sizes do not depend on fine-tuning
    variants["sparse90_shared4"]["max_iter"] = 5  # k-means iterations over 1.1M nonzero weights
    recipe["variants"] = variants
    recipe["benchmark"] = {"runtimes": ["onnxruntime"], "batch_sizes": [1], "threads": 1, "warmup_runs": 2,
                           "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0, "slice_s": 0.02, "budget_s": 1.0}
    recipe["select"]["batch_size"] = 1
    recipe["select"].pop("min_accuracy")  # the full family's 0.91 is not for one epoch on 1,160 images
    write_recipe(roots, recipe)
    with dg.instance_for_test() as instance:
        result = build_definitions(roots).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False)
        failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations()
                  if not e.passed]
    assert result.success and not failed, failed

    report = json.loads((roots.artifact_root / "fashion/report/report.json").read_text())
    models = {(m["framework"], m["name"]): m for m in report["models"]}
    assert set(models) == {("torch", n) for n in ("baseline", "int8", "pruned50", "sparse90", "sparse90_shared4")} \
        | {("tensorflow", n) for n in ("baseline", "int8", "tflite_int8")}
    resnet, mobilenet = models["torch", "baseline"], models["tensorflow", "baseline"]
    assert 11_000_000 < resnet["params"] < 11_300_000  # ResNet-18 with a 1-channel stem and 10 classes
    assert 300_000 < mobilenet["params"] < 600_000  # MobileNetV2 at width 0.35
    assert all(m["test_samples"] == 214 for m in report["models"])
    assert report["dataset"]["class_names"] == CLASSES
    assert report["same_architecture"] is False
    # What the methods must do to a ResNet-18, whatever one epoch learned:
    assert models["torch", "pruned50"]["params"] <= 0.3 * resnet["params"]  # channels removed in every block
    assert models["torch", "int8"]["file_bytes"] <= resnet["file_bytes"] / 3.8  # int8 weights
    assert models["torch", "sparse90_shared4"]["compact_bytes"] <= resnet["file_bytes"] / 30  # Deep Compression
    assert models["tensorflow", "tflite_int8"]["file_bytes"] <= mobilenet["file_bytes"] / 2.5
    md = (roots.artifact_root / "fashion/report/report.md").read_text()
    assert "its own baseline network" in md
    card = (roots.artifact_root / "fashion/deployment_candidate/current/model_card.md").read_text()
    assert "Ankle boot" in card and "1x28x28" in card
