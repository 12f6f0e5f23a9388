"""Through Dagster: the report links its HTML, the candidate is chosen with reasons, and a select rule that no
model meets keeps the previous candidate (its handle, its files) while the check says why."""

import json
from pathlib import Path

import dagster as dg

from compression_pipeline.definitions import build_definitions
from compression_pipeline.orchestration.resources import HandleIOManager

from conftest import write_recipe

CANDIDATE = dg.AssetKey(["tiny", "deployment_candidate"])


def _run(defs, instance, keys=None):
    job = defs.resolve_implicit_global_asset_job_def()
    selection = None if keys is None else [dg.AssetKey.from_user_string(k) for k in keys]
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=selection)


def _meta(result, key):
    return next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == key)


def test_candidate_is_chosen_then_kept_when_no_model_meets_the_rule(roots, tiny_recipe_dict):
    write_recipe(roots, tiny_recipe_dict)
    handles = HandleIOManager(artifact_root=str(roots.artifact_root))
    with dg.instance_for_test() as instance:
        first = _run(build_definitions(roots), instance)
        assert first.success
        report = _meta(first, "tiny/report")
        html = report["report_html"].path
        assert html.endswith("tiny/report/report.html") and "<img" in Path(html).read_text()
        assert "| int8 | torch | quantize_static |" in report["table"].md_str
        bench = _meta(first, "tiny/torch_int8_benchmark")
        for k in ("onnxruntime_b1_p50_ms", "onnxruntime_b4_p50_ms", "onnxruntime_b1_throughput", "accuracy",
                  "model_file_bytes"):
            assert isinstance(bench[k], (dg.FloatMetadataValue, dg.IntMetadataValue)), k  # plotted over time
        chosen = handles.load_good(CANDIDATE)
        assert chosen.info["candidate"] in ("torch_baseline", "torch_int8")
        assert len(chosen.info["decision"]["reasons"]) == 1  # the other model, with its reason
        current = roots.artifact_root / "tiny/deployment_candidate/current"
        model_bytes, card = (current / "model.onnx").read_bytes(), (current / "model_card.md").read_text()

        # A size limit no model meets: only the candidate re-runs, its check fails and says why.
        tiny_recipe_dict["select"] = {"max_file_bytes": 10}
        write_recipe(roots, tiny_recipe_dict)
        second = _run(build_definitions(roots), instance, ["tiny/deployment_candidate"])
        assert not second.success
        (check,) = second.get_asset_check_evaluations()
        assert check.check_name == "constraints_met" and check.passed is False
        assert f"the previous candidate {chosen.info['candidate']}" in check.description
        assert "> max_file_bytes 10" in check.description
    # Consumers still read the previous candidate; the failed attempt is kept as a run record only.
    assert handles.load_good(CANDIDATE) == chosen
    runs = [json.loads(p.read_text())
            for p in (roots.artifact_root / "_handles/tiny/deployment_candidate/runs").glob("*.json")]
    assert sorted(r["gates_passed"] for r in runs) == [False, True]
    assert (current / "model.onnx").read_bytes() == model_bytes and (current / "model_card.md").read_text() == card
