"""The framework and runtime comparisons of the report (hand-made handles: two frameworks, four runtimes)."""

import base64
import json
import re
from pathlib import Path

import pytest

from compression_pipeline import report
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import parse_recipe
from compression_pipeline.report import plots

PROVIDER = {"onnxruntime": "CPUExecutionProvider", "torch": "cpu", "tensorflow": "cpu", "tflite": "litert-xnnpack"}


def _row(runtime, bs, p50):
    return {"runtime": runtime, "provider": PROVIDER[runtime], "device": "cpu", "precision": "fp32", "batch_size": bs,
            "p50_ms": p50, "p90_ms": 1.1 * p50, "p95_ms": 1.2 * p50, "p99_ms": 1.3 * p50, "mean_ms": p50,
            "std_ms": 0.01, "runs": 50, "throughput": bs * 1e3 / p50, "load_s": 0.01, "first_call_ms": 3 * p50,
            "peak_host_mb": 400.0}


def _pair(store, name, framework, acc, base_acc, size, cells, fmt="onnx"):
    """(deployable, benchmark) handles; ``cells``: {(runtime, batch size): p50 ms}."""
    art = store.write_bytes(f"fam/{framework}_{name}_{fmt}", f"{framework}{name}{fmt}".encode() * size, fmt, fmt,
                            framework)
    d = Handle(artifact=art, info={"name": name, "framework": framework,
                                   "method": None if name == "baseline" else "m",
                                   "parent": None if name == "baseline" else "baseline", "accuracy": acc,
                                   "accuracy_runtime": "tflite" if fmt == "tflite" else "onnxruntime",
                                   "baseline_accuracy": base_acc, "params": size * 10, "nonzero_params": size * 10,
                                   "file_bytes": size, "gzip_bytes": size // 2})
    b = Handle(artifact=store.write_bytes(f"fam/{framework}_{name}_{fmt}_b", b"{}", "json", "json"),
               info={"results": [_row(rt, bs, p50) for (rt, bs), p50 in cells.items()],
                     "environment": {"cpu": {"model": "x", "cores": 2, "isa": []}, "threads": 2, "gpu": None}})
    return d, b


@pytest.fixture
def recipe(tiny_recipe_dict):
    tiny_recipe_dict["variants"] = {n: {"from": "baseline", "method": "quantize_static"}
                                    for n in ("int8", "pruned50", "tflite_int8")}
    return parse_recipe(tiny_recipe_dict)


@pytest.fixture
def two_frameworks(tmp_path, recipe):
    store = ArtifactStore(tmp_path)
    pairs = [
        _pair(store, "baseline", "torch", 0.97, 0.97, 4000, {("onnxruntime", 1): 2.0, ("onnxruntime", 4): 20.0,
                                                             ("torch", 1): 5.0, ("torch", 4): 30.0}),
        _pair(store, "baseline", "tensorflow", 0.96, 0.96, 4100, {("onnxruntime", 1): 2.5, ("onnxruntime", 4): 22.0,
                                                                  ("tensorflow", 1): 4.0, ("tensorflow", 4): 25.0,
                                                                  ("tflite", 1): 1.5, ("tflite", 4): 12.0}),
        _pair(store, "int8", "torch", 0.965, 0.97, 1000, {("onnxruntime", 1): 1.0, ("onnxruntime", 4): 8.0}),
        _pair(store, "int8", "tensorflow", 0.955, 0.96, 1100, {("onnxruntime", 1): 1.2, ("onnxruntime", 4): 10.0}),
        _pair(store, "pruned50", "torch", 0.968, 0.97, 900, {("onnxruntime", 1): 0.8, ("torch", 1): 2.0}),
        _pair(store, "tflite_int8", "tensorflow", 0.958, 0.96, 1050, {("tflite", 1): 0.5, ("tflite", 4): 4.0},
              fmt="tflite"),
    ]
    return report.build(recipe, pairs), store


def test_framework_comparison_holds_the_measured_numbers(two_frameworks):
    rep, _ = two_frameworks
    comp = {v["name"]: v for v in rep["framework_comparison"]}
    # pruned50 (torch only) and tflite_int8 (TensorFlow only) have nothing to be compared with.
    assert list(comp) == ["baseline", "int8"]
    base = comp["baseline"]
    assert base["frameworks"] == ["torch", "tensorflow"]
    assert [(r["framework"], r["format"], r["accuracy"], r["params"], r["file_bytes"]) for r in base["rows"]] == \
        [("torch", "onnx", 0.97, 40000, 4000), ("tensorflow", "onnx", 0.96, 41000, 4100)]
    tf_cells = {(c["runtime"], c["batch_size"]): c["p50_ms"] for c in base["rows"][1]["p50_ms"]}
    assert tf_cells == {("onnxruntime", 1): 2.5, ("onnxruntime", 4): 22.0, ("tensorflow", 1): 4.0,
                        ("tensorflow", 4): 25.0, ("tflite", 1): 1.5, ("tflite", 4): 12.0}
    int8 = comp["int8"]
    assert [r["accuracy_drop"] for r in int8["rows"]] == pytest.approx([0.005, 0.005])  # each vs its own baseline
    for name, (pt1, tf1, pt4, tf4) in {"baseline": (2.0, 2.5, 20.0, 22.0), "int8": (1.0, 1.2, 8.0, 10.0)}.items():
        ratios = comp[name]["onnxruntime_p50_ratio_tensorflow_over_torch"]
        assert [(x["batch_size"], x["torch_p50_ms"], x["tensorflow_p50_ms"]) for x in ratios] == \
            [(1, pt1, tf1), (4, pt4, tf4)]
        assert [x["ratio"] for x in ratios] == pytest.approx([tf1 / pt1, tf4 / pt4])


def test_runtime_comparison_is_relative_to_the_models_own_onnxruntime_cell(two_frameworks):
    rep, _ = two_frameworks
    comp = {(m["framework"], m["name"]): {(c["runtime"], c["batch_size"]): c for c in m["cells"]}
            for m in rep["runtime_comparison"]}
    assert len(comp) == len(rep["models"])
    tf_base = comp[("tensorflow", "baseline")]
    assert tf_base[("tensorflow", 1)]["vs_onnxruntime"] == pytest.approx(4.0 / 2.5)
    assert tf_base[("tflite", 4)]["vs_onnxruntime"] == pytest.approx(12.0 / 22.0)
    assert tf_base[("onnxruntime", 1)]["vs_onnxruntime"] == pytest.approx(1.0)
    assert comp[("torch", "baseline")][("torch", 4)]["vs_onnxruntime"] == pytest.approx(30.0 / 20.0)
    # A .tflite model has no ONNX Runtime cell: its p50s are listed, with no ratio.
    lite = comp[("tensorflow", "tflite_int8")]
    assert lite[("tflite", 1)]["p50_ms"] == 0.5 and lite[("tflite", 1)]["vs_onnxruntime"] is None


def test_speedups_stay_within_a_framework_and_a_runtime(two_frameworks):
    rep, _ = two_frameworks
    models = {(m["framework"], m["name"]): m for m in rep["models"]}
    lite = models[("tensorflow", "tflite_int8")]
    assert lite["format"] == "tflite" and models[("tensorflow", "int8")]["format"] == "onnx"
    # The TFLite variant against the TensorFlow baseline's tflite cells (1.5 and 12.0 ms), never torch's.
    assert [r["speedup_vs_baseline"] for r in lite["benchmarks"]] == pytest.approx([1.5 / 0.5, 12.0 / 4.0])
    assert [r["speedup_vs_baseline"] for r in models[("tensorflow", "int8")]["benchmarks"]] == \
        pytest.approx([2.5 / 1.2, 22.0 / 10.0])
    assert [r["speedup_vs_baseline"] for r in models[("torch", "int8")]["benchmarks"]] == pytest.approx([2.0, 2.5])
    assert lite["size_ratio"] == pytest.approx(1050 / 4100)


def test_a_baseline_entry_per_format_is_the_reference_of_its_own_format(tmp_path, recipe):
    """Where the TF baseline's TFLite export is its own entry, a .tflite variant is sized and timed against it."""
    store = ArtifactStore(tmp_path)
    tf = "tensorflow"
    pairs = [_pair(store, "baseline", tf, 0.96, 0.96, 4100, {("onnxruntime", 1): 2.5, ("tensorflow", 1): 4.0}),
             _pair(store, "baseline", "tensorflow", 0.96, 0.96, 4000, {("tflite", 1): 1.6, ("tensorflow", 1): 4.4},
                   fmt="tflite"),
             _pair(store, "tflite_int8", "tensorflow", 0.958, 0.96, 1000, {("tflite", 1): 0.4, ("tensorflow", 1): 4.0},
                   fmt="tflite"),
             _pair(store, "int8", "tensorflow", 0.955, 0.96, 1100, {("onnxruntime", 1): 1.25, ("tensorflow", 1): 4.0})]
    models = {(m["name"], m["format"]): m for m in report.build(recipe, pairs)["models"]}
    lite, int8 = models[("tflite_int8", "tflite")], models[("int8", "onnx")]
    assert lite["size_ratio"] == pytest.approx(1000 / 4000) and int8["size_ratio"] == pytest.approx(1100 / 4100)
    speed = {r["runtime"]: r["speedup_vs_baseline"] for r in lite["benchmarks"]}
    assert speed == pytest.approx({"tflite": 4.0, "tensorflow": 4.4 / 4.0})  # the own format's cells win
    assert {r["runtime"]: r["speedup_vs_baseline"] for r in int8["benchmarks"]} == \
        pytest.approx({"onnxruntime": 2.0, "tensorflow": 1.0})


def test_markdown_has_both_sections_and_keeps_the_main_table(two_frameworks):
    md = report.markdown(two_frameworks[0])
    main, rest = md.split("## Framework comparison")
    assert "| model | framework | method | parent | accuracy |" in main
    assert "| tflite_int8 | tensorflow | m | baseline | 0.9580 |" in main
    fw, runtimes = rest.split("## Runtimes")
    assert "onnxruntime b1 TF/PyTorch" in fw
    # The TensorFlow int8 row: its p50s and the ratio to PyTorch's ONNX Runtime p50 (1.2 / 1.0, 10.0 / 8.0).
    assert "| int8 | tensorflow | onnx | 0.9550 | +0.50 | 11,000 | 1 | 1.200 | 10.000 | - | - | - | - | 1.20x | " \
           "1.25x |" in fw
    # Each framework's own runtime (torch eager, tf.function) shares a column: the baselines' rows line up.
    assert "| baseline | torch | onnx | 0.9700 | +0.00 | 40,000 | 4 | 2.000 | 20.000 | 5.000 | 30.000 | - | - |" in fw
    assert "| 2.500 | 22.000 | 4.000 | 25.000 | 1.500 | 12.000 | 1.25x | 1.10x |" in fw
    assert "| int8 | torch | onnx | 0.9650 |" in fw and "pruned50" not in fw and "tflite_int8" not in fw
    assert "| baseline | tensorflow | onnx | 2.500 | 22.000 | 4.000 (1.60x) | 25.000 (1.14x) | 1.500 (0.60x) | " \
           "12.000 (0.55x) | - | - |" in runtimes
    assert "| tflite_int8 | tensorflow | tflite | - | - | - | - | 0.500 | 4.000 | - | - |" in runtimes


def test_html_shows_the_comparison_table_and_plot(two_frameworks):
    rep, store = two_frameworks
    paths = report.write(rep, store)
    page = Path(paths["html"]).read_text()
    embedded = dict(re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page))
    assert list(embedded) == ["accuracy_latency", "frameworks", "speedup", "sizes"]
    assert base64.b64decode(embedded["frameworks"]) == Path(paths["frameworks"]).read_bytes()
    summary, comparison = page.split("<h2>Framework comparison</h2>")
    assert summary.count("<table>") == 1  # the summary is the main table alone
    assert "<td>1.20x</td><td>1.25x</td>" in comparison and "<h2>Runtimes</h2>" in comparison
    assert json.loads(Path(paths["json"]).read_text())["framework_comparison"][1]["name"] == "int8"


def test_single_framework_report_has_no_framework_comparison(tmp_path, recipe):
    store = ArtifactStore(tmp_path)
    pairs = [_pair(store, "baseline", "torch", 0.97, 0.97, 4000, {("onnxruntime", 1): 2.0, ("torch", 1): 5.0}),
             _pair(store, "int8", "torch", 0.96, 0.97, 1000, {("onnxruntime", 1): 1.0, ("torch", 1): 4.0})]
    rep = report.build(recipe, pairs)
    assert rep["framework_comparison"] == [] and [m["format"] for m in rep["models"]] == ["onnx", "onnx"]
    assert [c["vs_onnxruntime"] for c in rep["runtime_comparison"][1]["cells"]] == pytest.approx([1.0, 4.0])
    md = report.markdown(rep)
    assert "## Framework comparison" not in md and "| int8 | torch | onnx | 1.000 | 4.000 (4.00x) |" in md
    assert "frameworks" not in plots.render(rep)
