"""Data-quality gates: Great Expectations 1.x suites, built in code, run on the preprocessed splits.

Each expectation belongs to one gate (schema, value_range, no_missing, labels, class_balance,
row_counts, no_leakage). ``validate_splits`` runs the suites once and returns, per gate, whether it
passed and every expectation's outcome, so the orchestration can show them as asset checks.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np


def _index_columns(table: str) -> list[str]:
    """Tables whose failures are named by row (and pixel) rather than by value."""
    return ["row", "pixel"] if table.endswith("_pixels") else ["row"] if table == "train_vs_test" else []


GATES = ("schema", "value_range", "no_missing", "labels", "class_balance", "row_counts", "no_leakage")


@dataclass
class GateOutcome:
    name: str
    passed: bool = True
    expectations: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.expectations if not e["success"]]


def _frames(splits: dict[str, np.ndarray]):
    """Per split a wide table (one row per sample: pixels + label) and a long table of pixel values.

    Pixel-level gates run on the long table: three expectations instead of three per pixel column, and a
    failure names the row and the pixel it found.
    """
    import pandas as pd

    frames = {}
    for s in ("train", "val", "test"):
        X, y = splits[f"X_{s}"], splits[f"y_{s}"]
        n, d = X.shape
        wide = pd.DataFrame(X, columns=[f"pixel_{i}" for i in range(d)])
        wide["label"] = y
        long = pd.DataFrame({"row": np.repeat(np.arange(n), d),
                             "pixel": np.tile(np.array([f"pixel_{i}" for i in range(d)]), n),
                             "value": X.reshape(-1)})
        frames[s], frames[f"{s}_pixels"] = wide, long
    # A test sample leaks when its exact pixel row is also in train (duplicates inside one split are fine).
    # One row per test sample, so the failure counts the leaked test samples and names their rows.
    frames["train_vs_test"] = pd.DataFrame({"row": np.arange(len(splits["X_test"])),
                                            "row_hash": _row_hashes(splits["X_test"])})
    return frames


def _row_hashes(X: np.ndarray) -> list[str]:
    X = np.ascontiguousarray(X)
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in X]


def _suites(n_features: int, classes: list[int], min_train_rows: int, max_kl: float, train_hashes: list[str]):
    """{table: [(gate, expectation), ...]} for every table ``_frames`` builds."""
    import great_expectations.expectations as gxe

    columns = [f"pixel_{i}" for i in range(n_features)] + ["label"]
    uniform = {"values": list(classes), "weights": [1.0 / len(classes)] * len(classes)}
    suites = {}
    for split in ("train", "val", "test"):
        suites[split] = [
            ("schema", gxe.ExpectTableColumnsToMatchOrderedList(column_list=columns)),
            ("schema", gxe.ExpectColumnValuesToBeInTypeList(column="label", type_list=["int64", "int32"])),
            ("no_missing", gxe.ExpectColumnValuesToNotBeNull(column="label")),
            ("labels", gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes))),
            ("labels", gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2)),
            ("class_balance", gxe.ExpectColumnKLDivergenceToBeLessThan(
                column="label", partition_object=uniform, threshold=max_kl)),
            ("row_counts", gxe.ExpectTableRowCountToBeBetween(min_value=min_train_rows if split == "train" else 1)),
        ]
        suites[f"{split}_pixels"] = [
            ("schema", gxe.ExpectColumnValuesToBeOfType(column="value", type_="float32")),
            ("no_missing", gxe.ExpectColumnValuesToNotBeNull(column="value")),
            ("value_range", gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0.0, max_value=1.0)),
        ]
    suites["train_vs_test"] = [("no_leakage", gxe.ExpectColumnValuesToNotBeInSet(column="row_hash",
                                                                           value_set=sorted(set(train_hashes))))]
    return suites


def validate_splits(splits: dict[str, np.ndarray], classes: list[int], min_train_rows: int,
                    max_class_kl: float) -> dict[str, GateOutcome]:
    """Run the suites on train/val/test and the train-vs-test leakage suite; return one outcome per gate."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("splits")
    frames = _frames(splits)
    outcomes = {g: GateOutcome(g) for g in GATES}
    suites = _suites(splits["X_train"].shape[1], classes, min_train_rows, max_class_kl, _row_hashes(splits["X_train"]))
    for table, exps in suites.items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"{table}_suite"))
        gate_of = {}
        for gate, exp in exps:
            gate_of[suite.add_expectation(exp).id] = gate
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"{table}_validation", data=batch,
                                                                        suite=suite))
        index_cols = _index_columns(table)
        result = vd.run(batch_parameters={"dataframe": frames[table]},
                        result_format={"result_format": "SUMMARY", "unexpected_index_column_names": index_cols})
        for r in result.results:
            gate = gate_of[r.expectation_config.id]
            outcome = _summarize(table, r)
            outcomes[gate].expectations.append(outcome)
            outcomes[gate].passed &= outcome["success"]
    return outcomes


def _summarize(split: str, r) -> dict:
    cfg = r.expectation_config
    res = r.result or {}
    exc = (r.exception_info or {})
    raised = exc.get("raised_exception") if isinstance(exc, dict) else False
    out = {
        "table": split,
        "expectation": cfg.type,
        "column": cfg.kwargs.get("column"),
        # An expectation that raised did not check anything: it counts as a failure, with the reason.
        "success": bool(r.success) and not raised,
    }
    for key in ("observed_value", "unexpected_count", "unexpected_percent", "element_count"):
        if key in res and res[key] is not None:
            v = res[key]
            out[key] = (float(v) if isinstance(v, (np.floating, float))
                        else int(v) if isinstance(v, (int, np.integer)) else str(v)[:200])
    where = res.get("partial_unexpected_index_list" if _index_columns(split) else "partial_unexpected_list") or []
    if where:
        out["examples"] = [({k: str(v) for k, v in w.items()} if isinstance(w, dict) else str(w)[:60])
                           for w in where[:5]]
    if raised:
        out["error"] = str(exc.get("exception_message"))[:300]
    return out
