"""The model path on tiny models: train, save/load without pickle, export, quantize, benchmark, report."""

import json
from pathlib import Path

import numpy as np
import pytest

from compression_pipeline import benchmark, onnx_tools
from compression_pipeline.artifacts import ArtifactStore
from compression_pipeline.data import feed
from compression_pipeline.errors import ArtifactError, PipelineError
from compression_pipeline.frameworks import get
from compression_pipeline.methods.quantize import QuantizeDynamic, QuantizeStatic, quantize_dynamic, quantize_static
from compression_pipeline.types import ZooModel

from conftest import fit

FW = get("torch")


@pytest.fixture(scope="module")
def tiny_model(digits_data, tmp_path_factory):
    parts, spec = digits_data
    model = FW.build(ZooModel(width=8), spec, seed=0)
    history = FW.fit(model, parts, spec, fit(3))
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    FW.export_onnx(model, path, spec)
    return model, spec, history, path


def _accuracy(logits, y) -> float:
    return float((logits.argmax(1) == y).mean())


def test_default_architecture_is_about_a_million_parameters(digits_spec):
    params, _ = FW.count_params(FW.build(ZooModel(width=64), digits_spec))
    assert 1_000_000 <= params <= 1_600_000


def test_training_learns_and_keeps_best_epoch(tiny_model, digits_splits):
    model, spec, history, _ = tiny_model
    acc = _accuracy(FW.predict(model, digits_splits["X_val"], spec), digits_splits["y_val"])
    assert acc == max(h["val_accuracy"] for h in history)
    assert acc > 0.6  # 3 epochs of a width-8 CNN; chance is 0.1


def test_safetensors_round_trip_rebuilds_without_pickle(tiny_model, tmp_path, digits_splits):
    model, spec, _, _ = tiny_model
    FW.save(model, tmp_path / "m.safetensors")
    loaded = FW.load(tmp_path / "m.safetensors")
    X = digits_splits["X_test"][:16]
    assert np.array_equal(FW.predict(model, X, spec), FW.predict(loaded, X, spec))


def test_export_parity_and_dynamic_batch(tiny_model, digits_splits):
    model, spec, _, path = tiny_model
    sess = onnx_tools.session(path, "cpu", 1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    import onnx

    assert onnx.load(str(path)).ir_version <= onnx_tools.IR_VERSION
    for n in (1, 7, 33):
        X = digits_splits["X_test"][:n]
        out = onnx_tools.predict(sess, feed(X, spec, "NCHW"))
        assert out.shape == (n, 10)
        assert np.abs(out - FW.predict(model, X, spec)).max() < 1e-4


def test_static_int8_is_smaller_and_keeps_accuracy(tiny_model, tmp_path, digits_splits):
    _, spec, _, path = tiny_model
    dst = tmp_path / "q.onnx"
    info = quantize_static(path, dst, QuantizeStatic(samples=64, activation_type="int8"),
                           feed(digits_splits["X_train"], spec, "NCHW"))
    assert info["calibration_samples"] == 64 and info["activation_type"] == "int8"
    assert dst.stat().st_size < 0.45 * path.stat().st_size  # tiny models carry proportionally more graph overhead
    import onnx

    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    X, y = feed(digits_splits["X_test"], spec, "NCHW"), digits_splits["y_test"]
    fp = onnx_tools.predict(onnx_tools.session(path), X)
    q = onnx_tools.predict(onnx_tools.session(dst), X)
    assert _accuracy(fp, y) - _accuracy(q, y) < 0.03
    assert onnx_tools.param_count(dst)[0] == onnx_tools.param_count(path)[0]


def test_dynamic_int8_leaves_convolutions_alone(tiny_model, tmp_path, digits_splits):
    import onnx

    _, spec, _, path = tiny_model
    dst = tmp_path / "d.onnx"
    quantize_dynamic(path, dst, QuantizeDynamic(), feed(digits_splits["X_train"], spec, "NCHW"))
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert "ConvInteger" not in ops and "Conv" in ops
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}


def test_measure_respects_count_and_time():
    calls = []
    samples = benchmark.measure(lambda: calls.append(1), benchmark.Protocol(warmup_runs=7, warmup_s=0.0,
                                                                             min_runs=25, min_time_s=0.0))
    assert len(samples) == 25 and len(calls) == 32
    import time

    t0 = time.perf_counter()
    samples = benchmark.measure(lambda: None, benchmark.Protocol(0, 0.05, 3, 0.1))
    assert time.perf_counter() - t0 >= 0.15 and len(samples) > 3
    s = benchmark.summarize(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), batch_size=2)
    assert s["p50_ms"] == 3.0 and s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= 100.0
    assert s["throughput"] == pytest.approx(2 * 1000 / 22.0)


def test_bench_onnx_and_torch_record_providers(tiny_model):
    model, spec, _, path = tiny_model
    from compression_pipeline.runtimes import onnxruntime, torch_eager

    p = benchmark.Protocol(1, 0.0, 5, 0.0)
    rows, _ = benchmark.run([onnxruntime.open(path, spec, "NCHW", "auto", 1),
                             torch_eager.open(model, spec, "NCHW", "auto", 1)], [1, 4], p)
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("onnxruntime", 1), ("onnxruntime", 4),
                                                             ("torch", 1), ("torch", 4)]
    assert {r["provider"] for r in rows} == {"CPUExecutionProvider", "cpu"}
    assert all(len(r["samples_ms"]) == r["runs"] >= 5 and r["p50_ms"] > 0 for r in rows)
    if not onnx_tools.cuda_usable():  # asking for CUDA where it cannot load is an error, never a silent fallback
        with pytest.raises(RuntimeError, match="no usable CUDA"):
            onnx_tools.providers_for("cuda")


def test_artifact_store_is_atomic_content_addressed_and_contained(tmp_path):
    store = ArtifactStore(tmp_path)
    a = store.write_bytes("fam/x", b"hello", "bin", "bin")
    b = store.write_bytes("fam/x", b"hello", "bin", "bin")
    c = store.write_bytes("fam/x", b"world", "bin", "bin")
    assert a == b and a.path != c.path and store.path(a).read_bytes() == b"hello"
    assert not list((tmp_path / "fam/x").glob("*.tmp"))
    with pytest.raises(RuntimeError), store.writing("fam/x", "bin", "bin") as slot:
        slot.path.write_bytes(b"half")
        raise RuntimeError("killed midway")
    assert sorted(p.name for p in (tmp_path / "fam/x").iterdir()) == sorted([a.path.split("/")[-1],
                                                                             c.path.split("/")[-1]])
    store.path(a).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        store.path(a, verify=True)
    with pytest.raises(PipelineError, match="outside"):
        store.write_bytes("../escape", b"x", "bin", "bin")
    with pytest.raises(PipelineError, match="outside"):
        store.path(a.model_copy(update={"path": "../../etc/passwd"}))


def test_report_contract(tiny_model, tmp_path, tiny_recipe_dict):
    from compression_pipeline import report
    from compression_pipeline.artifacts import Handle
    from compression_pipeline.recipe import parse_recipe

    recipe = parse_recipe(tiny_recipe_dict)
    store = ArtifactStore(tmp_path)
    art = store.write_bytes("tiny/x", b"onnx", "onnx", "onnx")

    def entry(name, acc, p50):
        d = Handle(artifact=art, info={"name": name, "framework": "torch", "method": None if name == "baseline" else
                                       "quantize_static", "parent": None if name == "baseline" else "baseline",
                                       "accuracy": acc, "accuracy_runtime": "onnxruntime", "baseline_accuracy": 0.9,
                                       "params": 100, "nonzero_params": 90, "file_bytes": 4, "gzip_bytes": 3})
        b = Handle(info={"results": [{"runtime": "onnxruntime", "provider": "CPUExecutionProvider", "device": "cpu",
                                      "batch_size": 1, "p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "throughput": 1.0}],
                         "environment": {"cpu": {"model": "x"}}})
        return d, b

    rep = report.build(recipe, [entry("baseline", 0.9, 2.0), entry("int8", 0.88, 1.0)])
    paths = report.write(rep, store)
    data = json.loads(Path(paths["json"]).read_text())
    assert set(data) >= {"environment", "models"}
    m = data["models"][1]
    for field in ("name", "framework", "method", "parent", "accuracy", "accuracy_drop", "params", "file_bytes",
                  "benchmarks"):
        assert field in m
    assert m["accuracy_drop"] == pytest.approx(0.02)
    b = m["benchmarks"][0]
    for field in ("runtime", "provider", "device", "batch_size", "p50_ms", "p90_ms", "p99_ms", "throughput"):
        assert field in b
    assert b["speedup_vs_baseline"] == pytest.approx(2.0)
    assert "| int8 | torch | quantize_static | baseline | 0.8800 | +2.00 |" in Path(paths["md"]).read_text()
