"""Bad input through Dagster: every bad dataset is caught at its earliest stage with a message (or a failed
blocking check) naming the file and the problem, nothing downstream runs, and what consumers read stays the
last good version. A variant whose accuracy collapses fails its gate, is left out of the report's models and is
listed in the report with the reason.

One good materialization of the tiny family comes first (module fixture); every case then runs the whole
family's job on bad input and compares what consumers see with that good state.
"""

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from compression_pipeline.artifacts import ArtifactStore, Handle, HandleStore
from compression_pipeline.definitions import build_definitions
from compression_pipeline.methods.registry import METHODS, MethodConfig, register
from compression_pipeline.settings import Settings

from conftest import NPZ_DIGITS, TINY, digits_npz, write_recipe

FAMILY = "tiny"
DATA_ASSETS = {"tiny/raw_dataset", "tiny/splits"}


@dataclass
class Family:
    settings: Settings
    instance: dg.DagsterInstance
    good: dict  # what consumers see after the good run

    @property
    def data_file(self) -> Path:
        return self.settings.data_root / "digits.npz"

    def defs(self):
        return build_definitions(self.settings)


def _recipe(**variants):
    r = copy.deepcopy(TINY)
    r["dataset"] = dict(NPZ_DIGITS)
    r["variants"].update(variants)
    return r


def _consumer_view(settings: Settings) -> dict:
    """Everything a consumer reads: each asset's good.json (checked against its artifact) and the report files.

    raw_dataset is left out: it has no gates, it records what the file held and only the gated splits read it.
    """
    handles, store = HandleStore(settings.artifact_root), ArtifactStore(settings.artifact_root)
    view = {}
    for key in handles.keys(FAMILY):
        if key == (FAMILY, "raw_dataset"):
            continue
        good = handles.good(key)
        if good is None:
            continue
        if good.artifact:
            store.path(good.artifact, verify=True)  # the file is there and matches its recorded sha256
        view["/".join(key)] = good.model_dump_json()
    for name in ("report.json", "report.md"):
        view[name] = (settings.artifact_root / FAMILY / "report" / name).read_text()
    return view


def _run(defs, instance, selection=None):
    job = defs.resolve_job_def(f"{FAMILY}_recompress")
    keys = None if selection is None else [dg.AssetKey.from_user_string(k) for k in selection]
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=keys)


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _started(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}


def _failure_messages(result) -> list[str]:
    out = []
    for e in result.all_events:
        if e.event_type == dg.DagsterEventType.STEP_FAILURE:
            err = e.step_failure_data.error
            while err is not None:
                out.append(err.message)
                err = err.cause
    return out


def _checks(result) -> dict:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    settings = Settings(root / "recipes", root / "data", root / "artifacts")
    for p in (settings.recipes_dir, settings.data_root, settings.artifact_root):
        p.mkdir()
    write_recipe(settings, _recipe())
    digits_npz(settings.data_root / "digits.npz")
    with dg.instance_for_test() as instance:
        result = _run(build_definitions(settings), instance)
        assert result.success
        yield Family(settings, instance, _consumer_view(settings))


# --- datasets -----------------------------------------------------------------------------------------------------
def _save(path, X, y):
    np.savez(path, X=X, y=y)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


def _truncated(path):
    digits_npz(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickled(path):
    X, y = _digits()
    Xo = np.empty(len(X), dtype=object)
    Xo[:] = list(X)
    np.savez(path, X=Xo, y=y)  # an object array: stored as a pickle


# (case, write the bad file, words the step failure must contain)
LOAD_ERRORS = [
    ("missing_file", lambda p: p.unlink(), ["file not found"]),
    ("corrupt_file", lambda p: p.write_bytes(b"\x00garbage, not an archive" * 10), ["not a readable .npz"]),
    ("truncated_file", _truncated, ["not a readable .npz"]),
    ("pickled_object_array", _pickled, ["not a readable .npz", "allow_pickle=False"]),
    ("X_wrong_shape", lambda p: _save(p, _digits()[0][:, :10], _digits()[1]), ["X has shape (1797, 10)"]),
    ("y_wrong_length", lambda p: _save(p, _digits()[0], _digits()[1][:-5]), ["y has shape (1792,)"]),
    ("X_wrong_dtype", lambda p: _save(p, _digits()[0].astype(str), _digits()[1]), ["X has dtype <U"]),
    ("y_wrong_dtype", lambda p: _save(p, _digits()[0], _digits()[1] + 0.5), ["y has dtype float64"]),
    ("no_rows", lambda p: _save(p, np.zeros((0, 64)), np.zeros(0, np.int64)), ["the dataset has no rows"]),
]


@pytest.mark.parametrize("case, make, words", LOAD_ERRORS, ids=[c[0] for c in LOAD_ERRORS])
def test_unreadable_datasets_fail_at_load_and_nothing_runs(family, case, make, words):
    make(family.data_file)
    result = _run(family.defs(), family.instance)
    assert not result.success
    # The dataset file is observed first (its content hash is its data version): a missing file stops right there.
    expected = {"tiny__dataset_file"} | (set() if case == "missing_file" else {"tiny__raw_dataset"})
    assert _started(result) == expected and _materialized(result) == set()
    message = "\n".join(_failure_messages(result))
    assert f"DatasetError: dataset {family.data_file}: " in message, message
    for w in words:
        assert w in message, message
    assert _consumer_view(family.settings) == family.good


def test_too_few_rows_for_the_splits_fail_at_the_split_naming_the_file(family):
    X, y = _digits()
    _save(family.data_file, X[:2], y[:2])
    result = _run(family.defs(), family.instance)
    assert not result.success
    assert _started(result) == {"tiny__dataset_file", "tiny__raw_dataset", "tiny__splits"}
    assert _materialized(result) == {"tiny/raw_dataset"}
    message = "\n".join(_failure_messages(result))
    assert f"dataset {family.data_file}: 2 rows leave the train split empty" in message, message
    assert _consumer_view(family.settings) == family.good


def _test_rows_in_train(splits: dict) -> int:
    digest = lambda r: hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest()
    train = {digest(r) for r in splits["X_train"]}
    return sum(digest(r) in train for r in splits["X_test"])


def _nan(X, y):
    X[[5, 500, 1500], [0, 10, 63]] = np.nan
    return X, y


def _inf(X, y):
    X[[7, 700], [1, 2]] = [np.inf, -np.inf]
    return X, y


def _labels(X, y):
    y[[3, 30, 300, 1000, 1700]] = 10
    y[[4, 40]] = -1
    return X, y


def _duplicated(X, y):
    return np.concatenate([X, X[:300]]), np.concatenate([y, y[:300]])


# (case, mutate the digits, the gates that must fail, the offending count of the first one: int, or a function of
#  the candidate splits for counts that depend on the seeded split)
GATE_FAILURES = [
    ("nan_values", _nan, ["no_missing"], 3),
    ("inf_values", _inf, ["value_range"], 2),
    ("labels_outside_declared_set", _labels, ["labels"], 7),
    ("single_class", lambda X, y: (X, np.full_like(y, 3)), ["labels", "class_balance"], None),
    ("duplicated_between_train_and_test", _duplicated, ["no_leakage"], _test_rows_in_train),
]


@pytest.mark.parametrize("case, mutate, gates, count", GATE_FAILURES, ids=[c[0] for c in GATE_FAILURES])
def test_bad_data_fails_its_blocking_gate_with_counts_and_nothing_downstream_runs(family, case, mutate, gates, count):
    digits_npz(family.data_file, mutate)
    result = _run(family.defs(), family.instance)
    assert not result.success
    # The splits are stored as a candidate with the gate outcomes; no model step even starts.
    assert _materialized(result) == DATA_ASSETS
    assert _started(result) == {"tiny__dataset_file", "tiny__raw_dataset", "tiny__splits"}
    checks = _checks(result)
    failed = {k.split(":")[1] for k, e in checks.items() if not e.passed}
    assert set(gates) <= failed, failed
    first = checks[f"tiny/splits:{gates[0]}"]
    assert first.metadata["dataset"].value == str(family.data_file)
    assert str(family.data_file) in first.description
    run_id, candidate = HandleStore(family.settings.artifact_root).latest((FAMILY, "splits"))
    assert run_id == result.run_id and candidate.gates_passed is False
    if callable(count):
        from compression_pipeline.data import read_npz

        count = count(read_npz(ArtifactStore(family.settings.artifact_root).path(candidate.artifact, verify=True)))
        assert count > 0
    if count is not None:
        assert first.metadata["unexpected_count"].value == count
    if case == "single_class":  # one label in every split: the unique-label expectation says how many it saw
        seen = [e for e in first.metadata["expectations"].value
                if e["expectation"] == "expect_column_unique_value_count_to_be_between"]
        assert len(seen) == 3 and all(e["observed_value"] == 1 and not e["success"] for e in seen)
    assert _consumer_view(family.settings) == family.good


# --- a variant whose accuracy collapses ---------------------------------------------------------------------------
class Wreck(MethodConfig):
    """Zeroes every weight of the parent: the model then answers one class for every input."""


@pytest.fixture
def wreck_method():
    """A compression method that destroys its model, registered the way any method is (the registry's API)."""

    def wreck(src: Path, dst: Path, config: Wreck, calibration) -> dict:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(src))
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind == "f":
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(arr), init.name))
        onnx.save(model, str(dst))
        return {}

    register("wreck", Wreck, "zero every weight (a test method that destroys accuracy)")("onnx")(wreck)
    yield
    METHODS.pop("wreck")


def test_a_collapsed_variant_fails_its_gate_is_excluded_and_the_report_says_why(family, wreck_method):
    digits_npz(family.data_file)  # good data again: only the variant is bad
    write_recipe(family.settings, _recipe(wrecked={"from": "baseline", "method": "wreck"}))
    defs = family.defs()
    sensor = defs.resolve_sensor_def("tiny_report_after_failure")
    first_tick = sensor.evaluate_tick(dg.build_sensor_context(instance=family.instance, definitions=defs))
    assert not first_tick.run_requests

    result = _run(defs, family.instance, ["tiny/torch_wrecked", "tiny/torch_wrecked_benchmark", "tiny/report"])
    assert not result.success
    gate = _checks(result)["tiny/torch_wrecked:accuracy_gate"]
    assert gate.passed is False and gate.metadata["accuracy"].value < 0.2  # chance on 10 classes is 0.1
    assert gate.metadata["drop_absolute"].value > TINY["gates"]["max_accuracy_drop"]["value"]
    # The candidate is stored, but nothing consumes it: no benchmark, no report in this run, no good.json.
    assert _materialized(result) == {"tiny/torch_wrecked"}
    handles = HandleStore(family.settings.artifact_root)
    assert handles.good((FAMILY, "torch_wrecked")) is None
    assert _consumer_view(family.settings) == family.good

    # The failure sensor asks for the report; the report then lists the good models and the rejected variant.
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=family.instance, definitions=defs,
                                                        cursor=first_tick.cursor))
    assert sensor.job_name == "tiny_report" and [r.run_key for r in tick.run_requests] == [result.run_id]
    # It measures the last good models in one session (not the wrecked one: no version of it ever passed) and
    # rebuilds the report.
    [request] = tick.run_requests
    assert {k.to_user_string() for k in request.asset_selection} == {
        "tiny/torch_baseline_benchmark", "tiny/torch_int8_benchmark", "tiny/report"}
    report_run = defs.resolve_job_def("tiny_report").execute_in_process(instance=family.instance,
                                                                       asset_selection=request.asset_selection)
    assert report_run.success
    report = json.loads((family.settings.artifact_root / "tiny/report/report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["baseline", "int8"]
    assert all(m["gates_passed"] for m in report["models"])
    rejected = {x["asset"]: x for x in report["rejected"]}
    wrecked = rejected["tiny/torch_wrecked"]
    assert wrecked["run_id"] == result.run_id and wrecked["method"] == "wreck" and wrecked["parent"] == "baseline"
    assert [g["name"] for g in wrecked["failed_gates"]] == ["accuracy_gate"]
    assert "drop" in wrecked["failed_gates"][0]["description"]
    md = (family.settings.artifact_root / "tiny/report/report.md").read_text()
    assert "## Rejected candidates" in md and "`tiny/torch_wrecked`" in md and "| wrecked |" not in md
    # The models in the report are byte for byte the last good ones.
    for m in report["models"]:
        key = "tiny/torch_baseline_onnx" if m["name"] == "baseline" else f"tiny/torch_{m['name']}"
        assert m["sha256"] == Handle.model_validate_json(family.good[key]).artifact.sha256
