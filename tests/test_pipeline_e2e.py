"""Real materializations through Dagster: the default recipe end to end, and gates that stop bad data."""

import json
import os

import dagster as dg
import numpy as np
import pytest
import yaml

from compression_pipeline.definitions import build_definitions
from compression_pipeline.orchestration.resources import HandleIOManager

from conftest import DEFAULT_RECIPE, NPZ_DIGITS, digits_npz, write_recipe


def _run(defs, instance, selection=None):
    job = defs.resolve_implicit_global_asset_job_def()
    keys = None if selection is None else [dg.AssetKey.from_user_string(k) for k in selection]
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=keys)


def _checks(result) -> dict[str, tuple[bool, dict]]:
    out = {}
    for e in result.get_asset_check_evaluations():
        out[f"{e.asset_key.to_user_string()}:{e.check_name}"] = (e.passed, e.metadata)
    return out


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.mark.e2e(minutes=5)
def test_default_recipe_end_to_end(roots):
    # The default recipe exactly as shipped, with only the benchmark protocol shortened to keep the suite fast
    # (every cell still times its 50 runs; no time-based warmup or minimum).
    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    recipe["benchmark"].update(warmup_runs=2, warmup_s=0.0, min_time_s=0.0)
    # Train as a fresh step process does (`make run`): one torch thread per core, whatever earlier tests set.
    # The thread count changes float summation order, hence the trained weights and the accuracies gated here.
    import torch

    torch.set_num_threads(os.cpu_count())
    write_recipe(roots, recipe)
    defs = build_definitions(roots)
    with dg.instance_for_test() as instance:
        result = _run(defs, instance)
        assert result.success
        checks = _checks(result)
    # 7 data gates; an accuracy gate per model (13 PyTorch, 11 TensorFlow); parity + accuracy on each of the 8
    # PyTorch exports and on the ONNX and TFLite export of each of the 4 Keras models; the candidate's
    assert len(checks) == 7 + 24 + 16 + 16 + 1 and all(passed for passed, _ in checks.values()), \
        {k: v[1] for k, v in checks.items() if not v[0]}
    report = json.loads((roots.artifact_root / "digits/report/report.json").read_text())
    by_fw = {fw: {m["name"]: m for m in report["models"] if m["framework"] == fw} for fw in ("torch", "tensorflow")}
    models, tf = by_fw["torch"], by_fw["tensorflow"]
    assert set(models) == {"baseline", "int8", "dynamic_int8", "fp16", "sparse80", "pruned50", "lowrank", "student",
                           "pruned50_int8", "student_int8", "shared5", "sparse90", "sparse90_shared4"}
    assert set(tf) == {"baseline", "int8", "dynamic_int8", "fp16", "sparse80", "lowrank", "student", "student_int8",
                       "tflite_dynamic", "tflite_float16", "tflite_int8"}
    _check_tensorflow(report, models, tf)
    base, int8 = models["baseline"], models["int8"]
    assert base["accuracy"] >= 0.93 and base["params"] > 1_000_000
    assert int8["file_bytes"] <= 0.35 * base["file_bytes"]
    # the recipe's tolerances, held by the gates
    assert all(m["accuracy_drop"] <= m["tolerance"]["value"] for m in report["models"] if m["tolerance"])
    # every drop with its interval from the paired predictions on digits' 360 test images
    assert all(m["test_samples"] == 360 for m in report["models"])
    for m in report["models"]:
        if m["parent"]:
            lo, hi = m["accuracy_drop_ci"]
            assert lo <= m["accuracy_drop"] <= hi and hi - lo >= 2 / 360, m
    # each method's own claim, on the deployed artifact
    assert models["sparse80"]["nonzero_params"] <= 0.25 * base["params"]
    assert "no dense speedup" in models["sparse80"]["note"]
    assert models["sparse80"]["gzip_bytes"] <= 0.4 * base["gzip_bytes"]
    assert models["pruned50"]["params"] <= 0.30 * base["params"] and models["pruned50"]["macs_ratio"] <= 0.30
    assert models["pruned50_int8"]["file_bytes"] <= 0.10 * base["file_bytes"]
    assert models["fp16"]["file_bytes"] <= 0.55 * base["file_bytes"]
    assert models["lowrank"]["params"] <= 0.5 * base["params"]
    assert models["student"]["params"] <= 0.2 * base["params"]
    # weight sharing: the compact format (codebooks + packed indices, entropy coded) is where the storage goes
    assert models["shared5"]["compact_bytes"] <= 0.25 * base["file_bytes"]
    assert models["sparse90_shared4"]["compact_bytes"] * 25 <= base["file_bytes"]
    assert models["sparse90_shared4"]["chain"] == ["baseline", "sparse90", "sparse90_shared4"]
    assert (roots.artifact_root / models["sparse90_shared4"]["compact_artifact"]).is_file()
    ablation = models["student"]["ablation"]
    assert {"distilled_accuracy", "student_alone_accuracy", "gain"} <= set(ablation)
    assert models["student_int8"]["chain"] == ["baseline", "student", "student_int8"]
    assert {(b["runtime"], b["batch_size"]) for b in base["benchmarks"]} == {
        ("onnxruntime", 1), ("onnxruntime", 32), ("torch", 1), ("torch", 32)}
    assert {(b["runtime"], b["batch_size"]) for b in int8["benchmarks"]} == {("onnxruntime", 1), ("onnxruntime", 32)}
    assert {(b["runtime"], b["batch_size"]) for b in models["pruned50"]["benchmarks"]} == {
        ("onnxruntime", 1), ("onnxruntime", 32), ("torch", 1), ("torch", 32)}
    assert all(b["runs"] >= 50 and b["provider"] for m in report["models"] for b in m["benchmarks"])
    assert report["environment"]["cpu"]["cores"] >= 1 and "onnxruntime-gpu" in str(report["environment"]["libraries"]) \
        or "onnxruntime" in report["environment"]["libraries"]
    md = (roots.artifact_root / "digits/report/report.md").read_text()
    assert "| int8 | torch | quantize_static | baseline |" in md
    folder = roots.artifact_root / "digits/report"
    assert all((folder / f"{p}.png").read_bytes().startswith(b"\x89PNG")
               for p in ("accuracy_latency", "sizes", "speedup"))
    assert (folder / "report.html").read_text().count("data:image/png;base64,") == 4  # + frameworks.png
    # Every model on every runtime available here, with the full statistics; fp16 skipped on CPU with a reason.
    assert all({"p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "throughput", "load_s", "peak_host_mb"}
               <= set(b) for m in report["models"] for b in m["benchmarks"])
    decision = json.loads((roots.artifact_root / "digits/deployment_candidate/current/decision.json").read_text())
    names = {f"{m['framework']}_{m['name']}" for m in report["models"]}
    assert decision["chosen"] in names and set(decision["reasons"]) == names - {decision["chosen"]}
    assert "| pruned50_int8 | torch | quantize_static | pruned50 |" in md
    assert "**sparse80** (torch, prune_unstructured): storage only: no dense speedup" in md
    assert "trained alone" in md


def _check_tensorflow(report, torch_models, tf):
    """The TensorFlow half of the default recipe, and the comparison with PyTorch."""
    base, tbase = torch_models["baseline"], tf["baseline"]
    assert tbase["params"] == base["params"] and tbase["accuracy"] >= 0.93  # the same CNN, same gate
    assert {(b["runtime"], b["batch_size"]) for b in tbase["benchmarks"]} == {
        (rt, bs) for rt in ("onnxruntime", "tensorflow", "tflite") for bs in (1, 32)}
    assert {b["runtime"] for b in tf["tflite_int8"]["benchmarks"]} == {"tflite"}
    assert tf["tflite_int8"]["format"] == "tflite"
    assert {b["runtime"] for b in tf["int8"]["benchmarks"]} == {"onnxruntime"}
    assert {b["runtime"] for b in tf["sparse80"]["benchmarks"]} == {"onnxruntime", "tensorflow", "tflite"}
    # each method's claim in Keras too
    assert tf["int8"]["file_bytes"] <= 0.35 * tbase["file_bytes"]
    assert tf["tflite_int8"]["file_bytes"] <= 0.35 * tbase["file_bytes"]
    assert tf["tflite_dynamic"]["file_bytes"] <= 0.35 * tbase["file_bytes"]
    assert tf["tflite_float16"]["file_bytes"] <= 0.55 * tbase["file_bytes"]
    assert tf["sparse80"]["nonzero_params"] <= 0.25 * tbase["params"]
    assert tf["lowrank"]["params"] <= 0.5 * tbase["params"] and tf["student"]["params"] <= 0.2 * tbase["params"]
    assert tf["student"]["ablation"]["runtime"] == "tensorflow"
    # the comparison: every model built in both frameworks, side by side, from the measured entries
    compared = {c["name"]: c for c in report["framework_comparison"]}
    assert set(compared) == set(torch_models) & set(tf)
    rows = {r["framework"]: r for r in compared["int8"]["rows"]}
    assert rows["tensorflow"]["accuracy"] == tf["int8"]["accuracy"]
    assert rows["torch"]["file_bytes"] == torch_models["int8"]["file_bytes"]


def _npz_recipe(roots, tiny_recipe_dict):
    tiny_recipe_dict["dataset"] = dict(NPZ_DIGITS)
    write_recipe(roots, tiny_recipe_dict)
    return build_definitions(roots)


def test_bad_data_fails_its_gate_stops_downstream_and_keeps_the_last_good(roots, tiny_recipe_dict):
    defs = _npz_recipe(roots, tiny_recipe_dict)
    handles = HandleIOManager(artifact_root=str(roots.artifact_root))
    splits_key = dg.AssetKey(["tiny", "splits"])
    with dg.instance_for_test() as instance:
        digits_npz(roots.data_root / "digits.npz")
        good = _run(defs, instance, ["tiny/raw_dataset", "tiny/splits"])
        assert good.success
        last_good = handles.load_good(splits_key)

        def poison(X, y):
            X[10, 20] = np.nan
            X[11, 3] = 99.0
            return X, y

        digits_npz(roots.data_root / "digits.npz", poison)
        bad = _run(defs, instance)
        assert not bad.success
        checks = _checks(bad)
        assert checks["tiny/splits:no_missing"][0] is False
        assert checks["tiny/splits:value_range"][0] is False
        failed = checks["tiny/splits:no_missing"][1]["expectations"].value
        assert any(e.get("unexpected_count") == 1 for e in failed if not e["success"])
        # Nothing downstream of the failed gate ran.
        assert _materialized(bad) == {"tiny/raw_dataset", "tiny/splits"}
        # What consumers read is still the last good splits artifact, byte for byte.
        assert handles.load_good(splits_key) == last_good
        runs = list((roots.artifact_root / "_handles/tiny/splits/runs").glob("*.json"))
        assert len(runs) == 2


def test_a_model_below_its_floor_fails_its_gate_and_stops_its_subtree(roots, tiny_recipe_dict):
    # Three epochs of a width-8 CNN do not reach 99.9 %: the baseline's gate fails and nothing is built on it.
    tiny_recipe_dict["gates"]["accuracy_floor"] = 0.999
    write_recipe(roots, tiny_recipe_dict)
    with dg.instance_for_test() as instance:
        result = _run(build_definitions(roots), instance)
    assert not result.success
    passed, meta = _checks(result)["tiny/torch_baseline:accuracy_gate"]
    assert passed is False and meta["floor"].value == 0.999 and meta["accuracy"].value < 0.999
    assert _materialized(result) == {"tiny/raw_dataset", "tiny/splits", "tiny/torch_baseline"}
    with pytest.raises(Exception, match="no materialization that passed its gates"):
        HandleIOManager(artifact_root=str(roots.artifact_root)).load_good(dg.AssetKey(["tiny", "torch_baseline"]))
