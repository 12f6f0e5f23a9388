"""Command line: ``python -m compression_pipeline report <family>`` prints a family's comparison table.

Materializing is Dagster's job (``dagster job execute -j <family>_recompress`` or the UI); this command
only reads what the runs wrote, so it is cheap and never retrains anything.
"""

from __future__ import annotations

import argparse
import sys

from compression_pipeline.errors import PipelineError
from compression_pipeline.settings import Settings


def report(family: str) -> int:
    settings = Settings.from_env()
    folder = settings.artifact_root / family / "report"
    md = folder / "report.md"
    if not md.is_file():
        print(f"no report for family {family!r} under {folder}: materialize it first "
              f"(make run, or `dagster job execute -m compression_pipeline.definitions -j {family}_recompress`)",
              file=sys.stderr)
        return 1
    print(md.read_text())
    print("Report files:")
    for name in ("report.md", "report.json", "report.html"):
        if (folder / name).is_file():
            print(f"  {folder / name}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compression_pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="print a family's comparison table and the paths of its report files")
    p.add_argument("family", nargs="?", default="digits")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return report(args.family)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
