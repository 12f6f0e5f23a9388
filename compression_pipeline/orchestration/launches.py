"""What `make run` keeps beside the Dagster instance, and the rules that keep one launch of a family at a time.

- **A folder of the project's own.** `$DAGSTER_HOME/logs/` belongs to Dagster: the webserver and the daemon (so
  `make ui`, `dagster dev`) run a telemetry-upload thread that renames that folder away whenever it is not empty,
  even with telemetry off in dagster.yaml (only DAGSTER_DISABLE_TELEMETRY stops it). A launch's log, its
  thread-share file and the family locks live in `$DAGSTER_HOME/compression_pipeline/launches/`, a name Dagster
  does not use.
- **One launch per family.** A launch holds an exclusive lock on `<family>.lock` there (``flock``: the kernel drops
  it when the holder dies, so a killed launcher leaves no stale lock). Its phase processes inherit the locked file,
  so the lock is held until the last of them has ended too: a second `make run` of the family is refused, naming
  the running launch, its log and how to stop it, instead of training the same assets beside it.
- **No phase without its launcher.** A phase process watches its launcher; when the launcher is gone (killed,
  crashed) the phase interrupts itself as Ctrl-C would (its Dagster run is marked failed) and exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from compression_pipeline.errors import PipelineError

# Dagster's own entries in DAGSTER_HOME (storage, schedules, history, the telemetry folders): never ours.
DAGSTER_NAMES = frozenset({"logs", ".logs_queue", ".telemetry", ".nux", "storage", "history", "schedules",
                           "dagster.yaml", "workspace.yaml"})
LAUNCHER_PID_ENV = "COMPRESSION_PIPELINE_LAUNCHER_PID"
STOP_GRACE_S = 60.0  # how long an interrupted phase may take to mark its run before it is ended outright


def folder(instance_root: str | os.PathLike) -> Path:
    """The launches' folder under the instance directory (created)."""
    path = Path(instance_root) / "compression_pipeline" / "launches"
    path.mkdir(parents=True, exist_ok=True)
    return path


class LaunchBusy(PipelineError):
    """Another launch of the same family is running on this instance."""


@contextmanager
def family_lock(where: Path, family: str, launch_id: str, log_path: Path) -> Iterator[int]:
    """Hold ``<family>.lock`` in ``where`` for the block; yields its file descriptor, which the phase processes
    inherit (so the lock outlives the launcher until they have ended). Raises LaunchBusy when it is held."""
    path = where / f"{family}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchBusy(_busy_message(family, path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "launch": launch_id, "log": str(log_path),
                                  "started": datetime.now(UTC).isoformat(timespec="seconds")}).encode(), 0)
        yield fd
    finally:
        os.close(fd)


def _busy_message(family: str, path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        holder = {}
    pid = holder.get("pid")
    alive = pid is not None and _alive(int(pid))
    who = (f"launch {holder.get('launch', '?')} (started {holder.get('started', '?')}, launcher pid {pid})"
           if holder else "another launch")
    if alive:
        what = (f"Follow it in its log ({holder.get('log', '?')}) or the Dagster UI, wait for it to end, or stop it "
                f"with `kill {pid}` (its phases stop with it); then run again.")
    else:
        what = ("Its launcher has ended and its phase processes are stopping (each marks its run failed first); "
                "run again in a minute.")
    return f"a launch of {family!r} is still running on this instance: {who}. {what}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def watch_launcher() -> None:
    """In a phase process: when the launcher named by COMPRESSION_PIPELINE_LAUNCHER_PID is gone, interrupt this
    process as Ctrl-C does (Dagster marks the run and stops), and end it outright if that takes too long."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher:
        return

    def watch():
        while os.getppid() == int(launcher):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(STOP_GRACE_S)
        os._exit(130)

    threading.Thread(target=watch, daemon=True, name="launcher-watch").start()
