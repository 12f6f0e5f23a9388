"""Declarative automation, the nightly schedule and lineage, on a really materialized TINY family.

The family (an .npz dataset file, observed by content hash) is materialized once, in process, by executing
the run request of its nightly schedule; every test then works on its own copy of the instance, the data and
the artifacts. Automation is evaluated with Dagster's own ``evaluate_automation_conditions``, tick by tick.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from compression_pipeline.definitions import build_definitions
from compression_pipeline.orchestration.lineage import lineage, render
from compression_pipeline.settings import PROJECT_ROOT, Settings

from conftest import NPZ_DIGITS, TINY, digits_npz, write_recipe

NIGHT = dt.datetime(2026, 1, 2, 2, 0, tzinfo=dt.UTC)
FAMILY = {"tiny/raw_dataset", "tiny/splits", "tiny/torch_baseline", "tiny/torch_baseline_onnx", "tiny/torch_int8",
          "tiny/torch_baseline_benchmark", "tiny/torch_int8_benchmark", "tiny/report", "tiny/deployment_candidate"}
SOURCE = "tiny/dataset_file"


def _settings(base: Path) -> Settings:
    return Settings(base / "recipes", base / "data", base / "artifacts")


def _requested(result, defs) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string() for k in graph.get_all_asset_keys() if result.get_num_requested(k)}


def _execute(defs, instance, keys=None):
    job = defs.resolve_job_def("tiny_recompress")
    selection = None if keys is None else [dg.AssetKey.from_user_string(k) for k in keys]
    return job.execute_in_process(instance=instance, asset_selection=selection, raise_on_error=False)


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """The TINY family with an .npz dataset, materialized by the run request of its nightly schedule."""
    base = tmp_path_factory.mktemp("family")
    settings = _settings(base)
    for p in (settings.recipes_dir, settings.data_root, settings.artifact_root, base / "home"):
        p.mkdir()
    recipe = copy.deepcopy(TINY)
    recipe["dataset"] = dict(NPZ_DIGITS)
    write_recipe(settings, recipe)
    digits_npz(settings.data_root / "digits.npz")
    (base / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("tiny_nightly")
    job = defs.resolve_job_def("tiny_recompress")
    with dg.DagsterInstance.from_config(str(base / "home")) as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=NIGHT) as context:
            requests = schedule.evaluate_tick(context).run_requests
        assert len(requests) == 1
        request = requests[0]
        # The run config the schedule asks for is valid for the job it targets (raises if not).
        dg.validate_run_config(job, request.run_config)
        result = job.execute_in_process(instance=instance, run_config=request.run_config, tags=request.tags)
        assert result.success
        run_id = result.run_id
    return {"base": base, "schedule": schedule, "job": job, "request": request, "run_id": run_id,
            "materialized": {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()},
            "observed": {e.asset_key.to_user_string() for e in result.get_asset_observation_events()}}


@pytest.fixture
def family(nightly, tmp_path):
    """A private copy of the materialized family: (settings, recipe path, DAGSTER_HOME, open instance)."""
    base = tmp_path / "family"
    shutil.copytree(nightly["base"], base)
    with dg.DagsterInstance.from_config(str(base / "home")) as instance:
        yield _settings(base), base / "recipes" / "tiny.yaml", base / "home", instance


# --- the nightly schedule ----------------------------------------------------------------------------------
def test_nightly_schedule_recompresses_the_whole_family(nightly):
    schedule, job, request = nightly["schedule"], nightly["job"], nightly["request"]
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "tiny_recompress"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # The job covers the whole family and nothing else, and re-observes the dataset file first.
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == FAMILY | {SOURCE}
    assert request.asset_selection is None  # the job's own selection: everything in the family
    assert nightly["materialized"] == FAMILY and nightly["observed"] == {SOURCE}


def test_the_recipe_schedule_field_sets_the_cron(tmp_path):
    settings = Settings(tmp_path / "recipes", tmp_path / "data", tmp_path / "artifacts")
    settings.recipes_dir.mkdir()
    write_recipe(settings, {**copy.deepcopy(TINY), "schedule": "30 3 * * 1"})
    schedule = build_definitions(settings).resolve_schedule_def("tiny_nightly")
    assert schedule.cron_schedule == "30 3 * * 1"
    monday = dt.datetime(2026, 1, 5, 3, 30, tzinfo=dt.UTC)
    with dg.instance_for_test() as instance, \
            dg.build_schedule_context(instance=instance, scheduled_execution_time=monday) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert dg.validate_run_config(build_definitions(settings).resolve_job_def("tiny_recompress"), request.run_config)


# --- automation: editing the recipe ------------------------------------------------------------------------
EDITS = {
    "variant": (lambda r: r["variants"]["int8"].update(samples=32),
                {"tiny/torch_int8"},
                {"tiny/torch_int8", "tiny/torch_int8_benchmark", "tiny/report", "tiny/deployment_candidate"}),
    "baseline": (lambda r: r["baseline"].update(epochs=2),
                 {"tiny/torch_baseline"},
                 FAMILY - {"tiny/raw_dataset", "tiny/splits"}),
    "benchmark": (lambda r: r["benchmark"].update(min_runs=6),
                  {"tiny/torch_baseline_benchmark", "tiny/torch_int8_benchmark", "tiny/report",
                   "tiny/deployment_candidate"},
                  {"tiny/torch_baseline_benchmark", "tiny/torch_int8_benchmark", "tiny/report",
                   "tiny/deployment_candidate"}),
}


@pytest.mark.parametrize("edit", EDITS)
def test_editing_one_recipe_entry_requests_exactly_its_subtree(family, edit):
    settings, recipe_path, _, instance = family
    change, changed_versions, subtree = EDITS[edit]
    before = build_definitions(settings)
    tick = dg.evaluate_automation_conditions(defs=before, instance=instance)
    assert _requested(tick, before) == set(), "a freshly materialized family is up to date"

    recipe = yaml.safe_load(recipe_path.read_text())
    change(recipe)
    recipe_path.write_text(yaml.safe_dump(recipe))
    after = build_definitions(settings)
    versions = [{k.to_user_string(): d.resolve_asset_graph().get(k).code_version
                 for k in d.resolve_asset_graph().get_all_asset_keys()} for d in (before, after)]
    assert {k for k in versions[0] if versions[0][k] != versions[1][k]} == changed_versions

    tick = dg.evaluate_automation_conditions(defs=after, instance=instance, cursor=tick.cursor)
    assert _requested(tick, after) == subtree
    # Requested once, not again on the next tick while nothing else happened.
    tick = dg.evaluate_automation_conditions(defs=after, instance=instance, cursor=tick.cursor)
    assert _requested(tick, after) == set()


def test_what_make_run_updates_triggers_nothing_and_what_the_ui_updates_does(family):
    """A launch (`make run`) builds what stands below its updates itself, so the sensor of a `make ui` running beside
    it must not request the next phase's assets between two phases; the same update from any other run (the UI's,
    the schedule's) requests everything below it."""
    from compression_pipeline.orchestration.automation import LAUNCH_TAG

    settings, _, _, instance = family
    defs = build_definitions(settings)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    job, data = defs.resolve_job_def("tiny_recompress"), [dg.AssetKey(["tiny", n]) for n in ("raw_dataset", "splits")]
    assert job.execute_in_process(instance=instance, asset_selection=data, tags={LAUNCH_TAG: "0123456789ab"}).success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick, defs) == set()
    assert job.execute_in_process(instance=instance, asset_selection=data).success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick, defs) == FAMILY - {"tiny/raw_dataset", "tiny/splits"}


# --- automation: the dataset file --------------------------------------------------------------------------
def test_a_changed_dataset_file_requests_the_whole_chain(family):
    settings, _, _, instance = family
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    source = graph.get(dg.AssetKey.from_user_string(SOURCE))
    assert source.is_observable and not source.is_materializable and source.group_name == "data"
    assert graph.get(dg.AssetKey(["tiny", "raw_dataset"])).parent_keys == {source.key}
    # Tick times one minute after a 5-minute boundary: the observation cron passes once, between the first two.
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    now += dt.timedelta(minutes=5 - now.minute % 5 + 1)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    assert _requested(tick, defs) == set()

    # The sensor observes the file on its cron; an unchanged hash is no update.
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor,
                                             evaluation_time=now + dt.timedelta(minutes=5))
    assert _requested(tick, defs) == {SOURCE}
    assert _execute(defs, instance, [SOURCE]).success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor,
                                             evaluation_time=now + dt.timedelta(minutes=6))
    assert _requested(tick, defs) == set()

    def relabel_one(X, y):  # a different, still valid dataset: one image flipped left-right
        X[0] = X[0].reshape(8, 8)[:, ::-1].ravel()
        return X, y

    digits_npz(settings.data_root / "digits.npz", relabel_one)
    assert _execute(defs, instance, [SOURCE]).success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor,
                                             evaluation_time=now + dt.timedelta(minutes=7))
    assert _requested(tick, defs) == FAMILY


def _find(result, label):
    if result.condition.get_label() == label:
        return result
    for child in result.child_results:
        found = _find(child, label)
        if found is not None:
            return found
    return None


def test_a_failed_blocking_check_requests_nothing_downstream(family):
    settings, _, _, instance = family
    defs = build_definitions(settings)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    def poison(X, y):
        X[5, 7] = np.nan
        return X, y

    digits_npz(settings.data_root / "digits.npz", poison)
    bad = _execute(defs, instance, [SOURCE, "tiny/raw_dataset", "tiny/splits"])
    assert not bad.success
    failed = {e.check_name for e in bad.get_asset_check_evaluations() if not e.passed}
    assert "no_missing" in failed

    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick, defs) == set()
    # The splits did update, so the baseline's eager part wanted to run: the blocking-check guard stopped it.
    [baseline] = [r for r in tick.results if r.key == dg.AssetKey(["tiny", "torch_baseline"])]
    assert _find(baseline, "eager or code version changed").true_subset.size == 1
    assert _find(baseline, "all_deps_blocking_checks_passed").true_subset.size == 0


# --- lineage -----------------------------------------------------------------------------------------------
def test_every_model_materialization_names_parent_dataset_version_and_recipe_entry(family):
    _settings, _recipe_path, _, instance = family
    splits = instance.get_latest_materialization_event(dg.AssetKey(["tiny", "splits"]))
    splits_version = splits.asset_materialization.tags["dagster/data_version"]
    expected = {"torch_baseline": ("tiny/splits", "baseline"),
                "torch_baseline_onnx": ("tiny/torch_baseline", "baseline"),
                "torch_int8": ("tiny/torch_baseline_onnx", "variants.int8")}
    for name, (parent, entry) in expected.items():
        md = instance.get_latest_materialization_event(dg.AssetKey(["tiny", name])).asset_materialization.metadata
        assert md["parent_asset"].value == dg.AssetKey.from_user_string(parent)
        assert md["dataset_version"].value == splits_version
        assert md["recipe_entry"].value == entry
        assert md["recipe"].value.endswith("tiny.yaml")
        assert entry in md["recipe_config"].value
    report = instance.get_latest_materialization_event(dg.AssetKey(["tiny", "report"])).asset_materialization
    assert "parent_asset" not in report.metadata and report.metadata["recipe_entry"].value == "benchmark, gates"
    int8 = instance.get_latest_materialization_event(dg.AssetKey(["tiny", "torch_int8"])).asset_materialization
    assert int8.metadata["recipe_config"].value["variants.int8"]["config"]["samples"] == 64
    assert int8.metadata["parent"].value == "baseline"


def test_lineage_follows_a_model_back_to_its_dataset_file(family, nightly):
    settings, _, _, instance = family
    steps = lineage(instance, build_definitions(settings), "tiny/torch_int8")
    keys = [s.key for s in steps]
    assert keys[0] == "tiny/torch_int8" and keys[-1] == SOURCE
    assert set(keys) == {"tiny/torch_int8", "tiny/torch_baseline_onnx", "tiny/torch_baseline", "tiny/splits",
                         "tiny/raw_dataset", SOURCE}
    by_key = {s.key: s for s in steps}
    for s in steps:
        assert s.run_id == nightly["run_id"] and not s.stale, (s.key, s.stale)
        # The versions the step was built from are its parents' recorded data versions.
        for parent, version in s.inputs.items():
            assert by_key[parent].data_version == version
    file_sha = by_key[SOURCE].metadata["sha256"]
    assert by_key[SOURCE].data_version == file_sha
    assert by_key["tiny/raw_dataset"].metadata["source_sha256"] == file_sha
    assert by_key["tiny/torch_int8"].checks == {"accuracy_gate": "passed"}
    assert by_key["tiny/splits"].checks["no_leakage"] == "passed"


def test_lineage_marks_what_a_recipe_edit_made_stale(family):
    settings, recipe_path, _, instance = family
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["variants"]["int8"]["samples"] = 32
    recipe_path.write_text(yaml.safe_dump(recipe))
    steps = {s.key: s for s in lineage(instance, build_definitions(settings), "tiny/torch_int8")}
    assert steps["tiny/torch_int8"].stale and "recipe edited" in steps["tiny/torch_int8"].stale[0]
    assert not any(s.stale for k, s in steps.items() if k != "tiny/torch_int8")
    assert "STALE: code version" in render(list(steps.values()))


def test_lineage_command_prints_the_chain_from_the_instance(family, nightly):
    settings, _, home, _ = family
    env = {**os.environ, "DAGSTER_HOME": str(home), "COMPRESSION_PIPELINE_RECIPES": str(settings.recipes_dir),
           "COMPRESSION_PIPELINE_DATA": str(settings.data_root),
           "COMPRESSION_PIPELINE_ARTIFACTS": str(settings.artifact_root)}
    cmd = [sys.executable, "-m", "compression_pipeline", "lineage"]
    out = subprocess.run([*cmd, "tiny/torch_int8"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT,
                         check=False)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.splitlines()[0].startswith("tiny/torch_int8  [models]  current")
    assert f"run {nightly['run_id']}" in text and "entry variants.int8" in text
    assert "parent          tiny/torch_baseline_onnx @ " in text and "gates           accuracy_gate passed" in text
    assert text.index("tiny/torch_baseline_onnx  [exports]") < text.index(f"{SOURCE}  [data]")
    as_json = json.loads(subprocess.run([*cmd, "tiny/torch_int8", "--json"], env=env, capture_output=True,
                                        text=True, cwd=PROJECT_ROOT, check=True).stdout)
    assert as_json[0]["metadata"]["recipe_config"]["variants.int8"]["method"] == "quantize_static"
    bad = subprocess.run([*cmd, "tiny/nope"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT,
                         check=False)
    assert bad.returncode == 2 and "no asset 'tiny/nope'" in bad.stderr and "tiny/torch_int8" in bad.stderr
