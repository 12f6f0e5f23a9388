"""Deployment-candidate selection and the model card, on hand-made reports (no Dagster, no training)."""

import copy
import json

import pytest

from compression_pipeline import stages
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.errors import RecipeError
from compression_pipeline.recipe import Select, parse_recipe
from compression_pipeline.report.select import select


def model(name, p50, file_bytes, accuracy=0.95, passed=True, cells=((("onnxruntime", 1),)), artifact=None, sha=None):
    gates = [{"name": "accuracy_gate", "passed": passed, "description": f"{name} accuracy gate", "metadata": {}}]
    return {"name": name, "framework": "torch", "method": None if name == "baseline" else "m", "parent":
            None if name == "baseline" else "baseline", "chain": ["baseline"] if name == "baseline" else
            ["baseline", name], "config": {}, "accuracy": accuracy, "accuracy_runtime": "onnxruntime",
            "baseline_accuracy": 0.95, "accuracy_drop": 0.95 - accuracy, "accuracy_drop_relative": 0.0,
            "tolerance": None, "params": 1000, "file_bytes": file_bytes, "gzip_bytes": file_bytes // 2,
            "gates_passed": passed, "gates": gates, "artifact": artifact or f"fam/{name}.onnx", "sha256": sha or "0",
            "benchmarks": [{"runtime": rt, "provider": "CPUExecutionProvider", "device": "cpu", "precision": "fp32",
                            "batch_size": bs, "p50_ms": p50 * bs, "p90_ms": 1.2 * p50 * bs, "p95_ms": 1.3 * p50 * bs,
                            "p99_ms": 1.5 * p50 * bs, "mean_ms": p50 * bs, "std_ms": 0.1, "throughput": 1e3 / p50,
                            "runs": 50} for rt, bs in cells],
            "benchmarks_skipped": []}


def report(*models):
    return {"family": "fam", "environment": {"cpu": {"model": "x", "cores": 2, "isa": []}, "threads": 2},
            "dataset": {"source": "sklearn_digits"}, "models": list(models)}


def test_picks_the_fastest_model_whose_gates_passed_and_says_why_not_the_others():
    rep = report(model("baseline", 2.0, 4000), model("int8", 1.0, 1000), model("broken", 0.5, 900, passed=False))
    d = select(rep, Select())
    assert d.chosen == "torch_int8" and d.value == 1.0
    assert d.reasons["torch_broken"].startswith("gates failed: broken accuracy gate")
    assert "2.00x higher" in d.reasons["torch_baseline"] and "torch_int8" in d.reasons["torch_baseline"]
    assert [r["model"] for r in d.ranking] == ["torch_int8", "torch_baseline"]
    # With the gate requirement off (explicitly), the failed model would win: the gate is what excluded it.
    assert select(rep, Select(require_gates=False)).chosen == "torch_broken"


def test_size_limit_accuracy_floor_and_missing_cells_exclude_with_reasons():
    rep = report(model("baseline", 2.0, 4000), model("int8", 1.0, 1000), model("small", 1.5, 900, accuracy=0.93),
                 model("batch32only", 0.1, 500, cells=(("onnxruntime", 32),)))
    d = select(rep, Select(max_file_bytes=950))
    assert d.chosen == "torch_small"
    assert d.reasons["torch_int8"] == "file 1,000 bytes > max_file_bytes 950"
    assert d.reasons["torch_baseline"] == "file 4,000 bytes > max_file_bytes 950"
    assert d.reasons["torch_batch32only"] == "not benchmarked on onnxruntime fp32 at batch 1"
    d = select(rep, Select(max_file_bytes=950, min_accuracy=0.94))
    assert d.chosen is None and d.reasons["torch_small"] == "accuracy 0.9300 < min_accuracy 0.94"
    assert set(d.reasons) == {"torch_baseline", "torch_int8", "torch_small", "torch_batch32only"}


def test_other_objectives_and_deterministic_ties():
    rep = report(model("baseline", 2.0, 4000, accuracy=0.96), model("a", 1.0, 1000, accuracy=0.95),
                 model("b", 1.0, 800, accuracy=0.95))
    assert select(rep, Select(objective="accuracy")).chosen == "torch_baseline"
    assert select(rep, Select(objective="file_bytes")).chosen == "torch_b"
    assert select(rep, Select(objective="throughput")).chosen == "torch_b"  # tie on speed: the smaller file wins
    d = select(rep, Select())
    assert d.chosen == "torch_b" and "tie-break" in d.reasons["torch_a"]


def test_select_must_name_a_measured_cell(tiny_recipe_dict):
    tiny_recipe_dict["select"] = {"batch_size": 8}
    with pytest.raises(RecipeError, match=r"select\.batch_size: batch size 8 is not benchmarked; allowed: \[1, 4\]"):
        parse_recipe(tiny_recipe_dict)
    tiny_recipe_dict["select"] = {"objective": "fastest"}
    with pytest.raises(RecipeError, match=r"select\.objective"):
        parse_recipe(tiny_recipe_dict)


def _store_report(store, rep):
    """Give every model a real artifact in the store and store the report as the report asset would."""
    rep = copy.deepcopy(rep)
    for m in rep["models"]:
        art = store.write_bytes("fam/models", f"model {m['name']}".encode() * 10, "onnx", "onnx", "torch")
        m.update(artifact=art.path, sha256=art.sha256, file_bytes=art.bytes)
    return Handle(artifact=store.write_bytes("fam/report/snapshots", json.dumps(rep).encode(), "json", "json"))


def test_candidate_stage_copies_writes_the_card_and_keeps_the_previous_when_none_qualifies(tmp_path, tiny_recipe_dict):
    store = ArtifactStore(tmp_path)
    splits = Handle(artifact=store.write_bytes("fam/splits", b"npz", "npz", "npz"), info={"rows": {"train": 10}})
    rep = report(model("baseline", 2.0, 4000), model("int8", 1.0, 1000))
    report_h = _store_report(store, rep)
    chosen = stages.deployment_candidate(parse_recipe(tiny_recipe_dict), store, report_h, splits, previous=None)
    assert chosen.gates_passed and chosen.info["candidate"] == "torch_int8"
    source = json.loads(store.path(report_h.artifact).read_text())["models"][1]
    assert chosen.artifact.sha256 == source["sha256"] and chosen.artifact.path.startswith("tiny/deployment_candidate/")
    card = store.path(chosen.artifact).parent.joinpath("current/model_card.md").read_text()
    for section in ("## Data", "## Lineage (parent chain)", "## Config", "## Accuracy", "## Latency", "## Environment",
                    "## Other models and why they were not chosen"):
        assert section in card
    assert "| torch_baseline | meets every constraint, but its latency_p50 is 2 ms vs 1 ms for torch_int8" in card

    tiny_recipe_dict["select"] = {"max_file_bytes": 1}
    kept = stages.deployment_candidate(parse_recipe(tiny_recipe_dict), store, report_h, splits, previous=chosen)
    assert not kept.gates_passed and kept.artifact == chosen.artifact and kept.info["kept_previous"] == "torch_int8"
    gate = kept.info["gates"][0]
    assert gate["name"] == "constraints_met" and not gate["passed"]
    assert "the previous candidate torch_int8" in gate["description"] and "max_file_bytes 1" in gate["description"]
    # The stable copy for deployment tooling was not touched by the failed selection.
    assert store.path(chosen.artifact).parent.joinpath("current/model.onnx").read_bytes() == \
        store.path(chosen.artifact).read_bytes()
    none = stages.deployment_candidate(parse_recipe(tiny_recipe_dict), store, report_h, splits, previous=None)
    assert none.artifact is None and "there is no previous candidate" in none.info["gates"][0]["description"]
