"""compression_pipeline: compressed, validated, benchmarked deployment candidates as Dagster assets.

Importing this package is cheap on purpose: no torch, TensorFlow, ONNX Runtime or Dagster is imported
here. The library modules import the frameworks inside the functions that need them, and only
``compression_pipeline.orchestration`` / ``compression_pipeline.definitions`` import Dagster.
"""

__version__ = "0.2.0"
