"""Command line (``python -m compression_pipeline ...``):

- ``run <family>`` materializes the family through Dagster on the instance in $DAGSTER_HOME (what ``make run``
  does), with one progress line per step and a summary (``orchestration/launch.py``); ``--stale``: the data, then
  only what is missing or stale (what ``make resume FAMILY=...`` does to complete an interrupted launch);
  ``--remeasure``: the benchmark session and the report only (``make remeasure``);
- ``report <family>`` prints a family's comparison table; ``lineage <family>/<asset>`` where an asset came from:
  both only read what the runs wrote, so they are cheap and never retrain anything;
- ``resume <run_id>`` re-executes a failed run from its failure;
- ``benchmarks [report.json ...]`` writes BENCHMARKS.md, the measured tables, from report files.
"""

from __future__ import annotations

import argparse
import os
import sys

from compression_pipeline.errors import PipelineError
from compression_pipeline.settings import PROJECT_ROOT, Settings


def report(family: str) -> int:
    settings = Settings.from_env()
    folder = settings.artifact_root / family / "report"
    md = folder / "report.md"
    if not md.is_file():
        print(f"no report for family {family!r} under {folder}: materialize it first "
              f"(make run FAMILY={family}, or `python -m compression_pipeline run {family}`)",
              file=sys.stderr)
        return 1
    print(md.read_text())
    print("Report files:")
    for name in ("report.md", "report.json", "report.html"):
        if (folder / name).is_file():
            print(f"  {folder / name}")
    return 0


def benchmarks(reports: list[str], out: str) -> int:
    """BENCHMARKS.md from report.json files (default: every family's under the artifact root)."""
    from pathlib import Path

    from compression_pipeline.report.document import document

    paths = [Path(r) for r in reports] or sorted(Settings.from_env().artifact_root.glob("*/report/report.json"))
    if not paths:
        print("no report.json to read: materialize a family first (make run), or name report files", file=sys.stderr)
        return 1
    Path(out).write_text(document(paths))
    print(f"{out}: {len(paths)} report(s): " + ", ".join(map(str, paths)))
    return 0


def resume(run_id: str) -> int:
    """Re-execute a failed run from its failure, on the instance in DAGSTER_HOME: the steps that succeeded are
    not run again; their outputs are read from the last good handles. (The UI's "Re-execute from failure".)"""
    import os

    import dagster as dg

    from compression_pipeline.settings import PROJECT_ROOT

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))  # the same default as `make run`
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise PipelineError(f"no run {run_id!r} in the instance at {instance.root_directory}")
        job = dg.build_reconstructable_job("compression_pipeline.definitions", "job_named",
                                           reconstructable_args=(run.job_name,))
        result = dg.execute_job(job, instance, reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance))
        print(f"re-execution of {run.job_name} from the failure of run {run_id}: run {result.run_id} "
              f"{'succeeded' if result.success else 'failed'}")
        return 0 if result.success else 1


def lineage(asset: str, as_json: bool) -> int:
    """The chain of ``asset`` and its ancestors from the instance in $DAGSTER_HOME (default: dagster_home/)."""
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    import dagster as dg

    from compression_pipeline.definitions import defs  # the code location, as `dagster dev` loads it
    from compression_pipeline.orchestration import lineage as L

    with dg.DagsterInstance.get() as instance:
        steps = L.lineage(instance, defs, asset)
    print(L.as_json(steps) if as_json else L.render(steps))
    return 0 if steps[0].kind != "missing" else 1


def run(family: str, benchmarks: bool = True, stale: bool = False, remeasure: bool = False) -> int:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))  # the same default as `make run`
    from compression_pipeline.orchestration.launch import launch

    return launch(family, benchmarks=benchmarks, stale=stale, remeasure=remeasure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compression_pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="materialize a family through Dagster, with progress and a summary")
    p.add_argument("family", nargs="?", default="digits")
    p.add_argument("--no-benchmarks", action="store_true",
                   help="the data, models and exports only (each gated): no benchmarks, report or candidate")
    p.add_argument("--stale", action="store_true",
                   help="the data, then only what is missing or stale (completes an interrupted launch)")
    p.add_argument("--remeasure", action="store_true",
                   help="only the benchmark session and the report, on the last good models (e.g. on a quiet machine)")
    p = sub.add_parser("report", help="print a family's comparison table and the paths of its report files")
    p.add_argument("family", nargs="?", default="digits")
    p = sub.add_parser("benchmarks", help="write BENCHMARKS.md from report.json files (two of one family: side by "
                                          "side, with the run-to-run agreement of every speedup)")
    p.add_argument("reports", nargs="*", help="report.json files (default: every family's in the artifact root)")
    p.add_argument("--out", default=str(PROJECT_ROOT / "BENCHMARKS.md"))
    p = sub.add_parser("resume", help="re-execute a failed run from its failure (the steps that succeeded are kept)")
    p.add_argument("run_id")
    p = sub.add_parser("lineage", help="print the chain of an asset from the Dagster instance's records")
    p.add_argument("asset", help="asset key, e.g. digits/torch_int8")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run(args.family, benchmarks=not args.no_benchmarks, stale=args.stale, remeasure=args.remeasure)
        if args.command == "report":
            return report(args.family)
        if args.command == "benchmarks":
            return benchmarks(args.reports, args.out)
        if args.command == "resume":
            return resume(args.run_id)
        if args.command == "lineage":
            return lineage(args.asset, args.json)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
