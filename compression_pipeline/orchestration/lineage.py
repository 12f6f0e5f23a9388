"""The lineage of an asset, read from the Dagster instance's own records.

For the asset and each of its ancestors in the asset graph (model -> export -> baseline -> splits -> raw
dataset -> dataset file): the latest materialization (or observation, for an observed dataset file), with its
run, time, data and code version, the input data versions Dagster recorded, the recipe entry and config and
the dataset version the asset body wrote into its metadata, and the latest result of each of its gates.
Each step also says whether it is still current: its code version is the one the recipe gives now, and the
inputs it was built from are still the latest versions of its parents.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

import dagster as dg

from compression_pipeline.errors import PipelineError

# Tags Dagster writes on every materialization / observation (shown in the UI as "Data version", "Code version").
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_VERSION_TAG = "dagster/input_data_version/"
SHOWN_METADATA = ("recipe", "recipe_entry", "recipe_config", "parent", "parent_asset", "dataset_version",
                  "source", "source_sha256", "artifact", "sha256", "accuracy", "accuracy_runtime", "method",
                  "path")


@dataclass
class Step:
    key: str
    group: str | None
    kind: str  # materialization | observation | missing
    run_id: str | None = None
    time: str | None = None
    data_version: str | None = None
    code_version: str | None = None
    current_code_version: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # parent key -> data version it was built from
    metadata: dict = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)  # check name -> passed | failed | ...
    stale: list[str] = field(default_factory=list)  # why it is not current; empty when it is


def _metadata(entry_md) -> dict:
    out = {}
    for k in SHOWN_METADATA:
        if k in entry_md:
            v = entry_md[k].value
            out[k] = v.to_user_string() if isinstance(v, dg.AssetKey) else v
    return out


def _ancestors(graph, key: dg.AssetKey) -> list[dg.AssetKey]:
    """The asset and its ancestors, ordered by their longest distance from it: a chain reads top to bottom
    (int8 -> baseline export -> baseline -> splits -> raw dataset -> dataset file) even where an asset also
    reads an ancestor directly (every model reads the splits)."""
    depth = {key: 0}
    frontier = [key]
    while frontier:
        nxt = []
        for k in frontier:
            for p in graph.get(k).parent_keys:
                if depth.get(p, -1) < depth[k] + 1:
                    depth[p] = depth[k] + 1
                    nxt.append(p)
        frontier = nxt
    return sorted(depth, key=lambda k: (depth[k], k.to_user_string()))


def _latest(instance: dg.DagsterInstance, node) -> tuple[str, dg.EventLogEntry | None]:
    if node.is_observable and not node.is_materializable:
        records = instance.fetch_observations(node.key, limit=1).records
        return "observation", (records[0].event_log_entry if records else None)
    return "materialization", instance.get_latest_materialization_event(node.key)


def read_step(instance: dg.DagsterInstance, graph, k: dg.AssetKey) -> Step:
    """What the instance records of asset ``k``: its latest materialization (or observation), versions, lineage
    metadata and gates."""
    node = graph.get(k)
    kind, entry = _latest(instance, node)
    step = Step(key=k.to_user_string(), group=node.group_name, kind=kind if entry else "missing",
                current_code_version=node.code_version)
    if entry is None:
        return step
    event = entry.asset_materialization or entry.asset_observation
    tags = event.tags or {}
    step.run_id = entry.run_id
    step.time = dt.datetime.fromtimestamp(entry.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    step.data_version = tags.get(DATA_VERSION_TAG)
    step.code_version = tags.get(CODE_VERSION_TAG)
    step.inputs = {t[len(INPUT_VERSION_TAG):]: v for t, v in tags.items() if t.startswith(INPUT_VERSION_TAG)}
    step.metadata = _metadata(event.metadata)
    for ck in sorted(graph.get_check_keys_for_assets({k}), key=lambda c: c.name):
        record = instance.get_latest_asset_check_evaluation_record(ck)
        evaluation = record and record.event and record.event.asset_check_evaluation
        step.checks[ck.name] = ("passed" if evaluation.passed else "FAILED") if evaluation else \
            (record.status.value.lower() if record else "never run")
    return step


def mark_stale(graph, steps: dict[dg.AssetKey, Step]) -> None:
    """Say in each step why it is not current (never built, built by another code version, built from another
    version of a parent); a parent that is not in ``steps`` is not compared."""
    for k, step in steps.items():
        if step.kind == "missing":
            step.stale.append("never materialized" if graph.get(k).is_materializable else "never observed")
            continue
        if graph.get(k).is_materializable and step.code_version != step.current_code_version:
            step.stale.append(f"code version {step.code_version} -> {step.current_code_version} (recipe edited)")
        for parent in sorted(graph.get(k).parent_keys, key=lambda a: a.to_user_string()):
            p = steps.get(parent)
            built_from = step.inputs.get(parent.to_user_string())
            if p is not None and p.data_version and built_from != p.data_version:
                step.stale.append(f"{p.key} is now {p.data_version} (built from {built_from})")


def lineage(instance: dg.DagsterInstance, defs: dg.Definitions, asset: str) -> list[Step]:
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey.from_user_string(asset)
    if not graph.has(key):
        known = ", ".join(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))
        raise PipelineError(f"no asset {asset!r} in the code location; known assets: {known}")
    steps = {k: read_step(instance, graph, k) for k in _ancestors(graph, key)}
    mark_stale(graph, steps)
    return list(steps.values())


def outdated(instance: dg.DagsterInstance, graph, keys: list[dg.AssetKey]) -> dict[str, str]:
    """``{asset: why}`` for each of ``keys`` (in topological order) that is not current: never built, built by
    another code version (its recipe entries were edited), built from another version of a parent, a gate of its
    newest version failed, or it stands on one of those. What a launch with ``--stale`` builds."""
    wanted = set(keys)
    parents = {p for k in keys for p in graph.get(k).parent_keys} - wanted
    steps = {k: read_step(instance, graph, k) for k in [*parents, *keys]}
    mark_stale(graph, steps)
    why: dict[str, str] = {}
    for k in keys:
        step = steps[k]
        failed = [name for name, state in step.checks.items() if state == "FAILED"]
        rebuilt = [p.to_user_string() for p in sorted(graph.get(k).parent_keys) if p.to_user_string() in why]
        if step.stale:
            why[step.key] = step.stale[0]
        elif failed:
            why[step.key] = f"its gate {failed[0]} failed"
        elif rebuilt:
            why[step.key] = f"{rebuilt[0]} is rebuilt"
    return why


def render(steps: list[Step]) -> str:
    lines = []
    for s in steps:
        state = "current" if not s.stale else "STALE: " + "; ".join(s.stale)
        lines.append(f"{s.key}  [{s.group}]  {state}")
        if s.kind == "missing":
            continue
        lines.append(f"  {s.kind:<16}{s.time}  run {s.run_id}")
        lines.append(f"  data version    {s.data_version}"
                     + (f"   code version {s.code_version}" if s.code_version else ""))
        md = dict(s.metadata)
        if "recipe" in md:
            lines.append(f"  recipe          {md.pop('recipe')}  entry {md.pop('recipe_entry', '-')}")
        if "recipe_config" in md:
            config = json.dumps(md.pop("recipe_config"), sort_keys=True, separators=(",", ":"))
            lines.append(f"  config          {config}")
        if "parent_asset" in md:
            parent = md.pop("parent_asset")
            lines.append(f"  parent          {parent} @ {s.inputs.get(parent, '-')}"
                         + (f"  (variant of {md.pop('parent')})" if "parent" in md else ""))
        if "dataset_version" in md:
            lines.append(f"  dataset         splits @ {md.pop('dataset_version')}")
        others = {k: v for k, v in s.inputs.items() if k != s.metadata.get("parent_asset")}
        if others:
            lines.append("  inputs          " + ", ".join(f"{k} @ {v}" for k, v in sorted(others.items())))
        for k, v in md.items():
            lines.append(f"  {k:<15} {v}")
        if s.checks:
            lines.append("  gates           " + ", ".join(f"{n} {v}" for n, v in s.checks.items()))
    return "\n".join(lines)


def as_json(steps: list[Step]) -> str:
    return json.dumps([asdict(s) for s in steps], indent=1, default=str)
