"""Data-quality gates: Great Expectations 1.x suites, built in code, run on the preprocessed splits.

Each expectation belongs to one gate (schema, value_range, no_missing, labels, class_balance, row_counts,
no_leakage). ``validate_splits`` runs the suites once and returns, per gate, whether it passed and every
expectation's outcome, so the orchestration can show them as asset checks.

The suites scale to 60,000 28x28 or 50,000 32x32x3 images: numpy reduces every sample to a few statistics per
channel (its minimum, maximum and number of NaN values; for feature vectors, per sample over its features), and GX
validates a table of those, one row per (sample, channel), on at most ``gate_rows`` samples per split (a seeded
sample beyond that; the outcome says "on N of M rows"). Labels and row counts are checked on every row, and leakage
(a test sample whose stored bytes equal a training sample's) on every row of both splits.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np

GATES = ("schema", "value_range", "no_missing", "labels", "class_balance", "row_counts", "no_leakage")
VALUE_GATES = ("schema", "value_range", "no_missing")  # judged on the (sampled) per-channel statistics
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _index_columns(table: str) -> list[str]:
    """Tables whose failures are named by row (and channel) rather than by value."""
    if table.endswith("_values"):
        return ["row", "channel"]
    return ["row"]


@dataclass
class GateOutcome:
    name: str
    passed: bool = True
    expectations: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the gate saw: "values on 20000 of 60000 train rows", ...

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.expectations if not e["success"]]


def sample_rows(n: int, gate_rows: int, seed: int) -> np.ndarray:
    """The rows the value gates check: all of them, or a seeded sample of ``gate_rows`` (sorted)."""
    if n <= gate_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, gate_rows, replace=False))


def channel_stats(X: np.ndarray, rows: np.ndarray):
    """Per sample of ``rows`` and channel: (min, max, NaN count), each (len(rows), C). Min and max skip NaN (the
    no_missing gate counts those), so an infinite value shows as out of range. Feature vectors are one channel."""
    Xs = X[rows]
    Xs = Xs.reshape(len(Xs), Xs.shape[1], -1) if Xs.ndim == 4 else Xs.reshape(len(Xs), 1, -1)
    return np.fmin.reduce(Xs, axis=2), np.fmax.reduce(Xs, axis=2), np.isnan(Xs).sum(axis=2)


def _frames(splits: dict[str, np.ndarray], gate_rows: int, seed: int):
    """Per split a label table (one row per sample) and a value table (one row per sampled sample and channel),
    and the leakage table (one row per test sample)."""
    import pandas as pd

    frames, checked = {}, {}
    for s in ("train", "val", "test"):
        X, y = splits[f"X_{s}"], splits[f"y_{s}"]
        frames[s] = pd.DataFrame({"row": np.arange(len(y)), "label": y})
        rows = sample_rows(len(X), gate_rows, seed)
        lo, hi, nan = channel_stats(X, rows)
        c = lo.shape[1]
        frames[f"{s}_values"] = pd.DataFrame({"row": np.repeat(rows, c), "channel": np.tile(np.arange(c), len(rows)),
                                              "min": lo.reshape(-1), "max": hi.reshape(-1), "nan": nan.reshape(-1)})
        checked[s] = (len(rows), len(X))
    # A test sample leaks when its stored bytes are also a training sample's (duplicates inside one split are fine).
    train = set(_row_hashes(splits["X_train"]))
    frames["train_vs_test"] = pd.DataFrame({"row": np.arange(len(splits["X_test"])),
                                            "in_train": [h in train for h in _row_hashes(splits["X_test"])]})
    return frames, checked


def _row_hashes(X: np.ndarray) -> list[bytes]:
    X = np.ascontiguousarray(X).reshape(len(X), -1)
    return [hashlib.sha256(row.data).digest() for row in X]


def _suites(classes: int, min_train_rows: int, max_kl: float, value_range: tuple[float, float]):
    """{table: [(gate, expectation), ...]} for every table ``_frames`` builds."""
    import great_expectations.expectations as gxe

    labels = list(range(classes))
    uniform = {"values": labels, "weights": [1.0 / classes] * classes}
    lo, hi = value_range
    suites = {}
    for split in ("train", "val", "test"):
        suites[split] = [
            ("schema", gxe.ExpectColumnValuesToBeInTypeList(column="label", type_list=["int64", "int32"])),
            ("labels", gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
            ("labels", gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2)),
            ("class_balance", gxe.ExpectColumnKLDivergenceToBeLessThan(
                column="label", partition_object=uniform, threshold=max_kl)),
            ("row_counts", gxe.ExpectTableRowCountToBeBetween(min_value=min_train_rows if split == "train" else 1)),
        ]
        suites[f"{split}_values"] = [
            ("schema", gxe.ExpectColumnValuesToBeOfType(column="min", type_="float32")),
            ("no_missing", gxe.ExpectColumnValuesToBeBetween(column="nan", min_value=0, max_value=0)),
            ("value_range", gxe.ExpectColumnValuesToBeBetween(column="min", min_value=lo, max_value=hi)),
            ("value_range", gxe.ExpectColumnValuesToBeBetween(column="max", min_value=lo, max_value=hi)),
        ]
    suites["train_vs_test"] = [("no_leakage", gxe.ExpectColumnValuesToBeInSet(column="in_train", value_set=[False]))]
    return suites


def validate_splits(splits: dict[str, np.ndarray], spec, min_train_rows: int, max_class_kl: float,
                    gate_rows: int = 20_000, seed: int = 0,
                    value_range: tuple[float, float] | None = None) -> dict[str, GateOutcome]:
    """Run the suites on train/val/test and the train-vs-test leakage suite; return one outcome per gate.

    ``spec`` is the splits' ``InputSpec``: its class count is the label set, its kind the value range (images in
    [0, 1]; feature vectors in ``value_range`` when declared, else only finite).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("splits")
    frames, checked = _frames(splits, gate_rows, seed)
    if spec.kind == "image":
        bounds, range_note = (0.0, 1.0), "images in [0, 1]"
    elif value_range is not None:
        bounds, range_note = tuple(value_range), f"features in the declared value_range {list(value_range)}"
    else:
        bounds, range_note = (-FLOAT32_MAX, FLOAT32_MAX), "no value_range declared: checks only that values are finite"
    outcomes = {g: GateOutcome(g) for g in GATES}
    on = ", ".join(f"{s} {k} of {n}" for s, (k, n) in checked.items())
    for g in VALUE_GATES:
        outcomes[g].notes.append(f"values on {on} rows" + (f" (a seeded sample of at most {gate_rows})"
                                                           if any(k < n for k, n in checked.values()) else ""))
    outcomes["value_range"].notes.append(range_note)
    for table, exps in _suites(spec.num_classes, min_train_rows, max_class_kl, bounds).items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"{table}_suite"))
        gate_of = {}
        for gate, exp in exps:
            gate_of[suite.add_expectation(exp).id] = gate
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"{table}_validation", data=batch,
                                                                        suite=suite))
        result = vd.run(batch_parameters={"dataframe": frames[table]},
                        result_format={"result_format": "SUMMARY",
                                       "unexpected_index_column_names": _index_columns(table)})
        for r in result.results:
            gate = gate_of[r.expectation_config.id]
            outcome = _summarize(table, r)
            if table.endswith("_values"):
                outcome["rows_checked"], outcome["rows"] = checked[table.removesuffix("_values")]
            outcomes[gate].expectations.append(outcome)
            outcomes[gate].passed &= outcome["success"]
    return outcomes


def _summarize(table: str, r) -> dict:
    cfg = r.expectation_config
    res = r.result or {}
    exc = (r.exception_info or {})
    raised = exc.get("raised_exception") if isinstance(exc, dict) else False
    out = {
        "table": table,
        "expectation": cfg.type,
        "column": cfg.kwargs.get("column"),
        # An expectation that raised did not check anything: it counts as a failure, with the reason.
        "success": bool(r.success) and not raised,
    }
    for key in ("observed_value", "unexpected_count", "unexpected_percent", "element_count"):
        if key in res and res[key] is not None:
            v = res[key]
            out[key] = (float(v) if isinstance(v, (np.floating, float)) else
                        int(v) if isinstance(v, (int, np.integer)) else str(v)[:200])
    where = res.get("partial_unexpected_index_list") or []
    if where:
        out["examples"] = [({k: str(v) for k, v in w.items()} if isinstance(w, dict) else str(w)[:60])
                           for w in where[:5]]
    if raised:
        out["error"] = str(exc.get("exception_message"))[:300]
    return out
