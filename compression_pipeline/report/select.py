"""Deployment-candidate selection: one model out of a family report, and a reason for every model not chosen.

The rule is the recipe's ``select`` block: a model is eligible when its gates passed (``require_gates``), it
was measured on the selection's cell (runtime, precision, batch size) when the objective is a speed, its file
fits ``max_file_bytes`` and its accuracy reaches ``min_accuracy``. The eligible model with the best objective
wins; ties go to the more accurate, then the smaller file, then the name (so the choice is deterministic).

A speed is a measurement with an interval: the fastest model beats another only when it is faster beyond the
interval of their ratio (``latency_p50`` and ``throughput``: the median per-round ratio of the two cells, timed in
the same interleaved rounds). Every model within the interval of the fastest ties with it on speed, and accuracy,
then size, decide among them. A session measured under sustained load decides nothing on speed: all eligible
models tie, and the decision says so. Where two cells share no rounds (or the objective is a tail latency, which
has no per-round interval), the point values are compared, and the decision says that too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from compression_pipeline.recipe import Select
from compression_pipeline.report.cells import cell, model_key, ratio_text, round_ratio

# objective -> (what it reads, "min" or "max" is best, unit)
OBJECTIVES = {"latency_p50": ("p50_ms", "min", "ms"), "latency_p90": ("p90_ms", "min", "ms"),
              "latency_p99": ("p99_ms", "min", "ms"), "throughput": ("throughput", "max", "samples/s"),
              "file_bytes": ("file_bytes", "min", "bytes"), "accuracy": ("accuracy", "max", "")}


@dataclass
class Decision:
    chosen: str | None  # "<framework>_<name>", or None when no model meets the constraints
    rule: str  # the selection rule in words
    value: float | None = None  # the chosen model's objective value
    ranking: list[dict] = field(default_factory=list)  # eligible models, best first: {"model", "value"}
    reasons: dict[str, str] = field(default_factory=dict)  # every model not chosen -> why
    speed: str = ""  # how speed was compared: with intervals, by point values, or not at all (under load)
    tied: list[str] = field(default_factory=list)  # models tied with the fastest on speed (accuracy decided)

    def to_dict(self) -> dict:
        return asdict(self)


def cell_row(m: dict, sel: Select) -> dict | None:
    for r in m.get("benchmarks", []):
        if cell(r) == (sel.runtime, sel.precision, sel.batch_size):
            return r
    return None


def describe(sel: Select) -> str:
    _what, best, _ = OBJECTIVES[sel.objective]
    parts = [f"{'lowest' if best == 'min' else 'highest'} {sel.objective}"]
    if sel.objective not in ("file_bytes", "accuracy"):
        parts.append(f"on {sel.runtime} {sel.precision} at batch {sel.batch_size}")
    limits = []
    if sel.require_gates:
        limits.append("all gates passed")
    if sel.max_file_bytes is not None:
        limits.append(f"file <= {sel.max_file_bytes:,} bytes")
    if sel.min_accuracy is not None:
        limits.append(f"accuracy >= {sel.min_accuracy}")
    return " ".join(parts) + (", subject to " + ", ".join(limits) if limits else "")


def _fmt(v: float, unit: str) -> str:
    if unit == "bytes":
        return f"{v:,.0f} bytes"
    if unit == "":
        return f"{v:.4f}"
    return f"{v:.4g} {unit}"


def select(report: dict, sel: Select | dict) -> Decision:
    """Pick the deployment candidate among ``report["models"]`` (the report.json contract)."""
    sel = sel if isinstance(sel, Select) else Select.model_validate(sel)
    what, best, unit = OBJECTIVES[sel.objective]
    speed = sel.objective not in ("file_bytes", "accuracy")
    decision = Decision(chosen=None, rule=describe(sel))
    candidates = []
    for m in report["models"]:
        key, why = model_key(m), []
        if sel.require_gates and not m.get("gates_passed", False):
            failed = [g.get("description", g.get("name", "?")) for g in m.get("gates", []) if not g.get("passed")]
            why.append("gates failed" + (f": {'; '.join(failed)}" if failed else ""))
        row = cell_row(m, sel)
        if speed and row is None:
            skip = [s["reason"] for s in m.get("benchmarks_skipped", [])
                    if (s["runtime"], s["precision"]) == (sel.runtime, sel.precision)]
            why.append(f"not benchmarked on {sel.runtime} {sel.precision} at batch {sel.batch_size}"
                       + (f" ({skip[0]})" if skip else ""))
        if sel.max_file_bytes is not None and m["file_bytes"] > sel.max_file_bytes:
            why.append(f"file {m['file_bytes']:,} bytes > max_file_bytes {sel.max_file_bytes:,}")
        if sel.min_accuracy is not None and m["accuracy"] < sel.min_accuracy:
            why.append(f"accuracy {m['accuracy']:.4f} < min_accuracy {sel.min_accuracy}")
        if why:
            decision.reasons[key] = "; ".join(why)
            continue
        value = float(row[what] if speed else m[what])
        candidates.append((value if best == "min" else -value, -m["accuracy"], m["file_bytes"], key, value))
    candidates.sort()
    decision.ranking = [{"model": c[3], "value": c[4]} for c in candidates]
    if not candidates:
        return decision
    rows = {m_key: cell_row(m, sel) for m in report["models"] if (m_key := model_key(m)) in
            {c[3] for c in candidates}}
    fastest = candidates[0]
    tied, compared = _tied_on_speed(report, sel, fastest[3], candidates, rows) if speed else ({fastest[3]}, {})
    decision.speed = compared.pop("__how__", "") if speed else ""
    tied |= {c[3] for c in candidates if c[4] == fastest[4]}  # equal values tie whatever the objective
    # Among the models tied with the best on the objective: the most accurate, then the smallest, then the name.
    pick = min((c for c in candidates if c[3] in tied), key=lambda c: (c[1], c[2], c[3]))
    decision.chosen, decision.value = pick[3], pick[4]
    decision.tied = sorted(tied - {pick[3]})
    for _, _, _, key, value in candidates:
        if key == decision.chosen:
            continue
        if key in tied:
            decision.reasons[key] = (
                f"meets every constraint and is as fast within the interval ({compared[key]}); {decision.chosen} is "
                "preferred on accuracy, then file size, then name" if key in compared else
                f"ties on {sel.objective}; the tie-break (accuracy, then file size, then name) preferred "
                f"{decision.chosen}")
            continue
        detail = compared.get(key)
        if detail is None:
            ratio = value / decision.value if best == "min" else decision.value / value
            detail = f"{ratio:.2f}x {'higher' if best == 'min' else 'lower'}"
        decision.reasons[key] = (f"meets every constraint, but its {sel.objective} is {_fmt(value, unit)} vs "
                                 f"{_fmt(decision.value, unit)} for {decision.chosen} ({detail})")
    return decision


def _tied_on_speed(report: dict, sel: Select, fastest: str, candidates, rows) -> tuple[set[str], dict[str, str]]:
    """The models whose speed cannot be told from the fastest one's, and per model the comparison in words (plus
    ``__how__``: how speed was compared)."""
    sessions = report.get("benchmark_sessions") or {}
    sid = (rows[fastest] or {}).get("session")
    if sid and sessions.get(sid, {}).get("under_load"):
        s = sessions[sid]
        return {c[3] for c in candidates}, {"__how__": (
            f"not compared: the benchmark session ran under sustained load (other processes used "
            f"{s.get('others_cores_median', 0):.2f} of {s.get('cpu_count')} cores), so speed decides nothing; "
            "accuracy, then file size, decide among all eligible models. Re-measure on a quiet machine.")}
    if sel.objective not in ("latency_p50", "throughput"):
        return {fastest}, {"__how__": f"by point values ({sel.objective} has no per-round interval)"}
    tied, words, points = {fastest}, {}, 0
    for _, _, _, key, _ in candidates[1:]:
        r = round_ratio(rows[key], rows[fastest])  # the other's latency over the fastest's, per round
        if r is None:
            points += 1
            continue
        words[key] = f"{ratio_text(r.value, [r.ci_low, r.ci_high])} the latency of {fastest}"
        if not (r.resolved and r.ci_low > 1.0):
            tied.add(key)
    how = "with intervals: a model is faster only beyond the interval of the ratio of their per-round p50s"
    if points:
        how += f" ({points} model(s) timed in another session: compared by point values)"
    return tied, {**words, "__how__": how}
