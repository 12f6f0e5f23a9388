"""Benchmark runtimes: ONNX Runtime, PyTorch eager, a Keras model in a tf.function, LiteRT (see ``base``).

Importing this package imports no framework: each runtime imports its own inside the functions that use it."""
