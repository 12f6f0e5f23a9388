"""What `make run` does (`python -m compression_pipeline run <family>`): the family materialized through Dagster on a
persistent instance, in phases (one in-process run each, in a process of its own), with one progress line per step
and a summary; a failed gate ends in a readable summary with what to do and the report of the last good models."""

import json
import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from compression_pipeline.settings import PROJECT_ROOT

from conftest import write_recipe

pytestmark = pytest.mark.e2e


def _env(roots, tmp_path):
    """A persistent instance of its own (a copy of dagster_home/dagster.yaml) and the roots: (home, env)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster_home/dagster.yaml").read_text())
    return home, {**os.environ, "DAGSTER_HOME": str(home), "COMPRESSION_PIPELINE_RECIPES": str(roots.recipes_dir),
                  "COMPRESSION_PIPELINE_ARTIFACTS": str(roots.artifact_root),
                  "COMPRESSION_PIPELINE_DATA": str(roots.data_root)}


def _launch(roots, tmp_path, *args):
    home, env = _env(roots, tmp_path)
    run = subprocess.run([sys.executable, "-m", "compression_pipeline", "run", *args], env=env, capture_output=True,
                         text=True, cwd=PROJECT_ROOT, timeout=900, check=False)
    return run, home


def _runs(home) -> list:
    # the instance's dagster.yaml reads its storage folder from $DAGSTER_HOME, as `make run`'s does
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            return [r.dagster_run for r in instance.get_run_records()]


def test_both_frameworks_in_phases_with_one_line_per_step(roots, tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["baseline"]["frameworks"] = ["torch", "tensorflow"]
    tiny_recipe_dict["variants"]["tflite_int8"] = {"from": "baseline", "method": "tflite_quantize", "mode": "int8",
                                                   "samples": 64, "frameworks": ["tensorflow"]}
    tiny_recipe_dict["select"] = {"objective": "file_bytes"}  # any format may win: the candidate keeps its own
    write_recipe(roots, tiny_recipe_dict)
    run, home = _launch(roots, tmp_path, "tiny")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    # 2 data + torch (baseline, export, int8) + 2 benchmarks + TF (baseline, onnx, tflite, int8, tflite_int8)
    # + 3 benchmarks + report + candidate
    steps = re.findall(r"^\[\s*(\d+)/(\d+)\] (tiny/\S+)", out, re.MULTILINE)
    assert len(steps) == 17 and {t for _, t, _ in steps} == {"17"}, out
    assert [int(k) for k, _, _ in steps] == list(range(1, 18))
    assert re.search(r"\] tiny/splits +\d+\.\d s  schema ok, value_range ok", out)
    assert re.search(r"\] tiny/torch_int8 +\d+\.\d s  accuracy_gate ok", out), out
    assert "DEBUG" not in out and "STEP_START" not in out  # Dagster's own event lines go to the log file
    assert "0 failed gate(s), 0 failed step(s)" in out and "| int8 | tensorflow | quantize_static |" in out
    runs = _runs(home)
    phases = {r.tags["compression_pipeline/phase"]: r for r in runs}
    assert set(phases) == {"data", "torch", "torch-benchmarks", "tensorflow", "tensorflow-benchmarks", "reports"}
    assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.job_name == "tiny_recompress" for r in runs)
    assert len({r.tags["compression_pipeline/launch"] for r in runs}) == 1
    report = json.loads((roots.artifact_root / "tiny/report/report.json").read_text())
    runtimes = {(m["framework"], m["name"]): {b["runtime"] for b in m["benchmarks"]} for m in report["models"]}
    assert runtimes == {("torch", "baseline"): {"onnxruntime", "torch"}, ("torch", "int8"): {"onnxruntime"},
                        ("tensorflow", "baseline"): {"onnxruntime", "tensorflow", "tflite"},
                        ("tensorflow", "int8"): {"onnxruntime"}, ("tensorflow", "tflite_int8"): {"tflite"}}
    chosen = json.loads((roots.artifact_root / "tiny/deployment_candidate/current/decision.json").read_text())["chosen"]
    m = next(m for m in report["models"] if f"{m['framework']}_{m['name']}" == chosen)
    assert m["file_bytes"] == min(x["file_bytes"] for x in report["models"])


def test_an_unknown_family_is_named_with_the_ones_there_are(roots, tmp_path, tiny_recipe_dict):
    write_recipe(roots, tiny_recipe_dict)
    run, _ = _launch(roots, tmp_path, "nope")
    assert run.returncode == 2 and "no family 'nope'" in run.stderr and "['tiny']" in run.stderr


def test_a_killed_phase_fails_the_launch_and_the_next_one_rebuilds_and_summarizes_a_failed_gate(
        roots, tmp_path, tiny_recipe_dict):
    """SIGKILL of the phase process that trains: the launch ends with the phase named as failed (exit 1, never a
    quiet success) and leaves no half-written artifact behind. The next launch builds it all; a variant added
    meanwhile collapses (99 % of the weights removed, no fine-tuning) and its failed gate ends in a readable summary
    with what to do and the report of the last good models."""
    import signal
    import time

    tiny_recipe_dict["baseline"]["epochs"] = 30  # long enough to be killed while it trains
    write_recipe(roots, tiny_recipe_dict)
    _, env = _env(roots, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "compression_pipeline", "run", "tiny"], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # the data phase's two lines, then the torch phase is training
        lines.append(line)
        if "] tiny/splits " in line:
            break
    time.sleep(8)
    # this launch's own phase process (another test may be launching a family of the same name at the same time)
    pgrep = ["pgrep", "-P", str(proc.pid), "-f", "orchestration.launch tiny_recompress"]
    killed = [int(p) for p in subprocess.run(pgrep, capture_output=True, text=True, check=False).stdout.split()]
    assert killed, "".join(lines)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=600) == 1, out
    assert "ERROR the torch phase: its process exited with code -9" in out, out
    assert not [p for p in roots.artifact_root.rglob("*") if p.is_file() and "torch_baseline" in str(p)
                and not p.name.endswith(".tmp")]

    tiny_recipe_dict["baseline"]["epochs"] = 3
    tiny_recipe_dict["variants"]["wrecked"] = {"from": "baseline", "method": "prune_unstructured", "sparsity": 0.99}
    write_recipe(roots, tiny_recipe_dict)
    run, home = _launch(roots, tmp_path, "tiny")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"\] tiny/torch_baseline +\d+\.\d s  accuracy_gate ok", out), out
    assert re.search(r"\] tiny/torch_wrecked +- +accuracy_gate FAILED", out)
    assert re.search(r"\] tiny/torch_wrecked_onnx +- +not run: an upstream step or gate failed", out)
    assert re.search(r"\] tiny/torch_wrecked_benchmark +- +skipped", out)
    assert re.search(r"\] tiny/deployment_candidate +- +skipped", out)
    summary = out[out.index("failed gate(s)") - 40:]
    assert "1 failed gate(s), 0 failed step(s)" in summary and "Traceback" not in summary
    assert "FAILED tiny/torch_wrecked: accuracy_gate" in summary
    assert re.search(r"drop \+\d+\.\d\d pp \(95% CI \+\d+\.\d\d \.\. \+\d+\.\d\d, n=360", summary)
    assert "what to do:" in summary and "max_accuracy_drop" in summary and "finetune_epochs" in summary
    # The report is rebuilt from the last good models and lists the rejected one; the summary shows its table.
    assert "| int8 | torch | quantize_static | baseline |" in summary
    report = json.loads((roots.artifact_root / "tiny/report/report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["baseline", "int8"]
    assert [r["asset"] for r in report["rejected"]] == ["tiny/torch_wrecked"]
    assert not (roots.artifact_root / "tiny/deployment_candidate").exists()
    runs = _runs(home)  # newest first: the second launch's runs
    launch = runs[0].tags["compression_pipeline/launch"]
    phases = {r.tags["compression_pipeline/phase"]: r.status for r in runs
              if r.tags["compression_pipeline/launch"] == launch}
    assert phases["torch"] == dg.DagsterRunStatus.FAILURE and phases["reports"] == dg.DagsterRunStatus.SUCCESS
