"""One measurement session: every cell of every model timed in interleaved rounds, so that a ratio of two cells
compares latencies measured under the same conditions (ANCHORS.md: benchmark protocol).

Why. On a shared machine a burst of load during one cell moves it several-fold and no statistic of that cell
alone shows it; a speedup divided by a baseline cell timed minutes earlier moved 10.57x -> 2.85x between two runs of
the same family. Here every cell (model x runtime x precision x batch size) is opened and warmed up once, then timed
in rounds: each round gives every cell a short slice (``slice_s`` seconds and at least ``slice_runs`` calls, after
one untimed call), in an order drawn anew each round (seeded), so a burst hits the cells of a round alike. A ratio
is the median of its per-round ratios (each round's median latency of one cell over the other's), with the
sign-test interval of that median (``stats.round_ratio``: distribution-free; a few disturbed rounds do not move it).

When to stop. Every cell gets at least ``min_rounds`` rounds (the fewest with an interval at the confidence: 6 at
95 %), ``min_runs`` calls and ``min_time_s`` seconds of calls; then rounds go on until every tracked ratio (the
caller's: each model against its baseline) has an interval within ``target`` of its value (relative half-width), or
until ``budget_s`` seconds of rounds have passed; which of the two ended it is recorded (``reached``).

Load. Interleaving evens out bursts, not sustained load: a training job on the same cores inflated an int8 model's
ratio from 2.5x to 11.7x (its short calls fit between the other job's time slices, fp32's long ones do not). So each
slice records how many cores other processes used meanwhile (/proc/stat's busy time of all CPUs minus this
process's CPU time, over the wall time): a cell's ``others_cores`` is its slices' mean, and a session whose median
round had more than ``cpu_count - threads + 0.25`` cores busy elsewhere (on 2 cores with 2 threads: a quarter of a
core) is marked ``under_load``: its ratios are reported, and flagged, but not what a candidate is chosen on.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compression_pipeline import stats
from compression_pipeline.benchmark import HostPeak, Protocol, summarize
from compression_pipeline.runtimes.base import Session


@dataclass(frozen=True)
class Rounds:
    slice_s: float = 0.1
    slice_runs: int = 3
    min_rounds: int = 6
    budget_s: float = 120.0
    target: float = 0.05
    confidence: float = 0.95
    pause_s: float = 0.002  # between slices: the previous runtime's spinning threads park before the next is timed
    seed: int = 0


@dataclass
class Cell:
    """One cell of the session: a model's session at one batch size."""

    model: str  # the caller's name for the model (e.g. "torch_int8")
    session: Session
    batch_size: int
    call: Callable[[], object] = None
    fields: dict = field(default_factory=dict)
    after: Callable[[], dict] = dict
    enter: Callable[[], object] = lambda: None
    warm: dict = field(default_factory=dict)  # first call, warm-up, memory
    samples: list[float] = field(default_factory=list)
    round_p50: list[float] = field(default_factory=list)
    round_mean: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # cores used by other processes during each slice
    measured_s: float = 0.0

    @property
    def key(self) -> str:
        return cell_key(self.model, self.session.runtime, self.session.precision, self.batch_size)


def cell_key(model: str, runtime: str, precision: str, batch_size: int) -> str:
    return f"{model}|{runtime}|{precision}|{batch_size}"


@dataclass
class Result:
    cells: list[Cell]
    ratios: dict[tuple[str, str], stats.RoundRatio | None]  # (cell, reference) -> reference / cell per round
    session: dict  # id, rounds, seconds, reached, load...


class _CpuClock:
    """Cores used by other processes between two readings (None where /proc/stat cannot be read)."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> tuple[float, float, float | None]:
        t = os.times()
        busy = None
        try:
            with open("/proc/stat") as f:
                parts = f.readline().split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
            busy = (user + nice + system + irq + softirq + steal) / self.hz
        except (OSError, ValueError):
            pass
        return time.perf_counter(), t.user + t.system, busy

    @staticmethod
    def others(start, end) -> float | None:
        (w0, own0, busy0), (w1, own1, busy1) = start, end
        if busy0 is None or busy1 is None or w1 <= w0:
            return None
        return max((busy1 - busy0) - (own1 - own0), 0.0) / (w1 - w0)


def _open_cells(models: dict[str, list[Session]], batch_sizes, protocol: Protocol, fp16: bool) -> tuple[list, list]:
    """Every (model, session, batch size) cell, warmed up (count per cell, time per session, as ``benchmark.timed``)
    with its first call and memory recorded; the skipped fp16 twins with their reasons."""
    cells, skipped = [], []
    for model, sessions in models.items():
        sessions = list(sessions)
        i = 0
        while i < len(sessions):  # an fp16 twin is appended to the list and opened in its turn
            s, i = sessions[i], i + 1
            half = s.half() if fp16 and s.precision == "fp32" else None
            if isinstance(half, str):
                skipped.append({"model": model, "runtime": s.runtime, "precision": "fp16", "reason": half})
            elif half is not None:
                x = s.inputs(max(batch_sizes))
                half.fields = {**half.fields,
                               "max_abs_diff_vs_fp32": float(np.abs(half.outputs(x) - s.outputs(x)).max())}
                sessions.append(half)
            warm_s = 0.0
            for bs in batch_sizes:
                host = s.feed(s.inputs(bs))
                with HostPeak() as mem:
                    c = s.cell(host)
                    t0 = time.perf_counter()
                    c.call()
                    first = (time.perf_counter() - t0) * 1e3
                    n = 1
                    while n < protocol.warmup_runs or warm_s + time.perf_counter() - t0 < protocol.warmup_s:
                        c.call()
                        n += 1
                spent = time.perf_counter() - t0
                cells.append(Cell(model, s, bs, c.call, dict(c.fields), c.after, c.enter,
                                  {"first_call_ms": first, "warmup_runs": n, "warmup_s": spent,
                                   "session_warm_s": warm_s, **mem.fields}))
                warm_s += spent
    return cells, skipped


def _slice(c: Cell, rounds: Rounds, clock: _CpuClock) -> None:
    start = clock.read()
    c.enter()
    c.call()  # untimed: the caches and thread pool of this session, after another session's slice
    times = []
    t_end = time.perf_counter() + rounds.slice_s
    while len(times) < rounds.slice_runs or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        c.call()
        times.append((time.perf_counter() - t0) * 1e3)
    end = clock.read()
    c.samples += times
    c.measured_s += sum(times) / 1e3
    c.round_p50.append(float(np.median(times)))
    c.round_mean.append(float(np.mean(times)))
    others = clock.others(start, end)
    if others is not None:
        c.others.append(others)


def measure(models: dict[str, list[Session]], batch_sizes, protocol: Protocol, rounds: Rounds,
            pairs: list[tuple[str, str]], threads: int, fp16: bool = True,
            log: Callable[[str], None] | None = None) -> Result:
    """Time every cell of ``models`` (name -> its open sessions, one per runtime) at every batch size, interleaved,
    until every ratio in ``pairs`` ((cell key, reference cell key)) is within ``rounds.target`` or the budget ends."""
    cells, skipped = _open_cells(models, batch_sizes, protocol, fp16)
    by_key = {c.key: c for c in cells}
    pairs = [(a, b) for a, b in pairs if a in by_key and b in by_key and a != b]
    rng, clock = np.random.default_rng(rounds.seed), _CpuClock()
    start, n, reached = time.perf_counter(), 0, False
    round_others, orders = [], []
    while True:
        before = clock.read()
        orders.append(rng.permutation(len(cells)).tolist())
        for i in orders[-1]:
            time.sleep(rounds.pause_s)
            _slice(cells[i], rounds, clock)
        round_others.append(clock.others(before, clock.read()))
        n += 1
        if n < rounds.min_rounds:
            continue
        ratios = {p: stats.round_ratio(by_key[p[1]].round_p50, by_key[p[0]].round_p50, rounds.confidence)
                  for p in pairs}
        enough = all(len(c.samples) >= protocol.min_runs and c.measured_s >= protocol.min_time_s for c in cells)
        if enough and all(r is not None and r.half_width <= rounds.target for r in ratios.values()):
            reached = True
            break
        if enough and time.perf_counter() - start >= rounds.budget_s:  # the budget never cuts the minimums
            break
        if log and n % 5 == 0:
            wide = sum(r is None or r.half_width > rounds.target for r in ratios.values())
            log(f"benchmark session: round {n}, {wide} of {len(ratios)} ratios still wider than "
                f"+-{100 * rounds.target:.0f}% ({time.perf_counter() - start:.0f} s of {rounds.budget_s:.0f})")
    seconds = time.perf_counter() - start
    load = [x for x in round_others if x is not None]
    cpus = os.cpu_count() or 1
    threshold = max(cpus - threads, 0) + 0.25
    median_load = float(np.median(load)) if load else None
    session = {"id": uuid.uuid4().hex[:12], "rounds": n, "seconds": seconds, "reached": reached,
               "target_half_width": rounds.target, "budget_s": rounds.budget_s, "confidence": rounds.confidence,
               "slice_s": rounds.slice_s, "min_rounds": rounds.min_rounds, "order_seed": rounds.seed,
               "cells": len(cells), "cpu_count": cpus, "threads": threads,
               "others_cores_median": median_load, "others_cores_max": max(load) if load else None,
               "under_load_threshold_cores": threshold,
               "under_load": median_load is not None and median_load > threshold,
               "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
               "round_others_cores": [None if x is None else round(x, 3) for x in round_others],
               "cell_keys": [c.key for c in cells], "orders": orders, "skipped": skipped}
    return Result(cells, ratios, session)


def row(c: Cell, session_id: str) -> dict:
    """A cell as a benchmark row: the fields every runtime gives, the summary of its samples, its rounds."""
    s, samples = c.session, np.asarray(c.samples)
    out = {"runtime": s.runtime, "provider": s.provider, "device": s.device, "precision": s.precision,
           "batch_size": c.batch_size, "threads": s.threads, "load_s": s.load_s, **s.fields, **c.fields, **c.after(),
           **summarize(samples, c.batch_size), **c.warm, "measured_s": c.measured_s, "samples_ms": samples.tolist(),
           "session": session_id, "rounds": len(c.round_p50), "round_p50_ms": c.round_p50,
           "round_mean_ms": c.round_mean,
           "others_cores": float(np.mean(c.others)) if c.others else None}
    return out
