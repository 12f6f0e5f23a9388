"""Faults: a process killed in the middle leaves nothing half-written that anything reads, a failed run resumes
from its failure, and two runs of one family at once do not corrupt each other's artifacts.

The Dagster cases run the real CLI (`dagster job execute`) on a persistent instance in a temporary DAGSTER_HOME:
the killed step with the multiprocess executor (a real step process gets SIGKILL), the two concurrent runs with the
in-process executor (one process a run, as `make run`'s phases).
"""

import copy
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.settings import PROJECT_ROOT, Settings

from conftest import TINY, write_recipe


def test_a_writer_killed_midway_leaves_only_a_temporary_file_that_nothing_reads(tmp_path):
    script = (
        "import sys, time\n"
        "from compression_pipeline.artifacts import ArtifactStore\n"
        "with ArtifactStore(sys.argv[1]).writing('fam/model', 'onnx', 'onnx') as slot:\n"
        "    with open(slot.path, 'wb') as f:\n"
        "        f.write(b'half a model' * 100); f.flush()\n"
        "        print('written', flush=True)\n"
        "        time.sleep(120)\n"
    )
    store = ArtifactStore(tmp_path)
    kept = store.write_bytes("fam/model", b"the last good model", "onnx", "onnx")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    files = sorted((tmp_path / "fam/model").iterdir())
    # The killed write is a temporary file; the only final artifact is the one written before, intact.
    assert [p.name for p in files if not p.name.endswith(".tmp")] == [Path(kept.path).name]
    (tmp, ) = [p for p in files if p.name.endswith(".tmp")]
    assert tmp.stat().st_size == 1200
    assert store.path(kept, verify=True).read_bytes() == b"the last good model"


# --- Dagster runs -------------------------------------------------------------------------------------------------
def _setup(tmp_path, monkeypatch, epochs=3):
    settings = Settings(tmp_path / "recipes", tmp_path / "data", tmp_path / "artifacts")
    for p in (settings.recipes_dir, settings.data_root, settings.artifact_root):
        p.mkdir()
    recipe = copy.deepcopy(TINY)
    recipe["baseline"]["epochs"] = epochs
    write_recipe(settings, recipe)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster_home/dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's config reads it, here and in the runs
    env = {**os.environ, "DAGSTER_HOME": str(home), "COMPRESSION_PIPELINE_RECIPES": str(settings.recipes_dir),
           "COMPRESSION_PIPELINE_ARTIFACTS": str(settings.artifact_root),
           "COMPRESSION_PIPELINE_DATA": str(settings.data_root), "PYTHONUNBUFFERED": "1"}
    return settings, home, env


def _execute(env, config: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dagster", "job", "execute", "-m", "compression_pipeline.definitions",
           "-j", "tiny_recompress", *(["-c", str(config)] if config else [])]
    return subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _lines(proc) -> "queue.Queue[str | None]":
    """Read the process's output on a thread, so a test can wait for a line without blocking forever."""
    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _check_handles(root: Path) -> dict[str, set[str]]:
    """Every handle file under the artifact root parses and points at a file that matches its sha256.

    Returns {"good": keys with a good.json, "runs": run handle files}. Temporary files are never referenced.
    """
    store, out = ArtifactStore(root), {"good": set(), "runs": set()}
    for f in (root / "_handles").rglob("*.json"):
        h = Handle.model_validate_json(f.read_text())
        if h.artifact:
            assert not h.artifact.path.endswith(".tmp")
            store.path(h.artifact, verify=True)
        rel = f.relative_to(root / "_handles")
        if f.name == "good.json":
            out["good"].add("/".join(rel.parts[:-1]))
        else:
            out["runs"].add(str(rel))
    assert not list((root / "_handles").rglob("*.tmp"))  # handle writes are atomic too; none were cut here
    return out


@pytest.mark.e2e
def test_a_step_killed_mid_training_leaves_nothing_half_written_and_the_run_resumes_from_failure(tmp_path, monkeypatch):
    settings, home, env = _setup(tmp_path, monkeypatch, epochs=10)
    proc = _execute(env)
    lines, pid, killed, out = _lines(proc), None, False, []
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        line = lines.get(timeout=deadline - time.monotonic())
        if line is None:
            break
        out.append(line)
        m = re.search(r" - (\d+) - tiny__torch_baseline - STEP_START - ", line)
        if m:
            pid = int(m.group(1))  # the step's own process (multiprocess executor)
        if pid and not killed and "tiny__torch_baseline - epoch 1/10" in line:
            os.kill(pid, signal.SIGKILL)  # mid-training: nine epochs still to go
            killed = True
    assert killed, "".join(out[-50:])
    assert proc.wait(timeout=60) != 0
    text = "".join(out)
    assert "RUN_FAILURE" in text and "tiny__torch_baseline" in text

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (failed,) = instance.get_run_records()
        assert failed.dagster_run.status == dg.DagsterRunStatus.FAILURE
        run_id = failed.dagster_run.run_id
    handles = _check_handles(settings.artifact_root)
    assert handles["good"] == {"tiny/raw_dataset", "tiny/splits"}  # the killed step handed nothing on
    assert not (settings.artifact_root / "_handles/tiny/torch_baseline").exists()
    assert not [p for p in (settings.artifact_root / "tiny").rglob("*") if p.is_file() and "torch_baseline" in str(p)
                and not p.name.endswith(".tmp")]

    resumed = subprocess.run([sys.executable, "-m", "compression_pipeline", "resume", run_id], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"from the failure of run {run_id}" in resumed.stdout and "succeeded" in resumed.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        new = [r.dagster_run for r in instance.get_run_records() if r.dagster_run.run_id != run_id]
        assert len(new) == 1 and new[0].parent_run_id == run_id and new[0].status == dg.DagsterRunStatus.SUCCESS
        started = {e.step_key for e in instance.all_logs(new[0].run_id, of_type=dg.DagsterEventType.STEP_START)}
    # Only what failed or never ran is executed again; the data steps that succeeded are not repeated.
    assert "tiny__torch_baseline" in started and "tiny__report" in started
    assert not started & {"tiny__raw_dataset", "tiny__splits"}
    handles = _check_handles(settings.artifact_root)
    assert {"tiny/torch_baseline", "tiny/torch_int8", "tiny/report"} <= handles["good"]


@pytest.mark.e2e
def test_two_runs_of_one_family_at_once_do_not_corrupt_each_other(tmp_path, monkeypatch):
    settings, home, env = _setup(tmp_path, monkeypatch)
    with dg.DagsterInstance.from_config(str(home)):
        pass  # an instance in use already has its database (two first-ever runs would race to create it)
    # Each run in one process (the in-process executor, as `make run`'s phases run): what is tested is two runs
    # writing the same assets at once; a process per step would only add ~18 imports of torch on 2 cores.
    config = tmp_path / "in_process.yaml"
    config.write_text("execution:\n  config:\n    in_process: {}\n")
    procs = [_execute(env, config) for _ in range(2)]
    outs = [p.communicate(timeout=800)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
    runs = [r.dagster_run for r in records]
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert max(r.start_time for r in records) < min(r.end_time for r in records)  # they really ran at the same time
    handles = _check_handles(settings.artifact_root)
    keys = {"tiny/raw_dataset", "tiny/splits", "tiny/torch_baseline", "tiny/torch_baseline_onnx", "tiny/torch_int8",
            "tiny/torch_baseline_benchmark", "tiny/torch_int8_benchmark", "tiny/report", "tiny/deployment_candidate"}
    assert handles["good"] == keys
    # Each run kept its own handle of every asset, and each handle's file is intact (checked above).
    for key in keys:
        assert {f"{key}/runs/{r.run_id}.json" for r in runs} <= handles["runs"]
    assert not [p for p in settings.artifact_root.rglob("*.tmp")]
    import json

    report = json.loads((settings.artifact_root / "tiny/report/report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["baseline", "int8"] and report["rejected"] == []
