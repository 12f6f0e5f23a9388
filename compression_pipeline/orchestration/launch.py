"""`python -m compression_pipeline run <family>` (what `make run` calls): materialize a family through Dagster on the
persistent instance, print one line per finished step, and end with a summary a person can act on.

How it runs, and why. The family's job is split into phases by the process a step needs: the data, then per
framework its models and exports, then each framework's benchmarks, then the report and the deployment candidate.
Each phase is one Dagster run of the family's job (`<family>_recompress`, an asset selection of it) with Dagster's
in-process executor, in a fresh Python process of its own. So PyTorch and TensorFlow never share a process, and
torch or TensorFlow is imported once per phase instead of once per step (the multiprocess executor's 2-4 s per
step: most of the orchestration overhead on a 2-core machine). The frameworks' model phases run side by side,
sharing the cores (each gets cores / phases threads unless COMPRESSION_PIPELINE_THREADS says otherwise: measured
on 2 cores, a small CNN trains in PyTorch 1.5x faster on 2 threads than on 1, in TensorFlow slower, and the two
side by side on one thread each finish sooner than one after the other; when one ends, PyTorch training in the
others takes the freed cores from its next epoch or step: the share file, ``benchmark.shared_threads``); every
other phase runs alone, its steps one at a time, so a benchmark never shares the cores with training and measures
in a process that trained nothing. Every run, its events, checks and materializations are in the instance and the
UI like any other run; the UI, the schedule and the automation sensor still run the whole job with the
multiprocess executor (a process per step).

The phases' own output (Dagster's event log lines) goes to a log file in the project's own folder of the instance
(`$DAGSTER_HOME/compression_pipeline/launches/`, never Dagster's `logs/`: see launches.py, which also keeps one
launch per family and stops phases whose launcher died); this process reads the runs' events from the instance and
prints the progress lines. A failed gate stops its subtree in its
run; the later phases still run (they read the last good artifacts), so the report is rebuilt from the last good
models and lists the rejected ones, and the summary says which gate failed, by how much, and what to do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from compression_pipeline.orchestration import launches
from compression_pipeline.orchestration.automation import LAUNCH_TAG
from compression_pipeline.orchestration.family import PHASE_TAG
from compression_pipeline.settings import PROJECT_ROOT

# Dagster's console output inside a phase: warnings and errors only (the full event log is in the instance).
QUIET = {"execution": {"config": {"in_process": {}}}, "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_STEP_END = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED}


@dataclass
class Phase:
    name: str
    keys: list[dg.AssetKey]


def phases(defs: dg.Definitions, recipe) -> list[Phase]:
    """The family's assets grouped by the phase tag the asset factory gives each one: the data first, then each
    framework's models and exports followed by its benchmarks (in the recipe's order of frameworks), the reports
    last. A phase depends only on earlier ones."""
    graph = defs.resolve_asset_graph()
    by_phase: dict[str, list[dg.AssetKey]] = {}
    for key in graph.toposorted_asset_keys:
        if key.path[0] == recipe.name:
            by_phase.setdefault((graph.get(key).tags or {}).get(PHASE_TAG, "data"), []).append(key)
    order = ["data", *recipe.baselines, "benchmarks", "reports"]
    unknown = set(by_phase) - set(order)
    if unknown:
        raise RuntimeError(f"assets of {recipe.name} in phases {sorted(unknown)} that the launcher does not order")
    return [Phase(p, by_phase[p]) for p in order if p in by_phase]


# --- one phase, in its own process ---------------------------------------------------------------------------------
def run_phase(job_name: str, keys: list[str], tags: dict) -> int:
    """Execute ``keys`` of ``job_name`` in this process (in-process executor) on the instance in DAGSTER_HOME."""
    job = dg.build_reconstructable_job("compression_pipeline.definitions", "job_named",
                                       reconstructable_args=(job_name,))
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, run_config=QUIET, tags=tags,
                                asset_selection=[dg.AssetKey.from_user_string(k) for k in keys])
        return 0 if result.success else 1


# --- the progress lines -------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What the summary needs to know about the steps of a launch."""

    done: int = 0
    failed_gates: list[dict] = field(default_factory=list)  # {"asset", "check", "description"}
    failed_steps: list[dict] = field(default_factory=list)  # {"asset", "error"}
    skipped: list[str] = field(default_factory=list)


class Progress:
    """Reads a run's events from the instance and prints one line per finished step."""

    def __init__(self, instance: dg.DagsterInstance, total: int, out=sys.stdout):
        self.instance, self.total, self.out, self.outcome = instance, total, out, Outcome()
        self.checks: dict[str, list] = {}
        self.status_shown = False
        self.assets: dict[str, str] = {}  # step key -> the name its log lines go under, of the phases so far
        self.members: dict[str, list[str]] = {}  # step key -> its assets (several: the benchmark session)
        self.materialized: dict[str, dict] = {}  # asset -> its materialization's metadata
        self.reported: set[str] = set()
        self.noted: dict[str, float] = {}  # step key -> its start or last printed training line

    def expect(self, steps: dict[str, list[dg.AssetKey]]) -> None:
        """The steps of a phase about to start (step key -> the assets it materializes, in order)."""
        for step, keys in steps.items():
            self.members[step] = [k.to_user_string() for k in keys]
            self.assets[step] = self.members[step][0] if len(keys) == 1 else step.replace("__", "/")

    def not_run(self, assets: list[str], why: str) -> None:
        """A line for each asset of the phase that did not run (Dagster reports no step for it)."""
        for asset in assets:
            if asset not in self.reported:
                self.outcome.skipped.append(asset)
                self._line(asset, "    -   ", why)

    def failed_or_skipped(self) -> set[str]:
        return ({g["asset"] for g in self.outcome.failed_gates} | {s["asset"] for s in self.outcome.failed_steps}
                | {a for s in self.outcome.failed_steps for a in s.get("assets", ())} | set(self.outcome.skipped))

    def follow(self, run_id: str, cursor: str | None) -> str | None:
        conn = self.instance.get_records_for_run(run_id, cursor=cursor)
        for record in conn.records:
            self._event(record.event_log_entry)
        return conn.cursor

    def _event(self, entry) -> None:
        ev = entry.dagster_event
        if ev is None:  # a step's own log line (training epochs...): a transient status on a terminal
            if entry.step_key in self.assets and entry.user_message:
                text = f"  {self.assets[entry.step_key]}: {entry.user_message[:100]}"
                if self.out.isatty():
                    self._status(text)
                elif "epoch" in entry.user_message:
                    # In a log file, a long training says where it is once a minute (epoch, s/epoch, time left);
                    # a step that trains for less than a minute prints nothing extra.
                    last = self.noted.setdefault(entry.step_key, entry.timestamp)
                    if entry.timestamp - last >= 60:
                        self.noted[entry.step_key] = entry.timestamp
                        print(text, file=self.out, flush=True)
            return
        if ev.event_type == dg.DagsterEventType.STEP_START:
            self.noted[ev.step_key] = entry.timestamp
        if ev.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            m = ev.event_specific_data.materialization
            self.materialized[m.asset_key.to_user_string()] = {k: v.value for k, v in (m.metadata or {}).items()}
        if ev.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            data = ev.event_specific_data
            asset = data.asset_key.to_user_string()
            self.checks.setdefault(asset, []).append(data)
            if not data.passed:
                self.outcome.failed_gates.append({"asset": asset, "check": data.check_name,
                                                  "description": data.description or ""})
        elif ev.event_type in _STEP_END and ev.step_key in self.assets:
            self._step_line(ev)

    def _status(self, text: str) -> None:
        self.out.write("\r" + text.ljust(110)[:110])
        self.out.flush()
        self.status_shown = True

    def _step_line(self, ev) -> None:
        if len(self.members[ev.step_key]) > 1:
            return self._session_lines(ev)
        asset = self.assets[ev.step_key]
        checks = self.checks.get(asset, [])
        gates = ", ".join(f"{c.check_name} {'ok' if c.passed else 'FAILED'}" for c in checks) or "-"
        seconds = "    -   "
        if ev.event_type == dg.DagsterEventType.STEP_SKIPPED:
            gates = "skipped: an upstream step or gate failed"
            self.outcome.skipped.append(asset)
        elif ev.event_type == dg.DagsterEventType.STEP_FAILURE:
            err = ev.event_specific_data.error
            # A failed blocking check fails its step after the asset is stored: the gate says it all.
            if not (err and err.cls_name == "DagsterAssetCheckFailedError"):
                gates = "ERROR (see the summary)"
                self.outcome.failed_steps.append({"asset": asset, "error": err.message.strip() if err else "failed"})
        if ev.event_type != dg.DagsterEventType.STEP_SKIPPED and ev.event_specific_data is not None and \
                getattr(ev.event_specific_data, "duration_ms", None) is not None:
            seconds = f"{ev.event_specific_data.duration_ms / 1000:6.1f} s"
        self._line(asset, seconds, gates)

    def _session_lines(self, ev) -> None:
        """The benchmark session: one step, a line per model it measured (the session's time on the first)."""
        members, kind = self.members[ev.step_key], ev.event_type
        seconds = f"{ev.event_specific_data.duration_ms / 1000:6.1f} s" if kind != dg.DagsterEventType.STEP_SKIPPED \
            and getattr(ev.event_specific_data, "duration_ms", None) is not None else "    -   "
        if kind == dg.DagsterEventType.STEP_FAILURE:
            err = ev.event_specific_data.error
            self.outcome.failed_steps.append({"asset": self.assets[ev.step_key], "assets": members,
                                              "error": err.message.strip() if err else "failed"})
        first = True
        for asset in members:
            if asset in self.reported:
                continue
            meta = self.materialized.get(asset)
            if kind == dg.DagsterEventType.STEP_SKIPPED:
                self.outcome.skipped.append(asset)
                self._line(asset, "    -   ", "skipped: an upstream step or gate failed")
            elif kind == dg.DagsterEventType.STEP_FAILURE:
                self._line(asset, seconds if first else "    -   ", "ERROR (see the summary)")
            elif meta is None:
                self.outcome.skipped.append(asset)
                self._line(asset, "    -   ", "not measured: no version of it passed its gates yet")
            else:
                self._line(asset, seconds if first else "  same  ", session_text(meta, first))
            first = False

    def _line(self, asset: str, seconds: str, text: str) -> None:
        self.reported.add(asset)
        self.outcome.done += 1
        width = len(str(self.total))
        if self.status_shown:
            self.out.write("\r" + " " * 110 + "\r")
            self.status_shown = False
        self.out.write(f"[{self.outcome.done:>{width}}/{self.total}] {asset:<44} {seconds}  {text}\n")
        self.out.flush()


def session_text(meta: dict, first: bool) -> str:
    """A benchmark's progress line: the speedups at its first runtime (intervals, rounds); on the session's first
    line also how the session ended."""
    cells = sorted(k[: -len("_speedup")] for k in meta if k.endswith("_speedup"))
    text = ", ".join(f"{c.replace('_', ' ')} {meta[c + '_speedup']:.2f}x [{meta[c + '_speedup_ci_low']:.2f}, "
                     f"{meta[c + '_speedup_ci_high']:.2f}]" for c in cells[:2]) or "reference"
    if first:
        ended = "target reached" if meta.get("session_reached_target") else "budget spent"
        load = f", UNDER LOAD ({meta.get('session_others_cores', 0):.2f} cores busy elsewhere)" \
            if meta.get("session_under_load") else ""
        text = f"session of {meta.get('session_rounds')} rounds ({ended}{load}); " + text
    return text


# --- the launch ---------------------------------------------------------------------------------------------------
def stages(plan: list[Phase]) -> list[list[Phase]]:
    """The order phases run in, side by side within a stage: the data; the frameworks' model phases together
    (independent of each other, none of them timed); then the benchmark session alone, so it never shares the
    machine; the reports last."""
    models = [p for p in plan if p.name not in ("data", "benchmarks", "reports")]
    alone = [[p] for p in plan if p.name == "benchmarks"]
    first = [[p] for p in plan if p.name == "data"]
    last = [[p] for p in plan if p.name == "reports"]
    return first + ([models] if models else []) + alone + last


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _phase_process(job: str, phase: Phase, tags: dict, log, threads: int | None, share: Path | None,
                   lock_fd: int) -> subprocess.Popen:
    from compression_pipeline.benchmark import THREAD_SHARE_ENV

    args = [sys.executable, "-m", "compression_pipeline.orchestration.launch", job,
            json.dumps([k.to_user_string() for k in phase.keys]), json.dumps(tags)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", launches.LAUNCHER_PID_ENV: str(os.getpid())}
    if threads is not None:
        env["COMPRESSION_PIPELINE_THREADS"] = str(threads)
    if share is not None:
        env[THREAD_SHARE_ENV] = str(share)
    # A new session: Ctrl-C reaches this process only, which then stops the phases itself (SIGINT, then waits).
    # The phase inherits the family's lock, so no second launch starts while it still runs (launches.py).
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True,
                            env=env, pass_fds=(lock_fd,))


def _find_run(instance: dg.DagsterInstance, tags: dict):
    runs = instance.get_runs(filters=dg.RunsFilter(tags=tags), limit=1)
    return runs[0] if runs else None


def resume_hint(family: str) -> str:
    return (f"`make resume FAMILY={family}` (python -m compression_pipeline run {family} --stale) completes it: it "
            "builds only what is missing or stale and reuses every model, export and benchmark that is current; "
            "`make run` rebuilds the whole family")


def launch(family: str, out=sys.stdout, benchmarks: bool = True, stale: bool = False, remeasure: bool = False) -> int:
    """Materialize every asset of ``family`` (without ``benchmarks``: the data, models and exports only, each gated;
    with ``stale``: the data, then only what is missing or stale; with ``remeasure``: only the benchmark session and
    the reports, on the last good models); print progress and a summary. Returns the exit status: 0 when every step
    ran and every gate passed. Raises LaunchBusy while another launch of the family runs."""
    from compression_pipeline.definitions import defs
    from compression_pipeline.recipe import load_recipes
    from compression_pipeline.settings import Settings

    # kill (SIGTERM), a closed terminal (SIGHUP), a CI timeout, or Ctrl-C, even where a background start left SIGINT
    # ignored: each stops the running phases and marks their runs, never leaving phase processes behind.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    settings = Settings.from_env()
    recipes = {r.name: r for r in load_recipes(settings.recipes_dir)}
    if family not in recipes:
        print(f"error: no family {family!r} in {settings.recipes_dir}; families: {sorted(recipes)}", file=sys.stderr)
        return 2
    plan = [p for p in phases(defs, recipes[family])
            if (benchmarks or p.name not in ("benchmarks", "reports"))
            and (not remeasure or p.name in ("benchmarks", "reports"))]
    launch_id = uuid.uuid4().hex[:12]
    with dg.DagsterInstance.get() as instance:
        where = launches.folder(instance.root_directory)
        log_path = where / f"run-{family}-{launch_id}.log"
        with launches.family_lock(where, family, launch_id, log_path) as lock_fd, open(log_path, "ab") as log:
            run = _Launch(instance, defs, family, plan, settings, launch_id, log_path, log, lock_fd, out)
            return run.run(stale)


class _Launch:
    """One launch: its phases, in stages, each phase a process of its own that it follows and, whatever ends the
    launch (Ctrl-C, SIGTERM, an error of its own), stops before it returns."""

    def __init__(self, instance, defs, family, plan, settings, launch_id, log_path, log, lock_fd, out):
        self.instance, self.family, self.plan, self.settings = instance, family, plan, settings
        self.graph, self.defs = defs.resolve_asset_graph(), defs
        self.launch_id, self.log_path, self.log, self.lock_fd, self.out = launch_id, log_path, log, lock_fd, out
        self.share = launches.folder(instance.root_directory) / f"threads-{launch_id}"
        self.live: list[subprocess.Popen] = []
        self.runs: list[str] = []
        self.progress = Progress(instance, sum(len(p.keys) for p in plan), out)

    def run(self, stale: bool) -> int:
        start, todo, out = time.perf_counter(), stages(self.plan), self.out
        where = f"; Dagster's log: {self.log_path}"
        try:
            if stale:
                rest = sum(len(p.keys) for p in self.plan if p.name != "data")
                print(f"Completing {self.family}: the data first, then what is missing or stale of its other {rest} "
                      f"steps{where}", file=out)
                first = [s for s in todo if s[0].name == "data"]
                for stage in first:
                    if (code := self._stage(stage)) is not None:
                        return code
                todo = self._narrow([s for s in todo if s not in first])
            else:
                print(f"Materializing {self.family}: {self.progress.total} steps in {len(self.plan)} phases "
                      f"({', '.join(f'{p.name} {len(p.keys)}' for p in self.plan)}){where}", file=out)
            for stage in todo:
                if (code := self._stage(stage)) is not None:
                    return code
        except KeyboardInterrupt:
            self._stop()
            print(f"\nInterrupted: the running phases were stopped; their runs are marked failed or canceled in the "
                  f"instance. {resume_hint(self.family)}; `make resume RUN=<run id>` re-executes one run from where "
                  "it stopped.", file=out)
            return 130
        except BaseException as e:
            stopped = self._stop()
            print(f"\nThe launcher failed ({type(e).__name__}: {e}); it stopped the {stopped} phase process(es) "
                  f"still running (their runs are marked failed). {resume_hint(self.family)}.", file=out)
            raise
        finally:
            self.share.unlink(missing_ok=True)
        return summary(self.family, self.progress.outcome, self.runs, time.perf_counter() - start, self.log_path, out)

    def _narrow(self, todo: list[list[Phase]]) -> list[list[Phase]]:
        """The stages after the data, keeping only what is missing or stale (and what stands on it)."""
        from compression_pipeline.orchestration.lineage import outdated

        keys = [k for stage in todo for p in stage for k in p.keys]
        order = {k: i for i, k in enumerate(self.graph.toposorted_asset_keys)}
        why = outdated(self.instance, self.graph, sorted(keys, key=order.__getitem__))
        kept = [[Phase(p.name, [k for k in p.keys if k.to_user_string() in why]) for p in stage] for stage in todo]
        kept = [[p for p in stage if p.keys] for stage in kept]
        self.progress.total = self.progress.outcome.done + len(why)
        print(f"{self.family}: {len(why)} of {len(keys)} steps to build, {len(keys) - len(why)} current and reused",
              file=self.out)
        groups: dict[str, list[str]] = {}
        for asset, reason in why.items():
            groups.setdefault(_reason_kind(reason), []).append(asset.split("/", 1)[1])
        for reason, assets in groups.items():
            print(f"  {reason}: {', '.join(assets)}", file=self.out)
        return [stage for stage in kept if stage]

    def _stage(self, stage: list[Phase]) -> int | None:
        """Run the phases of one stage side by side until all have ended; an exit code to stop with, or None."""
        progress, family, settings = self.progress, self.family, self.settings
        # What stands on a failed step or gate is not built on the last good version behind its back: as within
        # one run, it is skipped. The report is the exception (as the report_after_failure sensor does for the UI's
        # runs): rebuilt from the last good models, it lists the rejected ones.
        blocked = _downstream(self.graph, progress.failed_or_skipped()) - {f"{family}/report"}
        # Side by side, the phases share the cores (unless the user fixed the thread count); when one ends, PyTorch
        # training in the others takes the freed cores from its next epoch (the share file).
        threads = None if settings.threads or len(stage) == 1 else max(1, _cores() // len(stage))
        share = self.share if threads else None
        if share:
            _write_share(share, threads)
        started = []
        for phase in stage:
            keys = [k for k in phase.keys if k.to_user_string() not in blocked]
            progress.expect(self._steps(phase.keys))
            progress.not_run([k.to_user_string() for k in phase.keys if k.to_user_string() in blocked],
                             "skipped: an upstream step or gate failed")
            if keys:
                tags = {LAUNCH_TAG: self.launch_id, PHASE_TAG: phase.name}
                proc = _phase_process(f"{family}_recompress", Phase(phase.name, keys), tags, self.log, threads,
                                      share, self.lock_fd)
                self.live.append(proc)
                started.append((phase.name, keys, proc, tags))
        results = _follow(self.instance, [(proc, tags) for _, _, proc, tags in started], progress, share)
        for (name, keys, proc, _), (code, run_id) in zip(started, results):
            self.live.remove(proc)
            names = [k.to_user_string() for k in keys]
            failures_before = len(progress.failed_or_skipped() & set(names))
            progress.not_run(names, "not run: an upstream step or gate failed")
            if code != 0 and run_id and not failures_before:
                # The process ended badly with no step or gate to blame (killed, out of memory, a crash): a failure
                # all the same, never a quiet success.
                progress.outcome.failed_steps.append(
                    {"asset": f"the {name} phase", "error": f"its process exited with code {code} before its steps "
                                                            "finished (killed? out of memory?)"})
            if run_id:
                self.runs.append(run_id)
            if code != 0 and not run_id:
                print(f"\nThe {name} phase could not start: see {self.log_path}", file=self.out)
                _tail(self.log_path, self.out)
                return 1
        return None

    def _steps(self, keys: list[dg.AssetKey]) -> dict[str, list[dg.AssetKey]]:
        """The steps that materialize ``keys`` (step key: the op's name), each with its assets in order."""
        steps: dict[str, list[dg.AssetKey]] = {}
        for k in keys:
            steps.setdefault(self.defs.resolve_assets_def(k).op.name, []).append(k)
        return steps

    def _stop(self) -> int:
        """Interrupt every phase process still running (each marks its run), wait for them, kill the stragglers."""
        running = [p for p in self.live if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGINT)
        for proc in running:
            try:
                proc.wait(timeout=launches.STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.live.clear()
        return len(running)


def _reason_kind(reason: str) -> str:
    """The kind of a reason ``lineage.outdated`` gives, to list the assets to build by kind."""
    for words, kind in (("never", "missing"), ("recipe edited", "recipe entry edited"), ("is now", "a parent changed"),
                        ("gate", "a gate failed"), ("is rebuilt", "on a rebuilt asset")):
        if words in reason:
            return kind
    return reason


def _follow(instance, procs: list[tuple[subprocess.Popen, dict]], progress: Progress,
            share: Path | None = None) -> list[tuple[int, str | None]]:
    """Print the phases' steps as they finish, until every phase process has ended; returns per phase (exit code,
    its run id). When a phase ends, ``share`` (if any) is rewritten with the cores shared out among those still
    running. An interrupt (or any error) propagates: the caller stops the phases."""
    runs, cursors, codes = [None] * len(procs), [None] * len(procs), [None] * len(procs)
    while True:
        for i, (proc, tags) in enumerate(procs):
            if codes[i] is not None:
                continue
            finished = proc.poll() is not None
            if runs[i] is None:
                runs[i] = _find_run(instance, tags)
            if runs[i] is not None:  # after the end too: the last events, written just before it ended
                cursors[i] = progress.follow(runs[i].run_id, cursors[i])
            if finished:
                codes[i] = proc.returncode
                running = sum(c is None for c in codes)
                if share and running:
                    _write_share(share, max(1, _cores() // running))
        if all(c is not None for c in codes):
            return [(c, r.run_id if r else None) for c, r in zip(codes, runs)]
        time.sleep(0.5)


def _write_share(share: Path, threads: int) -> None:
    """Replace the share file's count in one step (a reader sees the old count or the new, never a torn file)."""
    tmp = share.with_name(share.name + ".tmp")
    tmp.write_text(str(threads))
    tmp.replace(share)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _downstream(graph, assets: set[str]) -> set[str]:
    """Every asset below ``assets`` in the graph."""
    keys = [dg.AssetKey.from_user_string(a) for a in assets]
    out, todo = set(), [k for k in keys if graph.has(k)]  # (a failed phase is named, not an asset)
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            name = child.to_user_string()
            if name not in out:
                out.add(name)
                todo.append(child)
    return out


def _tail(path: Path, out, lines: int = 30) -> None:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    print("\n".join(text), file=out)


ADVICE = {
    "accuracy_gate": "raise the tolerance of that variant (`max_accuracy_drop` in its recipe entry), give it more "
                     "fine-tuning (`finetune_epochs`) or a milder setting; for a baseline, more `epochs` or a lower "
                     "`gates.accuracy_floor`",
    "parity": "the export computes something else than its source model: check the exported graph, or raise "
              "`gates.parity_atol` if the difference is numerical noise",
    "constraints_met": "no model meets the recipe's `select` rule: relax `select` (see the reasons per model)",
}
DATA_ADVICE = "fix the dataset (the check's metadata in the UI names the rows), or the dataset's declared fields"


def summary(family: str, outcome: Outcome, runs: list[str], seconds: float, log_path: Path, out=sys.stdout) -> int:
    """The end of a launch: what failed and what to do, then the report table of the last good models."""
    from compression_pipeline.settings import Settings

    ok = not outcome.failed_gates and not outcome.failed_steps
    print(f"\n{family}: {outcome.done} steps in {seconds / 60:.1f} min, "
          f"{len(outcome.failed_gates)} failed gate(s), {len(outcome.failed_steps)} failed step(s), "
          f"{len(outcome.skipped)} skipped; runs {', '.join(r[:8] for r in runs)}", file=out)
    for g in outcome.failed_gates:
        advice = ADVICE.get(g["check"], DATA_ADVICE)
        print(f"\n  FAILED {g['asset']}: {g['check']}\n    {g['description']}\n    what to do: {advice}. The last "
              "good version of it (if any) stays in use; nothing downstream was built on this one.", file=out)
    for s in outcome.failed_steps:
        first = s["error"].splitlines()[0] if s["error"] else "failed"
        print(f"\n  ERROR {s['asset']}: {first}\n    the full traceback is in the UI (Runs) and in {log_path}",
              file=out)
    report = Settings.from_env().artifact_root / family / "report"
    md = report / "report.md"
    if md.is_file():
        table = md.read_text().split("\n\n")
        main = next((block for block in table if block.startswith("| model")), "")
        print(f"\nThe report ({'the last good models' if not ok else 'this run'}):\n\n{main}\n", file=out)
        print("Report files:\n" + "\n".join(f"  {report / n}" for n in ("report.md", "report.json", "report.html")
                                            if (report / n).is_file()), file=out)
    if not ok:
        print(f"\nOnce fixed: {resume_hint(family)}.", file=out)
    print("\nThe Dagster UI (`make ui`) shows every run, check and materialization of this launch.", file=out)
    return 0 if ok else 1


if __name__ == "__main__":  # a phase: python -m compression_pipeline.orchestration.launch <job> <keys> <tags>
    launches.watch_launcher()
    sys.exit(run_phase(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])))
