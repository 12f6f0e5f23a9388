"""Dagster's servers as the tests start them: `dagster dev` (webserver + daemon) or the webserver alone, on
127.0.0.1 and a free port, stopped the way Ctrl-C stops them, with nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from compression_pipeline.settings import PROJECT_ROOT

# A process started from a background job inherits SIGINT/SIGTERM as ignored, and `dagster dev` would then never
# stop: the server starts through this launcher (`python -c DEFAULT_SIGNALS_EXEC -m dagster dev ...`), which gives it
# the default dispositions and execs it in place (same pid, so still the leader of its own session). A launcher
# rather than Popen's preexec_fn, which is not safe in a process with threads.
DEFAULT_SIGNALS_EXEC = (
    "import os, signal, sys\n"
    "for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):\n"
    "    signal.signal(sig, signal.SIG_DFL)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)
COMMANDS = {"dev": ["-m", "dagster", "dev"], "webserver": ["-m", "dagster_webserver"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@contextmanager
def dagster_server(which: str, env: dict, log_path: Path, timeout_s: float = 180):
    """`dagster dev` (``which="dev"``) or `dagster-webserver` (``"webserver"``) on the project's workspace.yaml;
    yields (base url, seconds until it answered)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", DEFAULT_SIGNALS_EXEC, *COMMANDS[which],
                                 "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], cwd=PROJECT_ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            assert proc.poll() is None, f"dagster {which} exited with {proc.returncode}; see {log_path}"
            assert time.monotonic() - t0 < timeout_s, \
                f"dagster {which} did not answer on {url} within {timeout_s} s; see {log_path}"
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield url, time.monotonic() - t0
    finally:
        # Stop the whole process group (webserver, daemon, code server, run workers) the way Ctrl-C does.
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        clean = not group_alive(proc.pid)
        if not clean:
            os.killpg(proc.pid, signal.SIGKILL)
        assert clean and proc.returncode is not None, \
            f"dagster {which} left processes behind after SIGINT; see {log_path}"
