"""Real materializations through Dagster: gates that stop bad data and collapsed models, and keep the last good.
(The default recipe end to end runs as `make run` runs it: tests/test_launch.py.)"""


import dagster as dg
import numpy as np
import pytest

from compression_pipeline.definitions import build_definitions
from compression_pipeline.orchestration.resources import HandleIOManager

from conftest import NPZ_DIGITS, digits_npz, write_recipe


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
