"""Data-parallel training over N worker processes (torch.distributed, DistributedDataParallel), supervised by the
process that asked for it: NCCL on GPUs, gloo on CPU, the same code either way.

The parent writes a job folder (the model as ``pytorch_io`` stores it: safetensors plus what rebuilds it; the
tensors as safetensors; the settings as JSON: nothing is pickled), starts ``python -m
compression_pipeline.frameworks.pytorch_ddp JOB RANK`` once per rank, and watches them. The workers meet through
a file store in the job folder (no port to pick or collide on), each trains its share of every batch with
``pytorch_train.train``, and rank 0 alone writes the result: the trained weights to a temporary name, then renamed,
so a result file is whole or absent. When a worker exits with an error (or is killed) the parent stops every other
worker, removes the job folder and raises ``TrainingError`` naming the rank, its exit status and the end of its log;
nothing is returned, so no artifact is written. A worker whose parent dies stops itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from compression_pipeline.errors import PipelineError

POLL_S = 0.05
STOP_GRACE_S = 5.0
# Called with the list of worker processes right after they start (tests kill one to see the step fail cleanly).
SPAWN_HOOKS: list[Callable[[list[subprocess.Popen]], object]] = []


class TrainingError(PipelineError):
    """A data-parallel training failed: a worker died or exited with an error (its rank, status and log tail)."""


def fit(model, data, loop, placement, log: Callable[[str], object] | None = None, threads: int | None = None):
    """Train ``model`` (``pytorch_train.TrainData`` ``data``, ``Loop`` ``loop``) on ``placement.processes`` workers
    and load the result into ``model``; returns the history (``pytorch_train.History``) with its ``training``
    record, which adds the whole job's wall time (worker start-up included) as ``job_wall_s``."""
    import torch
    from safetensors.torch import load_file, save_file

    from compression_pipeline.frameworks import pytorch_io, pytorch_train

    if loop.params is not None:
        raise ValueError("a training of a subset of the parameters runs in one process (processes: 1)")
    t0 = time.perf_counter()
    world = placement.processes
    threads = threads or pytorch_train.threads_per_worker(world)
    job = Path(tempfile.mkdtemp(prefix="compression-pipeline-train-"))
    procs: list[subprocess.Popen] = []
    try:
        original = next(model.parameters()).device
        pytorch_io.save(model.cpu(), job / "model.safetensors")
        model.to(original)
        tensors = {k: v.contiguous() for k, v in (("X", data.X), ("y", data.y), ("X_val", data.X_val),
                                                   ("y_val", data.y_val), ("soft", data.soft)) if v is not None}
        save_file(tensors, str(job / "data.safetensors"))
        settings = {"loop": {k: v for k, v in asdict(loop).items() if k != "params"},
                    "placement": placement.record(), "threads": threads, "parent": os.getpid()}
        (job / "job.json").write_text(json.dumps(settings))
        procs = _start(job, world)
        for hook in SPAWN_HOOKS:
            hook(procs)
        _supervise(procs, job, log)
        result = job / "result.safetensors"
        if not result.is_file():
            raise TrainingError(f"data-parallel training: every worker exited cleanly but rank 0 wrote no result "
                                f"({job})")
        state = load_file(str(result))
        with torch.no_grad():
            model.load_state_dict({k: v.to(original) for k, v in state.items()})
        model.eval()
        done = json.loads((job / "result.json").read_text())
        history = pytorch_train.History(done["history"])
        history.training = {**done["training"], "threads_per_process": threads,
                            "job_wall_s": round(time.perf_counter() - t0, 3)}
        return history
    finally:
        _stop(procs)
        _remove(job)


def _start(job: Path, world: int) -> list[subprocess.Popen]:
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                          if p)}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo talks over loopback
    procs = []
    for rank in range(world):
        out = open(job / f"rank{rank}.log", "wb")  # noqa: SIM115 - the worker writes it; closed after start
        try:
            procs.append(subprocess.Popen([sys.executable, "-m", __name__, str(job), str(rank)], env=env,
                                          stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        finally:
            out.close()
    return procs


def _supervise(procs: list[subprocess.Popen], job: Path, log) -> None:
    """Wait for every worker; relay rank 0's progress lines; on the first failure stop the rest and raise."""
    progress, shown = job / "progress.log", 0
    while True:
        if log and progress.is_file():
            lines = progress.read_text().splitlines()
            for line in lines[shown:]:
                log(line)
            shown = len(lines)
        codes = [p.poll() for p in procs]
        failed = [(rank, c) for rank, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            rank, code = failed[0]
            _stop(procs)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise TrainingError(f"data-parallel training failed: worker rank {rank} of {len(procs)} {how}; every "
                                f"other worker was stopped and nothing was written. Its log ends:\n"
                                f"{_tail(job / f'rank{rank}.log')}")
        if all(c == 0 for c in codes):
            return
        time.sleep(POLL_S)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate every worker still running, then kill the ones that do not stop within the grace time."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in alive:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _remove(job: Path) -> None:
    import shutil

    shutil.rmtree(job, ignore_errors=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


# --- the worker -------------------------------------------------------------------------------------------------
def _watch_parent(parent: int) -> None:
    """Exit when the supervising process is gone (its step was killed): a worker never outlives its job."""
    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker(job: Path, rank: int) -> None:
    import datetime as dt

    import torch
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file
    from torch.nn.parallel import DistributedDataParallel

    from compression_pipeline.frameworks import pytorch_io
    from compression_pipeline.frameworks.pytorch_train import Loop, Placement, TrainData, train

    settings = json.loads((job / "job.json").read_text())
    _watch_parent(settings["parent"])
    torch.set_num_threads(settings["threads"])
    placement, loop = Placement(**settings["placement"]), Loop(**settings["loop"])
    world = placement.processes
    if placement.device == "cuda":
        device = torch.device("cuda", placement.devices[rank])
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(placement.backend, init_method=f"file://{job / 'rendezvous'}", rank=rank,
                            world_size=world, timeout=dt.timedelta(seconds=placement.timeout_s))
    try:
        model = pytorch_io.load(job / "model.safetensors").to(device)
        t = load_file(str(job / "data.safetensors"))
        data = TrainData(X=t["X"], y=t["y"], X_val=t["X_val"], y_val=t["y_val"], soft=t.get("soft"))
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        progress = job / "progress.log"

        def log(line: str) -> None:
            with progress.open("a") as f:
                f.write(line + "\n")

        history = train(model, data, loop, placement, device=device, rank=rank, world=world, wrapped=wrapped,
                        log=log if rank == 0 else None)
        if rank == 0:  # the one writer: the weights whole under their final name, or not at all
            tmp = job / "result.tmp"
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"written_by_rank": "0"})
            (job / "result.json").write_text(json.dumps({"history": list(history), "training": history.training}))
            os.replace(tmp, job / "result.safetensors")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]), int(sys.argv[2]))
