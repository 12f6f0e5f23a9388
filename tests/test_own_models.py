"""Bring your own model and data, through Dagster: an image folder, a user's ONNX file, and feature vectors with the
zoo's MLP in both frameworks; nothing of the digits involved (a torchvision ResNet-18 by import path: test_fashion).
Small on purpose (a few hundred images, a few epochs): the claims checked are that each source flows through every
stage, gate, export, benchmark, the report and the candidate."""

import json

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from compression_pipeline.definitions import build_definitions
from compression_pipeline.errors import RecipeError
from compression_pipeline.recipe import parse_recipe

from conftest import write_recipe

pytestmark = pytest.mark.e2e
FAST = {"batch_sizes": [1, 4], "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0, "slice_s": 0.01,
        "budget_s": 1.0}


def _run(defs):
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance,
                                                                                raise_on_error=False)
        checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
                  for e in result.get_asset_check_evaluations()}
        return result, checks


def _shapes_folder(root, classes=("disc", "square", "stripes"), per_class=40, size=16, seed=0):
    """An image folder of three learnable classes of RGB PNGs (and a few JPEGs), with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = [((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2),
                    (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4),
                    (xx // 2) % 2 == 0][k].astype(np.float32)
            rgb = np.stack([base * (0.6 + 0.4 * rng.random()), base * rng.random(), 1 - base], -1)
            img = np.clip(rgb + 0.15 * rng.standard_normal(rgb.shape), 0, 1)
            ext = "jpg" if i % 10 == 0 else "png"
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:03d}.{ext}")


def test_an_image_folder_through_every_stage(roots):
    """An image folder of RGB PNGs and JPEGs through data gates, training, methods, exports, benchmark, report and
    card. (A torchvision ResNet-18 declared by import path goes through the same stages in tests/test_fashion.py.)"""
    _shapes_folder(roots.data_root / "shapes")
    recipe = {
        "name": "shapes",
        "dataset": {"source": "image_folder", "path": "shapes", "image_size": [16, 16], "color": "rgb",
                    "normalize": "train", "split": {"val": 0.2, "test": 0.25}, "min_rows": 10,
                    "max_class_kl": 0.1},
        "baseline": {"source": "zoo", "arch": "cnn", "width": 8, "epochs": 8, "lr": 0.005},
        # 30 test images and a few epochs: this checks that every stage runs on the folder's images, not how well
        # the compressed models do (loose drop tolerances; the baseline itself reaches about 0.97 here).
        "gates": {"accuracy_floor": 0.6, "max_accuracy_drop": {"value": 0.6}},
        "variants": {
            "int8": {"from": "baseline", "method": "quantize_static", "samples": 32},
            "pruned": {"from": "baseline", "method": "prune_structured", "ratio": 0.5, "finetune_epochs": 3,
                       "finetune_lr": 0.005},
            "pruned_int8": {"from": "pruned", "method": "quantize_static", "samples": 32},
        },
        "benchmark": FAST,
        "select": {"objective": "latency_p50", "batch_size": 1},
    }
    write_recipe(roots, recipe)
    result, checks = _run(build_definitions(roots))
    assert result.success, {k: v for k, v in checks.items() if not v}
    report = json.loads((roots.artifact_root / "shapes/report/report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == {"baseline", "int8", "pruned", "pruned_int8"}
    base = models["baseline"]
    assert base["accuracy"] >= 0.6
    assert models["pruned"]["params"] <= 0.35 * base["params"]  # channels removed through the dependency graph
    assert models["int8"]["file_bytes"] <= 0.3 * base["file_bytes"]
    assert all(m["test_samples"] == 30 for m in report["models"])
    assert report["dataset"]["class_names"] == ["disc", "square", "stripes"]
    card = (roots.artifact_root / "shapes/deployment_candidate/current/model_card.md").read_text()
    assert "disc, square, stripes" in card and "3x16x16" in card


def test_a_users_onnx_file_takes_onnx_methods_only(roots):
    # The user's model: a small torch CNN trained elsewhere, given to the pipeline as an ONNX file.

    from compression_pipeline import data
    from compression_pipeline.frameworks import get
    from compression_pipeline.recipe import Dataset
    from compression_pipeline.types import ZooModel

    from conftest import fit

    parts, spec = data.preprocess(data.load_raw(Dataset(), "."), Dataset())
    torch_fw = get("torch")
    model = torch_fw.build(ZooModel(arch="cnn", width=8), spec, seed=0)
    torch_fw.fit(model, parts, spec, fit(3))
    torch_fw.export_onnx(model, roots.data_root / "user.onnx", spec)
    recipe = {"name": "user", "dataset": {"source": "sklearn_digits"},
              "baseline": {"source": "onnx", "path": "user.onnx"},
              "gates": {"accuracy_floor": 0.5, "max_accuracy_drop": {"value": 0.05}},
              "variants": {"int8": {"from": "baseline", "method": "quantize_static", "samples": 64},
                           "fp16": {"from": "baseline", "method": "fp16"}},
              "benchmark": {**FAST, "runtimes": ["onnxruntime"]}}
    write_recipe(roots, recipe)
    defs = build_definitions(roots)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"user/onnx_baseline", "user/onnx_int8", "user/onnx_fp16", "user/onnx_int8_benchmark"} <= keys
    assert not any("torch" in k or "tensorflow" in k for k in keys)
    # the user's file is observed by content hash: a new file rebuilds the family (as a dataset file does)
    parents = defs.resolve_asset_graph().get(dg.AssetKey(["user", "onnx_baseline"])).parent_keys
    assert dg.AssetKey(["user", "model_file"]) in parents
    result, checks = _run(defs)
    assert result.success, {k: v for k, v in checks.items() if not v}
    report = json.loads((roots.artifact_root / "user/report/report.json").read_text())
    assert {m["name"] for m in report["models"]} == {"baseline", "int8", "fp16"}
    assert {m["framework"] for m in report["models"]} == {"onnx"}
    # A framework method needs the framework's model: refused at load, saying why and what an ONNX model takes.
    recipe["variants"]["pruned"] = {"from": "baseline", "method": "prune_structured", "ratio": 0.5}
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe, "user.yaml")
    assert e.value.location == "variants.pruned.method" and "quantize_static" in str(e.value)


def test_feature_vectors_with_the_zoo_mlp_in_both_frameworks(roots):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=600, n_features=20, n_informative=8, n_classes=3, random_state=0)
    np.savez(roots.data_root / "tabular.npz", features=X.astype(np.float32), label=y)
    recipe = {"name": "tabular",
              "dataset": {"source": "npz", "path": "tabular.npz", "arrays": {"x": "features", "y": "label"},
                          "layout": "NF", "normalize": "train", "classes": ["a", "b", "c"]},
              "baseline": {"source": "zoo", "arch": "mlp", "width": 32, "epochs": 8, "lr": 0.003,
                           "frameworks": ["torch", "tensorflow"]},
              "gates": {"accuracy_floor": 0.6, "max_accuracy_drop": {"value": 0.1}},
              "variants": {"int8": {"from": "baseline", "method": "quantize_static", "samples": 64},
                           "sparse": {"from": "baseline", "method": "prune_unstructured", "sparsity": 0.5,
                                      "finetune_epochs": 2},
                           "lowrank": {"from": "baseline", "method": "low_rank", "rank": 4, "layers": ["fc2"],
                                       "finetune_epochs": 2}},
              "benchmark": FAST}
    write_recipe(roots, recipe)
    result, checks = _run(build_definitions(roots))
    assert result.success, {k: v for k, v in checks.items() if not v}
    report = json.loads((roots.artifact_root / "tabular/report/report.json").read_text())
    got = {(m["framework"], m["name"]) for m in report["models"]}
    assert got == {(fw, n) for fw in ("torch", "tensorflow") for n in ("baseline", "int8", "sparse", "lowrank")}
    by = {(m["framework"], m["name"]): m for m in report["models"]}
    for fw in ("torch", "tensorflow"):
        assert by[(fw, "lowrank")]["params"] < by[(fw, "baseline")]["params"]
        assert by[(fw, "sparse")]["nonzero_params"] <= 0.6 * by[(fw, "baseline")]["params"]
    assert by[("torch", "baseline")]["params"] == by[("tensorflow", "baseline")]["params"]
