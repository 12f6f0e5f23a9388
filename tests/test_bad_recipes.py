"""Bad recipes fail when the code location loads, before anything runs, naming the file, the variant and the field.

test_recipe.py covers the field-by-field messages of parse_recipe; these cases add what the issue lists beyond
them (dataset paths that leave the data root, a method the framework cannot apply) and check the message that
the user really sees: from a file on disk, and from `dagster definitions validate`.
"""

import copy
import os
import subprocess
import sys

import pytest
import yaml

from compression_pipeline.definitions import build_definitions
from compression_pipeline.errors import RecipeError
from compression_pipeline.methods.registry import METHODS, MethodConfig, register
from compression_pipeline.recipe import load_recipe
from compression_pipeline.settings import PROJECT_ROOT

from conftest import TINY


def _load_error(tmp_path, recipe: dict) -> RecipeError:
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert exc.value.path == str(path) and str(exc.value).startswith(f"recipe {path}: ")
    return exc.value


def _load(tmp_path, recipe: dict):
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_recipe(path)


def _with_dataset(**dataset):
    r = copy.deepcopy(TINY)
    r["dataset"] = {"source": "npz", **dataset}
    return r


@pytest.mark.parametrize("path, words", [
    ("../outside.npz", ["'..'", "'../outside.npz'"]),
    ("data/../../outside.npz", ["'..'"]),
    ("/etc/passwd", ["relative to the data root", "'/etc/passwd'"]),
    ("~/digits.npz", ["relative to the data root"]),
    ("C:\\data\\digits.npz", ["relative to the data root"]),
    ("", ["non-empty"]),
])
def test_dataset_paths_that_leave_the_data_root_are_refused_at_load(tmp_path, path, words):
    err = _load_error(tmp_path, _with_dataset(path=path))
    assert err.location == "dataset.path", str(err)
    for w in words:
        assert w in str(err), str(err)


def test_a_nested_relative_dataset_path_is_fine(tmp_path):
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(_with_dataset(path="team/digits.npz")))
    assert load_recipe(path).dataset.path == "team/digits.npz"


@pytest.mark.parametrize("mutate, location, words", [
    (lambda r: r["variants"]["int8"].update(colour="red"), "variants.int8.colour", ["unknown field 'colour'"]),
    (lambda r: r["variants"]["int8"].update(samples="lots"), "variants.int8.samples", ["integer", "'lots'"]),
    (lambda r: r["variants"]["int8"].update(method=["quantize_static"]), "variants.int8.method", ["a method name"]),
    (lambda r: r["variants"].update(pruned={"from": "int9", "method": "quantize_dynamic"}), "variants.pruned.from",
     ["unknown parent 'int9'", "'baseline'", "'int8'"]),
    (lambda r: r["variants"].update(a={"from": "b", "method": "quantize_dynamic"},
                                    b={"from": "c", "method": "quantize_dynamic"},
                                    c={"from": "a", "method": "quantize_dynamic"}), "variants.a.from", ["cycle"]),
    (lambda r: r["variants"]["int8"].update(max_accuracy_drop={"value": -1}), "variants.int8.max_accuracy_drop.value",
     ["greater than or equal to 0"]),
    (lambda r: r["baseline"].update(frameworks=["jax"]), "baseline.frameworks.0", ["'jax'", "'torch'", "'tensorflow'"]),
    (lambda r: r["baseline"].update(frameworks=["torch", "torch"]), "baseline.frameworks", ["once"]),
    (lambda r: r["variants"]["int8"].update(frameworks=["tensorflow"]), "variants.int8.frameworks",
     ["['tensorflow'] not among the frameworks of parent 'baseline'", "['torch']"]),
    (lambda r: r["benchmark"].update(runtimes=["onnx"]), "benchmark.runtimes.0", ["'onnx'", "'tflite'"]),
    (lambda r: r["baseline"].update(arch="resnet"), "baseline.arch", ["'resnet'", "'cnn'"]),
    (lambda r: r["dataset"].update(classes=[1, 2, 3]), "dataset.classes", ["output indices 0..2"]),
    (lambda r: r["dataset"].update(image_shape=[1, 64]), "dataset.image_shape.0", ["greater than or equal to 2"]),
])
def test_bad_recipe_files_name_file_variant_and_field(tmp_path, mutate, location, words):
    r = copy.deepcopy(TINY)
    mutate(r)
    err = _load_error(tmp_path, r)
    assert err.location == location, str(err)
    for w in words:
        assert w in str(err), str(err)


class _Channels(MethodConfig):
    ratio: float = 0.5


@pytest.fixture
def torch_only_method():
    """A method with only a PyTorch implementation (as channel pruning has), registered through the registry."""
    register("torch_only", _Channels, "works on PyTorch modules only")("torch")(lambda *a: {})
    yield "torch_only"
    METHODS.pop("torch_only")


def test_a_method_the_parent_form_cannot_take_is_refused_listing_what_it_works_on(tmp_path, torch_only_method):
    r = copy.deepcopy(TINY)
    r["variants"]["int8_then_pruned"] = {"from": "int8", "method": torch_only_method}
    err = _load_error(tmp_path, r)
    assert err.location == "variants.int8_then_pruned.method"
    assert "'torch_only' works on ['torch'] models" in str(err) and "parent 'int8' is a onnx model" in str(err)
    assert "methods for onnx models: ['fp16', 'quantize_dynamic', 'quantize_static']" in str(err)


def test_a_method_one_framework_lacks_is_refused_listing_that_frameworks_methods(tmp_path, torch_only_method):
    r = copy.deepcopy(TINY)
    r["baseline"]["frameworks"] = ["torch", "tensorflow"]
    r["variants"]["pruned"] = {"from": "baseline", "method": torch_only_method}
    err = _load_error(tmp_path, r)
    assert err.location == "variants.pruned.method"
    assert "parent 'baseline' is a tensorflow model for framework 'tensorflow'" in str(err)
    assert "methods for tensorflow models: [" in str(err) and "'quantize_static'" in str(err)
    assert "'frameworks: [torch]'" in str(err)
    # Limited to the framework that has it, the variant loads; its subtree follows.
    r["variants"]["pruned"]["frameworks"] = ["torch"]
    r["variants"]["pruned_int8"] = {"from": "pruned", "method": "quantize_static"}
    recipe = _load(tmp_path, r)
    assert recipe.frameworks_of("pruned_int8") == ["torch"] and recipe.frameworks_of("int8") == ["torch", "tensorflow"]


def test_definitions_validate_shows_file_variant_field_and_value(tmp_path):
    """What a user sees: the code location refuses to load, and the Dagster CLI prints the recipe error."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    bad = copy.deepcopy(TINY)
    bad["variants"]["int8"]["calibration"] = "guess"
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(bad))
    env = {**os.environ, "COMPRESSION_PIPELINE_RECIPES": str(recipes), "DAGSTER_HOME": str(tmp_path),
           "COMPRESSION_PIPELINE_ARTIFACTS": str(tmp_path / "artifacts")}
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                          "compression_pipeline.definitions"], capture_output=True, text=True, env=env,
                         cwd=PROJECT_ROOT, timeout=300, check=False)
    assert out.returncode != 0
    expected = (f"recipe {recipes / 'tiny.yaml'}: variants.int8.calibration: Input should be 'minmax', 'entropy' or "
                f"'percentile' (got 'guess')")
    assert expected in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    # Nothing ran, so nothing was written.
    assert not (tmp_path / "artifacts").exists()
    with pytest.raises(RecipeError, match="variants.int8.calibration"):
        from compression_pipeline.settings import Settings

        build_definitions(Settings(recipes, tmp_path / "data", tmp_path / "artifacts"))


def test_tflite_quantization_needs_a_keras_parent(tmp_path):
    r = copy.deepcopy(TINY)
    r["variants"]["tfl"] = {"from": "baseline", "method": "tflite_quantize", "mode": "int8"}
    err = _load_error(tmp_path, r)
    assert err.location == "variants.tfl.method"
    assert "'tflite_quantize' works on ['tensorflow'] models" in str(err) and "methods for torch models: [" in str(err)
    # On a Keras parent it produces a TFLite model, which no further method takes (not even ONNX ones).
    r["baseline"]["frameworks"] = ["tensorflow"]
    assert _load(tmp_path, r).form("tfl", "tensorflow") == "tflite"
    r["variants"]["tfl_int8"] = {"from": "tfl", "method": "quantize_static"}
    err = _load_error(tmp_path, r)
    assert err.location == "variants.tfl_int8.method" and "methods for tflite models: []" in str(err)


IMPORTED = {"source": "import", "framework": "torch", "builder": "torchvision.models:resnet18",
            "kwargs": {"num_classes": 10}}


@pytest.mark.parametrize("baseline, location, words", [
    ({**IMPORTED, "kwargs": {"weights": "DEFAULT"}}, "baseline",
     ["kwargs.weights='DEFAULT'", "download trained weights", "give trained weights as a file"]),
    ({**IMPORTED, "builder": "timm:create_model", "kwargs": {"model_name": "resnet18", "pretrained": True}},
     "baseline", ["kwargs.pretrained=True", "timm"]),
    ({**IMPORTED, "framework": "tensorflow", "builder": "keras.applications:MobileNetV2",
      "kwargs": {"weights": "imagenet"}}, "baseline", ["kwargs.weights='imagenet'"]),
    ({**IMPORTED, "weights": "resnet.pt"}, "baseline", ["'resnet.pt'", "never a pickle", ".safetensors"]),
    ({**IMPORTED, "framework": "tensorflow", "weights": "m.h5"}, "baseline", [".keras or .weights.h5"]),
    ({**IMPORTED, "weights": "../elsewhere.safetensors"}, "baseline.weights", ["'..'"]),
    ({**IMPORTED, "builder": "resnet18"}, "baseline.builder", ["'module:callable'"]),
    ({**IMPORTED, "framework": "jax"}, "baseline.framework", ["'torch'", "'tensorflow'"]),
    ({"source": "onnx", "path": "/models/m.onnx"}, "baseline.path", ["relative to the data root"]),
    ({"source": "onnx", "path": "m.onnx", "input_layout": "CHW"}, "baseline.input_layout", ["'NCHW'", "'NHWC'"]),
    ({"source": "hub", "name": "resnet"}, "baseline", ["'hub'", "'zoo'", "'import'", "'onnx'"]),
])
def test_bad_model_sources_are_refused_at_load(tmp_path, baseline, location, words):
    r = copy.deepcopy(TINY)
    r["baseline"] = baseline
    r["variants"] = {}
    err = _load_error(tmp_path, r)
    assert err.location == location, str(err)
    for w in words:
        assert w in str(err), str(err)


def test_a_users_onnx_model_takes_only_onnx_methods_and_says_why(tmp_path):
    r = copy.deepcopy(TINY)
    r["baseline"] = {"source": "onnx", "path": "m.onnx"}
    r["variants"] = {"pruned": {"from": "baseline", "method": "prune_unstructured", "sparsity": 0.5}}
    err = _load_error(tmp_path, r)
    assert err.location == "variants.pruned.method"
    for w in ("the baseline is the user's ONNX file", ("methods for onnx models: ['fp16', 'quantize_dynamic', "
              "'quantize_static']")):
        assert w in str(err), str(err)
    r["variants"] = {"int8": {"from": "baseline", "method": "quantize_static"}}
    assert _load(tmp_path, r).frameworks_of("int8") == ["onnx"]


def test_a_student_in_another_framework_than_its_teacher_is_refused(tmp_path):
    r = copy.deepcopy(TINY)
    r["baseline"]["frameworks"] = ["torch", "tensorflow"]
    r["variants"] = {"student": {"from": "baseline", "method": "distill", "epochs": 1,
                                 "student": {"source": "import", "framework": "torch", "builder": "m:f"}}}
    err = _load_error(tmp_path, r)
    assert err.location == "variants.student.student.framework"
    assert "add 'frameworks: [torch]'" in str(err)
    r["variants"]["student"]["frameworks"] = ["torch"]
    assert _load(tmp_path, r).frameworks_of("student") == ["torch"]
