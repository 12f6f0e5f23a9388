"""The code location: asset keys, check names, groups, pools and imports of the default recipe."""

import subprocess
import sys

import dagster as dg

from compression_pipeline.definitions import build_definitions
from compression_pipeline.settings import PROJECT_ROOT, Settings

from conftest import DEFAULT_RECIPE

ONNX_VARIANTS = ("int8", "dynamic_int8", "fp16", "pruned50_int8", "student_int8")  # models stored as ONNX
# PyTorch models, each with its own export
TORCH_VARIANTS = ("sparse80", "pruned50", "lowrank", "student", "shared5", "sparse90", "sparse90_shared4")
MODELS = ("baseline", *TORCH_VARIANTS, *ONNX_VARIANTS)
# The TensorFlow side: Keras models (each exported to ONNX and TFLite), ONNX variants of their exports, and TFLite
# post-training-quantized variants; PyTorch-only methods (channel pruning, weight sharing) are not built here.
KERAS_VARIANTS = ("sparse80", "lowrank", "student")
TF_ONNX_VARIANTS = ("int8", "dynamic_int8", "fp16", "student_int8")
TFLITE_VARIANTS = ("tflite_dynamic", "tflite_float16", "tflite_int8")
TF_MODELS = ("baseline", *KERAS_VARIANTS, *TF_ONNX_VARIANTS, *TFLITE_VARIANTS)
KERAS = ("baseline", *KERAS_VARIANTS)

EXPECTED_ASSETS = {
    "digits/raw_dataset": "data", "digits/splits": "data", "digits/report": "reports",
    "digits/deployment_candidate": "reports",
    **{f"digits/torch_{m}": "models" for m in MODELS},
    **{f"digits/torch_{m}_onnx": "exports" for m in ("baseline", *TORCH_VARIANTS)},
    **{f"digits/torch_{m}_benchmark": "benchmarks" for m in MODELS},
    **{f"digits/tensorflow_{m}": "models" for m in TF_MODELS},
    **{f"digits/tensorflow_{m}_{e}": "exports" for m in KERAS for e in ("onnx", "tflite")},
    **{f"digits/tensorflow_{m}_benchmark": "benchmarks" for m in TF_MODELS},
}
EXPECTED_CHECKS = {
    "digits/splits": {"schema", "value_range", "no_missing", "labels", "class_balance", "row_counts", "no_leakage"},
    **{f"digits/torch_{m}": {"accuracy_gate"} for m in MODELS},
    **{f"digits/torch_{m}_onnx": {"parity", "accuracy_gate"} for m in ("baseline", *TORCH_VARIANTS)},
    **{f"digits/tensorflow_{m}": {"accuracy_gate"} for m in TF_MODELS},
    **{f"digits/tensorflow_{m}_{e}": {"parity", "accuracy_gate"} for m in KERAS for e in ("onnx", "tflite")},
    "digits/deployment_candidate": {"constraints_met"},
}


def _defs(tmp_path):
    return build_definitions(Settings(PROJECT_ROOT / "assets", tmp_path / "data", tmp_path / "artifacts"))


def test_default_recipe_asset_keys_groups_and_checks(tmp_path):
    defs = _defs(tmp_path)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys() if k.path[0] == "digits"}
    assert keys == set(EXPECTED_ASSETS)
    for key, group in EXPECTED_ASSETS.items():
        assert graph.get(dg.AssetKey.from_user_string(key)).group_name == group
    checks = {}
    for ck in graph.asset_check_keys:
        if ck.asset_key.path[0] == "digits":
            checks.setdefault(ck.asset_key.to_user_string(), set()).add(ck.name)
    assert checks == EXPECTED_CHECKS
    # Every gate is blocking: a failure stops everything downstream.
    assert all(graph.get_check_spec(ck).blocking for ck in graph.asset_check_keys)


def test_lineage_edges_and_gpu_pool(tmp_path):
    graph = _defs(tmp_path).resolve_asset_graph()
    parents = lambda k: {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(k)).parent_keys}
    assert parents("digits/torch_int8") == {"digits/torch_baseline_onnx", "digits/splits"}
    assert parents("digits/torch_baseline_onnx") == {"digits/torch_baseline", "digits/splits"}
    assert parents("digits/torch_baseline") == {"digits/splits"}
    assert parents("digits/splits") == {"digits/raw_dataset"}
    # chains: a torch method on the baseline model, an ONNX method on that variant's export
    assert parents("digits/torch_pruned50") == {"digits/torch_baseline", "digits/splits"}
    assert parents("digits/torch_pruned50_onnx") == {"digits/torch_pruned50", "digits/splits",
                                                     "digits/torch_baseline_onnx"}
    assert parents("digits/torch_pruned50_int8") == {"digits/torch_pruned50_onnx", "digits/splits",
                                                     "digits/torch_baseline_onnx"}
    assert parents("digits/torch_student_int8") == {"digits/torch_student_onnx", "digits/splits",
                                                    "digits/torch_baseline_onnx"}
    for m in TORCH_VARIANTS:
        assert graph.get(dg.AssetKey.from_user_string(f"digits/torch_{m}")).kinds == {"pytorch"}
        assert parents(f"digits/torch_{m}_benchmark") == {f"digits/torch_{m}", f"digits/torch_{m}_onnx"}
    for m in MODELS:
        assert graph.get(dg.AssetKey.from_user_string(f"digits/torch_{m}_benchmark")).pools == {"gpu"}
    # TensorFlow: the same lineage, plus the TFLite export and TFLite variants of Keras models
    for m in KERAS_VARIANTS:
        assert graph.get(dg.AssetKey.from_user_string(f"digits/tensorflow_{m}")).kinds == {"tensorflow"}
        assert parents(f"digits/tensorflow_{m}_benchmark") == {f"digits/tensorflow_{m}", f"digits/tensorflow_{m}_onnx",
                                                               f"digits/tensorflow_{m}_tflite"}
    assert parents("digits/tensorflow_baseline_tflite") == {"digits/tensorflow_baseline", "digits/splits"}
    assert parents("digits/tensorflow_int8") == {"digits/tensorflow_baseline_onnx", "digits/splits"}
    assert parents("digits/tensorflow_tflite_int8") == {"digits/tensorflow_baseline", "digits/splits",
                                                        "digits/tensorflow_baseline_onnx"}
    assert parents("digits/tensorflow_tflite_int8_benchmark") == {"digits/tensorflow_tflite_int8"}
    assert graph.get(dg.AssetKey.from_user_string("digits/tensorflow_tflite_int8")).kinds == {"tflite"}
    for m in TF_MODELS:
        assert graph.get(dg.AssetKey.from_user_string(f"digits/tensorflow_{m}_benchmark")).pools == {"gpu"}


def test_the_fashion_family_has_a_baseline_per_framework(tmp_path):
    """assets/fashion.yaml lists two baselines (a ResNet in PyTorch, a MobileNetV2 in Keras): one family, each
    framework's models under its own baseline, each baseline's code version from its own recipe entry."""
    graph = _defs(tmp_path).resolve_asset_graph()
    node = lambda k: graph.get(dg.AssetKey.from_user_string(k))
    assert {p.to_user_string() for p in node("fashion/torch_pruned50").parent_keys} == {
        "fashion/torch_baseline", "fashion/splits"}
    assert node("fashion/tensorflow_tflite_int8").kinds == {"tflite"}
    assert not graph.has(dg.AssetKey.from_user_string("fashion/tensorflow_pruned50"))  # torch-only methods
    assert node("fashion/torch_baseline").code_version != node("fashion/tensorflow_baseline").code_version
    assert node("fashion/raw_dataset").parent_keys == {dg.AssetKey.from_user_string("fashion/dataset_file")}


def test_schedule_job_and_automation_sensor(tmp_path):
    defs = _defs(tmp_path)
    schedule = defs.resolve_schedule_def("digits_nightly")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_job_def("digits_recompress") is not None
    assert defs.resolve_sensor_def("automation").default_status == dg.DefaultSensorStatus.RUNNING


def test_importing_the_code_location_imports_no_framework():
    code = ("import sys, compression_pipeline.definitions; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime', 'onnx', 'great_expectations', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"


def test_dagster_cli_validates_the_workspace():
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_make_run_plans_phases_and_never_benchmarks_beside_training(tmp_path):
    """`make run` (orchestration/launch.py): one in-process run per phase, each phase in a process of its own; the
    frameworks' model phases side by side, the benchmark session alone: one step measuring every model."""
    from compression_pipeline.orchestration.launch import QUIET, phases, stages
    from compression_pipeline.recipe import load_recipe

    defs = _defs(tmp_path)
    plan = phases(defs, load_recipe(DEFAULT_RECIPE))
    assert [p.name for p in plan] == ["data", "torch", "tensorflow", "benchmarks", "reports"]
    names = {p.name: {k.to_user_string() for k in p.keys} for p in plan}
    assert names["data"] == {"digits/raw_dataset", "digits/splits"}
    assert "digits/torch_pruned50_int8" in names["torch"] and "digits/tensorflow_tflite_int8" in names["tensorflow"]
    assert len(names["benchmarks"]) == 24 and all(k.endswith("_benchmark") for k in names["benchmarks"])
    assert {defs.resolve_assets_def(k).op.name for k in plan[3].keys} == {"digits__benchmarks"}
    assert names["reports"] == {"digits/report", "digits/deployment_candidate"}
    assert sum(len(p.keys) for p in plan) == len([k for k in defs.resolve_asset_graph().get_all_asset_keys()
                                                  if k.path[0] == "digits"])
    assert [[p.name for p in stage] for stage in stages(plan)] == [
        ["data"], ["torch", "tensorflow"], ["benchmarks"], ["reports"]]
    resolved = dg.validate_run_config(defs.resolve_job_def("digits_recompress"), QUIET)
    assert "in_process" in resolved["execution"]["multi_or_in_process_executor"]
    assert "-m compression_pipeline run $(FAMILY)" in (PROJECT_ROOT / "Makefile").read_text()


def test_editing_one_frameworks_baseline_leaves_the_others_code_version(tmp_path):
    import yaml

    from compression_pipeline.orchestration.family import Family
    from compression_pipeline.recipe import parse_recipe

    raw = yaml.safe_load((PROJECT_ROOT / "assets" / "fashion.yaml").read_text())
    before = parse_recipe(raw)
    raw["baseline"][0]["epochs"] += 1  # the torch baseline only
    after = parse_recipe(raw)

    def versions(recipe):
        return {k.to_user_string(): a.code_versions_by_key.get(k) for a in Family(recipe).build()
                if isinstance(a, dg.AssetsDefinition) for k in a.keys if k.path[-1].endswith("_baseline")}

    v0, v1 = versions(before), versions(after)
    assert v0["fashion/torch_baseline"] != v1["fashion/torch_baseline"]
    assert v0["fashion/tensorflow_baseline"] == v1["fashion/tensorflow_baseline"]
