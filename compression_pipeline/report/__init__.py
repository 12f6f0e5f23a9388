"""The family report: report.json, report.md, report.html with its plots, the deployment-candidate selection
and its model card.

Modules, each importing only those before it (``tests/test_architecture.py`` guards against import circles):
``cells`` (the leaf: benchmark cells and model keys) <- ``compare`` (framework and runtime comparisons) <-
``contract`` (report.json as a dict) and ``md`` (report.md) <- ``plots`` and ``html`` (report.html) <- ``files``
(writes them all); ``select`` (the deployment candidate) <- ``model_card``; ``document`` (BENCHMARKS.md from
report.json files). No module is named like a function
exported here (``build``, ``markdown``, ``write``), so ``report.build`` is always the function.
"""

from compression_pipeline.report.cells import BENCH_FIELDS, cell, cell_label, model_key, precision
from compression_pipeline.report.contract import add_ratios, build
from compression_pipeline.report.files import write
from compression_pipeline.report.md import markdown

__all__ = ["BENCH_FIELDS", "add_ratios", "build", "cell", "cell_label", "markdown", "model_key", "precision", "write"]
