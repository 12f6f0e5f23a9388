"""report.html and its plots, the Pareto front, and precision-aware report cells (hand-made inputs)."""

import base64
import json
import re
from pathlib import Path

import pytest

from compression_pipeline import report
from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.recipe import parse_recipe
from compression_pipeline.report import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_on_a_hand_made_example():
    #           E fastest    A          C (dominated by A)  B         D (slower than B, same accuracy)  F most accurate
    points = [(0.5, 0.80), (1.0, 0.90), (1.5, 0.85), (2.0, 0.95), (3.0, 0.95), (2.5, 0.97)]
    assert plots.pareto_front(points) == [0, 1, 3, 5]
    # Identical points do not dominate each other; a single point is its own front; nothing in, nothing out.
    assert plots.pareto_front([(1.0, 0.9), (1.0, 0.9), (2.0, 0.8)]) == [0, 1]
    assert plots.pareto_front([(3.0, 0.5)]) == [0]
    assert plots.pareto_front([]) == []


def _bench(p50, bs, precision="fp32", runtime="onnxruntime"):
    return {"runtime": runtime, "provider": "CUDAExecutionProvider" if precision == "fp16" else "CPUExecutionProvider",
            "device": "cuda" if precision == "fp16" else "cpu", "precision": precision, "batch_size": bs,
            "p50_ms": p50, "p90_ms": 1.1 * p50, "p95_ms": 1.2 * p50, "p99_ms": 1.3 * p50, "mean_ms": p50,
            "std_ms": 0.01, "runs": 50, "throughput": bs * 1e3 / p50, "load_s": 0.01, "first_call_ms": 3 * p50,
            "peak_host_mb": 400.0}


def _handles(store, name, acc, size, rows, skipped=()):
    art = store.write_bytes(f"fam/{name}", b"x" * size, "onnx", "onnx", "torch")
    d = Handle(artifact=art, info={"name": name, "framework": "torch", "method": None if name == "baseline" else "m",
                                   "parent": None if name == "baseline" else "baseline", "accuracy": acc,
                                   "accuracy_runtime": "onnxruntime", "baseline_accuracy": 0.97, "params": size,
                                   "nonzero_params": size, "file_bytes": size, "gzip_bytes": size // 2})
    b = Handle(artifact=store.write_bytes(f"fam/{name}_b", name.encode(), "json", "json"),
               info={"results": rows, "skipped": list(skipped),
                     "environment": {"cpu": {"model": "x", "cores": 2, "isa": ["avx2"]}, "threads": 2, "gpu": None,
                                     "libraries": {"torch": "2"}}})
    return d, b


@pytest.fixture
def family_report(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["variants"] = {n: {"from": "baseline", "method": "quantize_static"} for n in ("int8", "b", "c")}
    recipe = parse_recipe(tiny_recipe_dict)
    store = ArtifactStore(tmp_path)
    skip = [{"runtime": "torch", "precision": "fp16", "reason": "fp16 is benchmarked on CUDA only"}]
    pairs = [_handles(store, "baseline", 0.97, 4000, [_bench(2.0, 1), _bench(20.0, 4), _bench(1.0, 1, "fp16"),
                                                     _bench(5.0, 1, runtime="torch")], skip),
             _handles(store, "int8", 0.96, 1000, [_bench(1.0, 1), _bench(8.0, 4)]),
             _handles(store, "b", 0.95, 2000, [_bench(1.5, 1), _bench(12.0, 4)]),   # dominated by int8
             _handles(store, "c", 0.90, 500, [_bench(0.5, 1), _bench(5.0, 4)])]
    return report.build(recipe, pairs), store


def test_cells_keep_precision_apart_and_speedups_are_vs_the_fp32_baseline(family_report):
    rep, _ = family_report
    base = rep["models"][0]
    fp16 = next(r for r in base["benchmarks"] if r["precision"] == "fp16")
    assert fp16["speedup_vs_baseline"] == pytest.approx(2.0)  # fp16 1.0 ms vs fp32 2.0 ms on the same runtime
    c = rep["models"][3]
    assert [r["speedup_vs_baseline"] for r in c["benchmarks"]] == pytest.approx([4.0, 4.0])
    md = report.markdown(rep)
    assert "onnxruntime fp16 b1 p50 ms (speedup [95% CI])" in md and "onnxruntime b1 p50 ms (speedup [95% CI])" in md
    assert "Not measured here: torch fp16: fp16 is benchmarked on CUDA only." in md
    assert rep["select"]["runtime"] == "onnxruntime" and rep["dataset"]["source"] == "sklearn_digits"


def test_html_report_renders_the_three_plots(family_report):
    rep, store = family_report
    paths = report.write(rep, store)
    for name in plots.PLOTS:
        png = Path(paths[name]).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000, name
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width >= 600 and height >= 150
    page = Path(paths["html"]).read_text()
    embedded = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert [name for name, _ in embedded] == ["accuracy_latency", "speedup", "sizes"]
    for name, data in embedded:  # the embedded images are the PNG files written next to the page
        assert base64.b64decode(data) == Path(paths[name]).read_bytes()
    for text in ("<h2>Accuracy vs latency</h2>", "Pareto front", "torch_int8", "0.9600", "onnxruntime fp16 b1",
                 "fp16 is benchmarked on CUDA only", "Every benchmark cell"):
        assert text in page, text
    assert json.loads(Path(paths["json"]).read_text())["models"][0]["benchmarks_skipped"][0]["precision"] == "fp16"


def test_the_plotted_front_is_the_computed_front(family_report):
    rep, _ = family_report
    bs = plots.plot_batch(rep)
    pts = [(next(r["p50_ms"] for r in m["benchmarks"] if (r["runtime"], r["precision"], r["batch_size"]) ==
                 ("onnxruntime", "fp32", bs)), m["accuracy"]) for m in rep["models"]]
    front = [rep["models"][i]["name"] for i in plots.pareto_front(pts)]
    assert bs == 1 and front == ["c", "int8", "baseline"]  # b (1.5 ms, 0.95) is dominated by int8 (1.0 ms, 0.96)
