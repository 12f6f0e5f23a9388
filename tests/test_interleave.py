"""The interleaved measurement session (interleave.py), the intervals on its ratios (stats.round_ratio), and what
they decide: the report's speedups and the deployment candidate chosen with the intervals."""

import subprocess
import sys
import time

import numpy as np
import pytest

from compression_pipeline import interleave as IL
from compression_pipeline import stats
from compression_pipeline.benchmark import Protocol
from compression_pipeline.recipe import Select
from compression_pipeline.report.select import select

PROTOCOL = Protocol(warmup_runs=3, warmup_s=0.0, min_runs=5, min_time_s=0.0)


# --- the interval of a median of per-round ratios ----------------------------------------------------------------
def test_the_median_interval_uses_order_statistics_with_at_least_the_confidence():
    assert stats.median_ranks(5) is None and stats.rounds_needed(0.95) == 6
    k, j, coverage = stats.median_ranks(6)
    assert (k, j) == (1, 6) and coverage == pytest.approx(1 - 2 / 64)
    k, j, coverage = stats.median_ranks(20)
    assert (k, j) == (6, 15) and coverage >= 0.95
    r = stats.round_ratio([2.0, 2.2, 1.8, 2.1, 2.0, 1.9], [1.0] * 6)
    assert (r.value, r.ci_low, r.ci_high, r.rounds) == (pytest.approx(2.0), 1.8, 2.2, 6) and r.resolved
    assert not stats.round_ratio([1.0, 1.1, 0.9, 1.0, 1.05, 0.95], [1.0] * 6).resolved
    assert stats.round_ratio([1.0] * 5, [1.0] * 5) is None  # too few rounds for an interval: none is made up
    with pytest.raises(ValueError, match="pair by round"):
        stats.round_ratio([1.0] * 6, [1.0] * 7)


def test_the_interval_covers_the_true_ratio_at_least_as_often_as_it_claims():
    """Per-round ratios scattered around a true median of 2.0 (log-normal noise, plus one round in ten disturbed
    by a burst that slows one cell 3-fold): the interval holds 2.0 in >= 95 % of 2,000 sessions of 6 to 20 rounds."""
    rng = np.random.default_rng(0)
    hits = trials = 0
    for n in (6, 10, 20):
        for _ in range(2000 // 3):
            ref = np.exp(rng.normal(np.log(2.0), 0.1, n))
            cell = np.ones(n)
            burst = rng.random(n) < 0.1
            ref[burst] *= 3.0
            ref[burst] = np.where(rng.random(burst.sum()) < 0.5, ref[burst], ref[burst] / 9.0)
            r = stats.round_ratio(ref, cell)
            hits += r.ci_low <= 2.0 <= r.ci_high
            trials += 1
    assert hits / trials >= 0.95, hits / trials


# --- the session on real ONNX Runtime sessions -------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, digits_data):
    """Two zoo CNNs of different widths exported to ONNX (random weights: timing only)."""
    from compression_pipeline.frameworks import get
    from compression_pipeline.types import ZooModel

    _, spec = digits_data
    fw, folder = get("torch"), tmp_path_factory.mktemp("onnx")
    out = {}
    for width in (4, 32):
        path = folder / f"w{width}.onnx"
        out[width] = (path, fw.export_onnx(fw.build(ZooModel(arch="cnn", width=width), spec, seed=0), path, spec))
    return out, spec


def _sessions(onnx_files, names=("small", "big", "big_again")):
    from compression_pipeline.runtimes import onnxruntime as ort_runtime

    files, spec = onnx_files
    width = {"small": 4, "big": 32, "big_again": 32}
    return {n: [ort_runtime.open(files[width[n]][0], spec, files[width[n]][1], "cpu", 1)] for n in names}


def _pairs(models, batch_sizes=(1, 8)):
    return [(IL.cell_key(m, "onnxruntime", "fp32", bs), IL.cell_key("big", "onnxruntime", "fp32", bs))
            for m in models for bs in batch_sizes]


def test_every_round_times_every_cell_in_a_new_order_and_ratios_get_intervals(onnx_files):
    rounds = IL.Rounds(slice_s=0.02, min_rounds=6, budget_s=3.0, target=0.001)  # a target no session reaches
    res = IL.measure(_sessions(onnx_files), [1, 8], PROTOCOL, rounds, _pairs(["small", "big_again"]), threads=1)
    s = res.session
    assert not s["reached"] and s["rounds"] >= 6 and s["seconds"] >= 3.0  # the budget ended it, after 6 rounds
    assert len(s["cell_keys"]) == 6 and all(sorted(o) == list(range(6)) for o in s["orders"])
    assert len({tuple(o) for o in s["orders"]}) > 1  # the order changes from round to round
    assert all(len(c.round_p50) == s["rounds"] == len(c.round_mean) for c in res.cells)
    assert all(len(c.samples) >= s["rounds"] * rounds.slice_runs for c in res.cells)
    small, same = (res.ratios[IL.cell_key(m, "onnxruntime", "fp32", 8), IL.cell_key("big", "onnxruntime", "fp32", 8)]
                   for m in ("small", "big_again"))
    assert small.ci_low <= small.value <= small.ci_high and small.value > 1.5  # 8x fewer channels: faster
    assert 0.8 < same.value < 1.25  # the same file in two sessions of the same runtime
    row = IL.row(res.cells[0], s["id"])
    assert row["session"] == s["id"] and row["rounds"] == s["rounds"] and len(row["round_p50_ms"]) == s["rounds"]
    assert {"p50_ms", "p99_ms", "throughput", "first_call_ms", "others_cores", "samples_ms"} <= set(row)


def test_a_session_stops_once_every_ratio_is_within_its_target(onnx_files):
    rounds = IL.Rounds(slice_s=0.02, min_rounds=6, budget_s=60.0, target=0.9)  # any interval is narrow enough
    res = IL.measure(_sessions(onnx_files, ("small", "big")), [1], PROTOCOL, rounds, _pairs(["small"], (1,)),
                     threads=1)
    assert res.session["reached"] and res.session["rounds"] == 6


def test_a_busy_process_on_the_cores_is_seen_and_marks_the_session_under_load(onnx_files):
    """Interleaving evens out bursts, not sustained load: a process spinning on a core through the session is
    measured (other processes' CPU time per slice) and the session is marked under load."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        rounds = IL.Rounds(slice_s=0.02, min_rounds=6, budget_s=2.0, target=0.05)
        res = IL.measure(_sessions(onnx_files, ("small", "big")), [1], PROTOCOL, rounds, _pairs(["small"], (1,)),
                         threads=1)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    s = res.session
    assert s["others_cores_median"] > 0.9 and s["under_load"], s
    assert all(c.others and min(c.others) > 0.5 for c in res.cells)


# --- what the intervals decide -----------------------------------------------------------------------------------
def _model(name, rounds, accuracy, session="s1", file_bytes=1000):
    rounds = [float(x) for x in rounds]
    return {"name": name, "framework": "torch", "method": None if name == "baseline" else "m",
            "parent": None if name == "baseline" else "baseline", "accuracy": accuracy, "file_bytes": file_bytes,
            "gates_passed": True, "gates": [], "benchmark_session": session, "benchmarks_skipped": [],
            "benchmarks": [{"runtime": "onnxruntime", "precision": "fp32", "batch_size": 1, "provider": "cpu",
                            "p50_ms": float(np.median(rounds)), "p90_ms": 1.0, "p99_ms": 1.0, "throughput": 1.0,
                            "session": session, "round_p50_ms": rounds}]}


def _report(*models, under_load=False):
    return {"models": list(models), "benchmark_sessions": {
        "s1": {"id": "s1", "under_load": under_load, "others_cores_median": 1.1 if under_load else 0.01,
               "cpu_count": 2}}}


def test_a_model_is_faster_only_beyond_the_interval_and_accuracy_decides_a_tie():
    a = _model("a", [1.00, 1.05, 0.97, 1.02, 1.04, 0.99], accuracy=0.95)  # the lowest point p50
    b = _model("b", [1.01, 1.00, 1.03, 0.98, 1.06, 1.00], accuracy=0.97)  # within a's interval, more accurate
    c = _model("c", [2.0, 2.1, 1.9, 2.05, 2.0, 1.95], accuracy=0.99)  # clearly slower
    d = select(_report(a, b, c), Select())
    assert d.chosen == "torch_b" and d.tied == ["torch_a"], d
    assert "as fast within the interval" in d.reasons["torch_a"] and "~" in d.reasons["torch_a"]
    assert "meets every constraint, but" in d.reasons["torch_c"] and "[" in d.reasons["torch_c"]
    assert d.speed.startswith("with intervals")
    fast = _model("fast", [0.5, 0.52, 0.49, 0.5, 0.51, 0.5], accuracy=0.90)
    assert select(_report(a, b, fast), Select()).chosen == "torch_fast"  # faster beyond the interval wins


def test_under_sustained_load_speed_decides_nothing_and_the_decision_says_so():
    fast = _model("fast", [0.5] * 6, accuracy=0.90)
    slow = _model("slow", [2.0] * 6, accuracy=0.97)
    d = select(_report(fast, slow, under_load=True), Select())
    assert d.chosen == "torch_slow" and "sustained load" in d.speed and "Re-measure" in d.speed


def test_cells_from_different_sessions_are_compared_by_point_values_and_the_decision_says_so():
    a = _model("a", [1.0] * 6, accuracy=0.95)
    b = _model("b", [1.01] * 6, accuracy=0.99, session="s2")
    d = select(_report(a, b), Select())
    assert d.chosen == "torch_a" and "another session" in d.speed


def test_the_benchmarks_document_is_generated_from_reports_and_compares_two_runs(tmp_path):
    """BENCHMARKS.md: a section per report (machine, versions, the report file, the session) and, for two runs of a
    family, every speedup side by side with whether each lies in the other's interval and whether they overlap."""
    import json

    from compression_pipeline.report.document import document

    def rep(value, ci):
        row = {"runtime": "onnxruntime", "precision": "fp32", "batch_size": 1, "p50_ms": 1.0,
               "speedup_vs_baseline": value, "speedup_ci": ci}
        base = {"runtime": "onnxruntime", "precision": "fp32", "batch_size": 1, "p50_ms": 2.0,
                "speedup_vs_baseline": 1.0}
        common = {"framework": "torch", "accuracy": 0.97, "accuracy_drop": 0.0, "params": 10, "file_bytes": 4096}
        return {"family": "fam", "generated_at": "2026-12-07T12:00:00", "recipe": "assets/fam.yaml",
                "environment": {"cpu": {"model": "Some CPU", "cores": 2, "isa": ["avx2"]}, "threads": 2,
                                "libraries": {"torch": "2.13.0", "onnxruntime": "1.31.1"}},
                "benchmark_sessions": {"s": {"id": "s", "rounds": 12, "seconds": 30.0, "reached": True,
                                             "target_half_width": 0.05, "budget_s": 60, "cells": 2, "cpu_count": 2,
                                             "others_cores_median": 0.01, "under_load": False}},
                "models": [{**common, "name": "baseline", "parent": None, "benchmark_session": "s",
                            "benchmarks": [base]},
                           {**common, "name": "int8", "parent": "baseline", "accuracy_drop_ci": [-0.01, 0.01],
                            "size_ratio": 0.25, "benchmark_session": "s", "benchmarks": [row]}]}

    runs = []
    for i, (value, ci) in enumerate([(2.0, [1.9, 2.1]), (2.05, [1.95, 2.3])]):
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps(rep(value, ci)))
    text = document(runs)
    assert text.startswith("# Benchmarks") and text.count("## fam: 2026-12-07 12:00:00 UTC") == 2
    assert "Some CPU, 2 cores (ISA: avx2)" in text and "torch 2.13.0" in text and "onnxruntime 1.31.1" in text
    assert "run0.json` (sha256 " in text and str(tmp_path) not in text  # no machine's folders in a committed file
    assert "| int8 | torch | 0.9700 |" in text and "4.00x" in text and "1.000 (2.00x [1.90, 2.10])" in text
    assert "Of 1 speedups, 1 lie within the other run's interval" in text and "the intervals of 1 overlap" in text
