"""Training on devices (issue 15), on CPU: the recipe's ``training`` block, the one loop's preload and host-batch
paths, augmentation on the device, data-parallel training over 2 gloo workers (the code path NCCL takes on GPUs),
rank 0 the only writer, a killed worker failing the step with nothing written, and Dagster's pool and GPU tags.
Tiny models on the digits: the whole file runs in well under a minute on 2 cores."""

from __future__ import annotations

import json

import pytest
import torch

from compression_pipeline.errors import RecipeError
from compression_pipeline.frameworks.base import Fit
from compression_pipeline.recipe import parse_recipe
from compression_pipeline.types import TrainingSetup, ZooModel

BASE = {"name": "t", "baseline": {"arch": "mlp", "width": 32, "epochs": 2, "lr": 3e-3}}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fw():
    from compression_pipeline.frameworks import get

    return get("torch")


def _train(digits_data, setup: TrainingSetup, arch="mlp", epochs=2):
    parts, spec = digits_data
    fw = _fw()
    model = fw.build(ZooModel(arch=arch, width=32 if arch == "mlp" else 4), spec, seed=0)
    history = fw.fit(model, parts, spec, Fit(epochs=epochs, lr=3e-3, seed=0, setup=setup))
    acc = float((fw.predict(model, parts["X_test"], spec).argmax(1) == parts["y_test"]).mean())
    return model, history, acc


# --- the recipe block -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training, where, words", [
    ({"backend": "nccl"}, "training", "'nccl' needs CUDA devices"),
    ({"precision": "fp16"}, "training", "'fp16' (autocast with loss scaling) is for CUDA"),
    ({"device": "cuda", "processes": 3, "devices": [0, 1]}, "training", "3 processes but 2 devices"),
    ({"processes": 0}, "training.processes", "greater than or equal to 1"),
    ({"augment": [{"op": "rotate"}]}, "training.augment.0", "'rotate'"),
    ({"proceses": 2}, "training.proceses", "unknown field"),
])
def test_a_bad_training_block_names_field_and_reason(training, where, words):
    with pytest.raises(RecipeError) as e:
        parse_recipe({**BASE, "training": training}, "r.yaml")
    assert e.value.location == where and words in e.value.problem


def test_a_variant_overrides_fields_of_the_family_block_and_is_checked_merged():
    prune = {"from": "baseline", "method": "prune_structured", "ratio": 0.5, "finetune_epochs": 1}
    r = parse_recipe({**BASE, "training": {"device": "cuda", "processes": 2},
                      "variants": {"p": {**prune, "training": {"precision": "fp16"}}}}, "r.yaml")
    assert r.training_for("p") == TrainingSetup(device="cuda", processes=2, precision="fp16")
    assert r.training_for("baseline", "torch") == TrainingSetup(device="cuda", processes=2)
    with pytest.raises(RecipeError, match="variants.p.training: precision 'fp16'"):  # fp16 on the family's CPU
        parse_recipe({**BASE, "variants": {"p": {**prune, "training": {"precision": "fp16"}}}}, "r.yaml")
    with pytest.raises(RecipeError, match="trains nothing"):  # a block on a method that never trains
        parse_recipe({**BASE, "variants": {"q": {"from": "baseline", "method": "quantize_static",
                                                 "training": {"processes": 2}}}}, "r.yaml")
    with pytest.raises(RecipeError, match="variants.s.training.augment: .* teacher"):
        parse_recipe({**BASE, "variants": {"s": {"from": "baseline", "method": "distill", "student": {"width": 4},
                                                 "training": {"augment": [{"op": "hflip"}]}}}}, "r.yaml")


def test_keras_models_refuse_what_they_cannot_do():
    both = {**BASE["baseline"], "arch": "cnn", "frameworks": ["torch", "tensorflow"]}
    with pytest.raises(RecipeError) as e:
        parse_recipe({**BASE, "baseline": both, "training": {"processes": 2}}, "r.yaml")
    assert e.value.location == "training.processes" and "also trains in tensorflow" in e.value.problem


def test_a_baseline_of_a_list_augments_alone_and_its_block_is_in_its_own_code_version():
    torch_b = {"source": "zoo", "arch": "cnn", "width": 4, "frameworks": ["torch"]}
    keras_b = {"source": "zoo", "arch": "mlp", "width": 8, "frameworks": ["tensorflow"]}
    crop = {"augment": [{"op": "random_crop", "padding": 2}]}
    plain = parse_recipe({**BASE, "baseline": [torch_b, keras_b], "training": {"prefetch": 3}}, "r.yaml")
    r = parse_recipe({**BASE, "baseline": [{**torch_b, "training": crop}, keras_b], "training": {"prefetch": 3}},
                     "r.yaml")
    assert r.training_for("baseline", "torch") == TrainingSetup(prefetch=3, augment=crop["augment"])  # merged
    assert r.training_for("baseline", "tensorflow") == TrainingSetup(prefetch=3)
    assert r.entry_version("baseline.torch") != plain.entry_version("baseline.torch")
    assert r.entry_version("baseline.tensorflow") == plain.entry_version("baseline.tensorflow")
    with pytest.raises(RecipeError) as e:  # the Keras baseline of the list may not augment
        parse_recipe({**BASE, "baseline": [torch_b, {**keras_b, "training": crop}]}, "r.yaml")
    assert e.value.location == "baseline.1.training.augment" and "also trains in tensorflow" in e.value.problem
    with pytest.raises(RecipeError, match="baseline.training: .* taken as given"):
        parse_recipe({**BASE, "baseline": {"source": "import", "framework": "torch", "builder": "a.b:c",
                                           "train": False, "training": crop}}, "r.yaml")


# --- batches and augmentation -----------------------------------------------------------------------------------
def test_preloaded_and_host_batches_are_the_same_tensors_and_augmentations():
    from compression_pipeline.frameworks import pytorch_train as T

    g = torch.Generator().manual_seed(1)
    data = T.TrainData(X=torch.rand(50, 1, 8, 8, generator=g), y=torch.randint(0, 10, (50,), generator=g),
                       X_val=torch.zeros(1, 1, 8, 8), y_val=torch.zeros(1, dtype=torch.long),
                       soft=torch.rand(50, 10, generator=g))
    rows = [r for r, _, _ in T.epoch_rows(50, 16, torch.Generator().manual_seed(0))]
    ops = [{"op": "random_crop", "padding": 2, "fill": "zeros"}, {"op": "hflip", "p": 0.5}]
    out = {}
    for preload in (True, False):
        gen = torch.Generator().manual_seed(7)
        batches = list(T.Batches(data, torch.device("cpu"), preload, prefetch=2).batches(rows))
        out[preload] = [(T.augment(x, ops, gen), y, s) for x, y, s in batches]
    assert len(out[True]) == len(out[False]) == 4
    for a, b in zip(out[True], out[False], strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert torch.equal(out[True][0][1], data.y[rows[0]])  # the rows decide what a batch holds


def test_augmentations_do_what_they_say_and_split_across_workers_like_one_batch():
    from compression_pipeline.frameworks import pytorch_train as T

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    flipped = T.augment(x, [{"op": "hflip", "p": 1.0}], torch.Generator().manual_seed(0))
    assert torch.equal(flipped, x.flip(3))
    cropped = T.augment(x, [{"op": "random_crop", "padding": 1, "fill": "zeros"}], torch.Generator().manual_seed(3))
    assert cropped.shape == x.shape and not torch.equal(cropped, x)  # shifted by up to one pixel, zeros coming in
    assert set(cropped.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    ops = [{"op": "random_crop", "padding": 2, "fill": "reflect"}, {"op": "vflip", "p": 0.5},
           {"op": "noise", "std": 0.1}]
    batch = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    whole = T.augment(batch, ops, torch.Generator().manual_seed(5))
    for rank in range(2):  # each worker holds every 2nd sample and draws for the whole global batch
        pos = torch.arange(rank, 9, 2)
        part = T.augment(batch[pos], ops, torch.Generator().manual_seed(5), total=9, positions=pos)
        assert torch.allclose(part, whole[pos])
    with pytest.raises(ValueError, match="needs images"):
        T.augment(torch.zeros(3, 64), [{"op": "hflip", "p": 0.5}], torch.Generator())


def test_host_batches_train_exactly_as_preloaded_and_record_how(digits_data):
    aug = [{"op": "random_crop", "padding": 1}, {"op": "hflip"}]
    runs = [_train(digits_data, TrainingSetup(preload=p, augment=aug, augment_seed=3), arch="cnn", epochs=1)
            for p in ("always", "never")]
    (m1, h1, _), (m2, h2, _) = runs
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    assert list(h1) == list(h2)
    t = h2.training
    assert (t["device"], t["processes"], t["backend"], t["precision"], t["preload"]) == ("cpu", 1, None, "fp32", False)
    assert [a["op"] for a in t["augment"]] == ["random_crop", "hflip"] and t["augment_seed"] == 3
    assert t["epochs"] == 1 and t["samples"] == len(digits_data[0]["y_train"]) and t["samples_per_s"] > 0


def test_training_takes_the_cores_a_launcher_frees_between_epochs(digits_data, tmp_path, monkeypatch):
    """A launcher's share file rewritten during epoch 1 (as when the phase beside this one ends): epoch 2 runs on the
    new count, the log says so, and the record states the count at the end."""
    from compression_pipeline.benchmark import THREAD_SHARE_ENV

    share = tmp_path / "share"
    share.write_text("1")
    monkeypatch.setenv(THREAD_SHARE_ENV, str(share))
    parts, spec = digits_data
    fw, lines = _fw(), []

    def log(line):
        lines.append((line, torch.get_num_threads()))
        share.write_text("2")

    model = fw.build(ZooModel(arch="mlp", width=32), spec, seed=0)
    history = fw.fit(model, parts, spec, Fit(epochs=2, lr=3e-3, seed=0, setup=TrainingSetup()), log=log)
    assert [n for line, n in lines if line.startswith("epoch")] == [1, 2]
    assert any(line.startswith("now on 2 threads (was 1)") for line, _ in lines)
    assert history.training["threads"] == 2


def test_bf16_autocast_on_cpu_trains_and_is_recorded(digits_data):
    _, history, acc = _train(digits_data, TrainingSetup(precision="bf16"), epochs=3)
    assert history.training["precision"] == "bf16" and acc > 0.5  # fp32: 0.75 after 3 epochs


# --- several processes ------------------------------------------------------------------------------------------
def test_two_gloo_workers_train_as_one_process_and_only_rank_0_writes(digits_data, monkeypatch):
    """The MLP has no dropout, so 2 workers give one process's weights up to the order of float sums (measured:
    7e-8); the tolerance is 1e-5 on weights and 0 on test accuracy."""
    from safetensors import safe_open

    from compression_pipeline.frameworks import pytorch_ddp

    jobs = []
    monkeypatch.setattr(pytorch_ddp, "_remove", jobs.append)  # keep the job folder to see who wrote what
    one, h1, acc1 = _train(digits_data, TrainingSetup())
    two, h2, acc2 = _train(digits_data, TrainingSetup(processes=2))
    diff = max(float((a - b).abs().max()) for a, b in zip(one.state_dict().values(), two.state_dict().values(),
                                                           strict=True))
    assert diff < 1e-5 and acc1 == acc2
    assert [round(e["loss"], 4) for e in h1] == [round(e["loss"], 4) for e in h2]
    t = h2.training
    assert (t["processes"], t["backend"], t["device"]) == (2, "gloo", "cpu")
    assert t["samples"] == 2 * len(digits_data[0]["y_train"]) and t["job_wall_s"] >= t["train_s"]
    job = jobs[0]
    written = sorted(p.name for p in job.iterdir())
    assert "result.tmp" not in written and "result.safetensors" in written
    with safe_open(str(job / "result.safetensors"), "pt") as f:
        assert f.metadata() == {"written_by_rank": "0"}
    # rank 1 leaves its log and nothing else: the job's inputs, rank 0's result and the rendezvous file remain
    assert set(written) <= {"model.safetensors", "data.safetensors", "job.json", "rank0.log", "rank1.log",
                            "progress.log", "rendezvous", "result.json", "result.safetensors"}
    import shutil

    shutil.rmtree(job)


def test_a_killed_worker_fails_the_step_stops_the_others_and_writes_nothing(tmp_path, monkeypatch):
    from compression_pipeline import stages
    from compression_pipeline.artifacts import ArtifactStore
    from compression_pipeline.frameworks import pytorch_ddp

    recipe = parse_recipe({**BASE, "training": {"processes": 2}}, "r.yaml")
    store = ArtifactStore(tmp_path / "artifacts")
    splits = stages.splits(recipe, store, stages.raw_dataset(recipe, store, tmp_path))
    started = []

    def kill_rank_1(procs):
        started.extend(procs)
        procs[1].kill()

    monkeypatch.setattr(pytorch_ddp, "SPAWN_HOOKS", [kill_rank_1])
    with pytest.raises(pytorch_ddp.TrainingError, match="worker rank 1 of 2 was killed by signal 9"):
        stages.baseline(recipe, store, splits, "torch", threads=1)
    assert len(started) == 2 and all(p.poll() is not None for p in started)  # every worker stopped
    assert not (tmp_path / "artifacts" / "t" / "torch_baseline").exists()  # no model file, whole or half
    job = started[0].args[3]
    assert not __import__("os").path.exists(job)  # the job folder is gone


# --- Dagster ----------------------------------------------------------------------------------------------------
def test_a_step_training_on_gpus_claims_the_pool_and_requests_its_gpus():
    import dagster as dg

    from compression_pipeline.orchestration.family import DEVICES_TAG, Family

    prune = {"from": "baseline", "method": "prune_structured", "ratio": 0.5, "finetune_epochs": 1}
    r = parse_recipe({**BASE, "training": {"device": "cuda", "processes": 2, "pool": "gpus"},
                      "variants": {"p": prune, "q": {"from": "baseline", "method": "quantize_static"},
                                   "c": {**prune, "training": {"device": "cpu", "processes": 1}}}}, "r.yaml")
    assets = {k: a for a in Family(r).build() if isinstance(a, dg.AssetsDefinition) for k in a.keys}

    def step(noun):
        a = assets[dg.AssetKey(["t", noun])]
        return a.op.pool, a.op.tags

    for noun in ("torch_baseline", "torch_p"):
        pool, tags = step(noun)
        assert pool == "gpus" and tags[DEVICES_TAG] == "2"
        k8s = json.loads(tags["dagster-k8s/config"])  # Dagster keeps a tag's mapping as JSON
        assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert step("torch_c")[0] is None and step("torch_q")[0] is None  # CPU training and int8: no GPU pool


# --- through Dagster --------------------------------------------------------------------------------------------
def test_a_family_asking_for_two_processes_and_device_augmentation_gets_them_through_dagster(roots):
    """The recipe says "train on 2 processes, preload and augment on the device": the baseline and a pruned
    variant's fine-tuning each run on 2 gloo workers, and the report says so for each model."""
    import dagster as dg

    from compression_pipeline.definitions import build_definitions

    from conftest import write_recipe

    recipe = {**BASE, "name": "ddp",
              "baseline": {"arch": "cnn", "width": 8, "epochs": 4, "lr": 5e-3, "frameworks": ["torch"]},
              "training": {"processes": 2, "preload": "always",
                           "augment": [{"op": "random_crop", "padding": 1}, {"op": "noise", "std": 0.02}]},
              "gates": {"accuracy_floor": 0.3, "max_accuracy_drop": {"value": 0.3}},
              "variants": {"pruned": {"from": "baseline", "method": "prune_structured", "ratio": 0.5,
                                      "finetune_epochs": 1, "training": {"augment": []}}},
              "benchmark": {"runtimes": ["onnxruntime"], "batch_sizes": [1], "warmup_runs": 1, "warmup_s": 0.0,
                            "min_runs": 3, "min_time_s": 0.0, "slice_s": 0.01, "budget_s": 1.0}}
    write_recipe(roots, recipe)
    with dg.instance_for_test() as instance:
        result = build_definitions(roots).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False)
    assert result.success
    report = json.loads((roots.artifact_root / "ddp/report/report.json").read_text())
    trained = {m["name"]: m["training"] for m in report["models"]}
    for name in ("baseline", "pruned"):
        assert (trained[name]["processes"], trained[name]["backend"], trained[name]["preload"]) == (2, "gloo", True)
    assert [a["op"] for a in trained["baseline"]["augment"]] == ["random_crop", "noise"]
    assert trained["pruned"]["augment"] == []
    assert "Training" in (roots.artifact_root / "ddp/report/report.md").read_text()
