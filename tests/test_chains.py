"""Variant chains through Dagster: a torch method's model, its export, an ONNX method on that export; the lineage
edges, the metadata every variant records, and a failing gate on a parent stopping only its own subtree."""

import json

import dagster as dg
import pytest

from compression_pipeline.definitions import build_definitions
from compression_pipeline.orchestration.resources import HandleIOManager

from conftest import write_recipe

PRUNED = {"from": "baseline", "method": "prune_structured", "ratio": 0.5, "finetune_epochs": 1,
          "finetune_teacher": "parent"}
CHAIN = {"pruned": PRUNED, "pruned_int8": {"from": "pruned", "method": "quantize_static", "samples": 64}}


def _run(defs, instance, selection=None):
    job = defs.resolve_implicit_global_asset_job_def()
    keys = None if selection is None else [dg.AssetKey.from_user_string(k) for k in selection]
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=keys)


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _parents(graph, key):
    return {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}


def test_a_chain_materializes_with_lineage_and_full_metadata(roots, tiny_recipe_dict):
    tiny_recipe_dict["variants"].update(CHAIN)
    write_recipe(roots, tiny_recipe_dict)
    defs = build_definitions(roots)
    graph = defs.resolve_asset_graph()
    assert _parents(graph, "tiny/torch_pruned") == {"tiny/torch_baseline", "tiny/splits"}
    assert _parents(graph, "tiny/torch_pruned_onnx") == {"tiny/torch_pruned", "tiny/splits", "tiny/torch_baseline_onnx"}
    assert _parents(graph, "tiny/torch_pruned_int8") == {"tiny/torch_pruned_onnx", "tiny/splits",
                                                         "tiny/torch_baseline_onnx"}
    assert _parents(graph, "tiny/torch_pruned_benchmark") == {"tiny/torch_pruned_onnx", "tiny/torch_pruned"}
    assert graph.get(dg.AssetKey.from_user_string("tiny/torch_pruned")).kinds >= {"pytorch"}
    with dg.instance_for_test() as instance:
        result = _run(defs, instance)
        assert result.success
        checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
                  for e in result.get_asset_check_evaluations()}
        mats = {e.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    for key in ("tiny/torch_pruned:accuracy_gate", "tiny/torch_pruned_onnx:parity",
                "tiny/torch_pruned_onnx:accuracy_gate", "tiny/torch_pruned_int8:accuracy_gate"):
        assert checks[key] is True
    handles = HandleIOManager(artifact_root=str(roots.artifact_root))
    pruned = handles.load_good(dg.AssetKey(["tiny", "torch_pruned"])).info
    export = handles.load_good(dg.AssetKey(["tiny", "torch_pruned_onnx"])).info
    int8 = handles.load_good(dg.AssetKey(["tiny", "torch_pruned_int8"])).info
    baseline = handles.load_good(dg.AssetKey(["tiny", "torch_baseline"])).info
    for info in (pruned, export, int8):
        for field in ("method", "config", "parent", "params", "nonzero_params", "macs", "file_bytes", "accuracy",
                      "accuracy_drop", "accuracy_drop_relative", "accuracy_drop_ci", "test_samples", "compress_s",
                      "seed", "versions"):
            assert info.get(field) is not None, (info["name"], info["form"], field)
        assert info["versions"]["torch"] and info["versions"]["onnx"]
    assert export["gzip_bytes"] and int8["gzip_bytes"]  # a deployable's storage facts (the report's)
    assert pruned["config"] == {**pruned["config"], "ratio": 0.5, "finetune_epochs": 1}
    assert pruned["accuracy_runtime"] == "torch"
    assert export["accuracy_runtime"] == int8["accuracy_runtime"] == "onnxruntime"
    assert pruned["params"] <= 0.3 * baseline["params"] and pruned["macs"] <= 0.3 * baseline["macs"]
    assert export["macs"] == int8["macs"] == pruned["macs"] and int8["parent"] == "pruned"
    assert export["accuracy_drop"] == pytest.approx(export["baseline_accuracy"] - export["accuracy"])
    assert int8["file_bytes"] < 0.7 * export["file_bytes"]  # int8 weights; a 5k-param graph is mostly overhead
    # Dagster metadata shows the structured facts too
    assert mats["tiny/torch_pruned"]["config"].value["ratio"] == 0.5
    assert "torch" in mats["tiny/torch_pruned_int8"]["versions"].value
    report = json.loads((roots.artifact_root / "tiny/report/report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert models["pruned_int8"]["chain"] == ["baseline", "pruned", "pruned_int8"]
    assert models["pruned"]["macs_ratio"] <= 0.3 and models["pruned"]["nonzero_params"] == models["pruned"]["params"]


def test_a_failing_parent_gate_stops_its_children_and_keeps_the_last_good(roots, tiny_recipe_dict):
    tiny_recipe_dict["variants"].update(CHAIN)
    write_recipe(roots, tiny_recipe_dict)
    handles = HandleIOManager(artifact_root=str(roots.artifact_root))
    pruned_key = dg.AssetKey(["tiny", "torch_pruned"])
    with dg.instance_for_test() as instance:
        first = _run(build_definitions(roots), instance,
                     ["tiny/raw_dataset", "tiny/splits", "tiny/torch_baseline", "tiny/torch_pruned"])
        assert first.success
        last_good = handles.load_good(pruned_key)
        # A destructive prune (95 % of the channels, no fine-tuning) under a zero tolerance cannot pass.
        tiny_recipe_dict["variants"]["pruned"] = {**PRUNED, "ratio": 0.95, "finetune_epochs": 0,
                                                  "max_accuracy_drop": {"value": 0.0, "mode": "absolute"}}
        write_recipe(roots, tiny_recipe_dict)
        result = _run(build_definitions(roots), instance)
        assert not result.success
        checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": (e.passed, e.metadata)
                  for e in result.get_asset_check_evaluations()}
    passed, meta = checks["tiny/torch_pruned:accuracy_gate"]
    assert passed is False and meta["tolerance"].value == 0.0 and meta["drop_absolute"].value > 0
    done = _materialized(result)
    # Only the failed variant's subtree of models stopped: the baseline's other variant went on. The benchmark
    # session (one step measuring every model together) waits on every model's gate, so it did not run in this
    # run; the failure sensor then measures the last good models and rebuilds the report (test_bad_input.py).
    assert "tiny/torch_pruned" in done
    assert not done & {"tiny/torch_pruned_onnx", "tiny/torch_pruned_int8", "tiny/torch_pruned_benchmark",
                       "tiny/torch_pruned_int8_benchmark", "tiny/torch_int8_benchmark", "tiny/report"}
    assert "tiny/torch_int8" in done
    # What consumers read is still the earlier, good pruned model.
    assert handles.load_good(pruned_key) == last_good
    assert len(list((roots.artifact_root / "_handles/tiny/torch_pruned/runs").glob("*.json"))) == 2
