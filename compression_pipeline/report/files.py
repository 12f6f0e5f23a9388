"""Writes a family report's files at fixed names under ``<artifact root>/<family>/report/``: report.json,
report.md, one PNG per plot and report.html (each atomically, so a reader never sees half a file)."""

from __future__ import annotations

import json

from compression_pipeline.artifacts import ArtifactStore
from compression_pipeline.report import plots
from compression_pipeline.report.html import html_page
from compression_pipeline.report.md import markdown


def write(report: dict, store: ArtifactStore) -> dict[str, str]:
    """Write every file of ``report`` (from ``contract.build``); return their paths by kind (``json``, ``md``,
    ``html``) or plot name."""
    folder = f"{report['family']}/report"
    paths = {"json": store.write_text_named(f"{folder}/report.json", json.dumps(report, indent=1, default=float)),
             "md": store.write_text_named(f"{folder}/report.md", markdown(report))}
    images = plots.render(report)
    paths.update({name: store.write_bytes_named(f"{folder}/{name}.png", data) for name, data in images.items()})
    paths["html"] = store.write_text_named(f"{folder}/report.html", html_page(report, images))
    return {k: str(v) for k, v in paths.items()}
