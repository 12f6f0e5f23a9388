"""Recipes parse into typed models; a bad recipe fails at load naming the file, the field, the value, what is
allowed."""

import pytest
import yaml

from compression_pipeline.errors import RecipeError
from compression_pipeline.recipe import load_recipe, load_recipes, parse_recipe

from conftest import DEFAULT_RECIPE, TINY


def test_default_recipe_loads():
    r = load_recipe(DEFAULT_RECIPE)
    assert r.name == "digits" and r.dataset.source == "sklearn_digits"
    assert r.baseline.frameworks == ["torch", "tensorflow"]
    assert r.frameworks_of("pruned50_int8") == ["torch"] and r.frameworks_of("tflite_int8") == ["tensorflow"]
    assert r.form("tflite_int8", "tensorflow") == "tflite" and r.form("sparse80", "tensorflow") == "tensorflow"
    assert r.variants["int8"].method == "quantize_static"
    assert r.variants["int8"].config.per_channel is True
    assert r.chain("int8") == ["baseline", "int8"]
    assert r.form("int8", "torch") == "onnx" and r.form("baseline", "torch") == "torch"


def _error(recipe: dict) -> RecipeError:
    with pytest.raises(RecipeError) as exc:
        parse_recipe(recipe, "assets/bad.yaml")
    return exc.value


@pytest.mark.parametrize("mutate, location, words", [
    (lambda r: r.update(colour="red"), "colour", ["unknown field"]),
    (lambda r: r["baseline"].update(epochs="many"), "baseline.epochs", ["integer", "'many'"]),
    (lambda r: r["baseline"].update(arch="transformer"), "baseline.arch", ["'transformer'", "cnn"]),
    (lambda r: r["benchmark"].update(device="tpu"), "benchmark.device", ["'tpu'", "'auto'", "'cuda'"]),
    (lambda r: r["gates"]["max_accuracy_drop"].update(mode="percent"), "gates.max_accuracy_drop.mode",
     ["'percent'", "'absolute'", "'relative'"]),
    (lambda r: r["variants"]["int8"].update(method="magic"), "variants.int8.method", ["magic", "quantize_static"]),
    (lambda r: r["variants"]["int8"].update(calibration="guess"), "variants.int8.calibration",
     ["'guess'", "'minmax'", "'entropy'", "'percentile'"]),
    (lambda r: r["variants"]["int8"].update(bits=4), "variants.int8.bits", ["unknown field"]),
    (lambda r: r["variants"]["int8"].update({"from": "nowhere"}), "variants.int8.from", ["'nowhere'", "baseline"]),
    (lambda r: r["variants"]["int8"].pop("from"), "variants.int8.from", ["required"]),
    (lambda r: r["variants"].update(a={"from": "b", "method": "quantize_dynamic"},
                                    b={"from": "a", "method": "quantize_dynamic"}), "variants.a.from", ["cycle"]),
    (lambda r: r["dataset"].update(source="npz"), "dataset", ["path"]),
    (lambda r: r.update(name="Bad Name"), "name", ["pattern"]),
])
def test_bad_recipe_names_file_field_value(tiny_recipe_dict, mutate, location, words):
    mutate(tiny_recipe_dict)
    err = _error(tiny_recipe_dict)
    assert err.path == "assets/bad.yaml"
    assert err.location == location, str(err)
    for w in words:
        assert w in str(err), str(err)


def test_unparseable_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="broken.yaml: \\(file\\): not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_duplicate_family_names_are_refused(tmp_path):
    for f in ("a.yaml", "b.yaml"):
        (tmp_path / f).write_text(yaml.safe_dump(TINY))
    with pytest.raises(RecipeError, match="already declared by .*a.yaml"):
        load_recipes(tmp_path)


def test_code_version_changes_only_with_its_entry(tiny_recipe_dict):
    a = parse_recipe(tiny_recipe_dict)
    tiny_recipe_dict["variants"]["int8"]["samples"] = 128
    b = parse_recipe(tiny_recipe_dict)
    assert a.entry_version("variants.int8") != b.entry_version("variants.int8")
    assert a.entry_version("dataset", "baseline") == b.entry_version("dataset", "baseline")


def test_a_torch_method_on_an_onnx_parent_is_refused_at_load(tiny_recipe_dict):
    # Pruning needs the PyTorch model; an int8 variant only exists as an ONNX file.
    tiny_recipe_dict["variants"]["pruned"] = {"from": "int8", "method": "prune_structured", "ratio": 0.5}
    err = _error(tiny_recipe_dict)
    assert err.location == "variants.pruned.method"
    for w in ("'prune_structured'", "['torch']", "parent 'int8'", "onnx"):
        assert w in str(err), str(err)


def test_chains_of_torch_and_onnx_methods_load_with_their_forms(tiny_recipe_dict):
    tiny_recipe_dict["variants"].update(
        pruned={"from": "baseline", "method": "prune_structured", "ratio": 0.5},
        pruned_lowrank={"from": "pruned", "method": "low_rank", "rank": 8},
        pruned_lowrank_int8={"from": "pruned_lowrank", "method": "quantize_static"},
        student={"from": "pruned", "method": "distill", "student": {"width": 4}})
    r = parse_recipe(tiny_recipe_dict)
    assert r.chain("pruned_lowrank_int8") == ["baseline", "pruned", "pruned_lowrank", "pruned_lowrank_int8"]
    assert [r.form(n, "torch") for n in ("pruned", "pruned_lowrank", "pruned_lowrank_int8", "student")] == \
        ["torch", "torch", "onnx", "torch"]
