"""TensorFlow and TFLite (LiteRT) runtimes for the benchmark harness, with the protocol of ``benchmark``.

Rows carry the same fields as ``benchmark.bench_torch``'s (and the same protocol, memory and skip records), so
the report treats every runtime alike. TensorFlow-only facts are added as fields, never in place of one:

- ``tensorflow``: the Keras model runs through one ``tf.function`` traced for a ``None`` batch dimension with
  ``jit_compile=False``; ``xla`` records whether XLA compiles it anyway (global auto-clustering). The timed call
  ends with ``.numpy()`` on the output, so it blocks until the result is on the host. Tracing happens in the
  first (cold) call, which the protocol keeps apart from the samples.
- Threads: TensorFlow reads its thread counts once, when its runtime starts; afterwards setting them raises.
  ``configure_threads`` sets them if it still can and returns the value really in effect with
  ``threads_source``: ``set`` (applied now), ``fixed_earlier`` (TF had already started with another value),
  ``tf_default`` (TF's default, one thread per core the process may use, recorded as that number). Call it
  before the model is built or loaded when the count matters.
- ``tflite``: the LiteRT interpreter. Per batch size the input is resized and tensors are allocated outside the
  clock; the timed call is set_tensor + invoke + get_tensor (a copy), since ORT's ``run`` includes feeding and
  fetching too. LiteRT applies its default delegate, XNNPACK, when tensors are first allocated; the delegate's
  kernels then appear as ``DELEGATE`` nodes in the interpreter's graph (``_get_ops_details``), which is how
  ``provider`` says ``litert-xnnpack`` rather than ``litert-cpu`` (built-in kernels only) and ``delegated_nodes``
  counts them (``litert`` and None where the interpreter cannot list its nodes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from compression_pipeline.benchmark import (
    FP16_CPU_REASON,
    HostPeak,
    Protocol,
    _copy_ms,
    _inputs,
    _timing_fields,
    resolve_threads,
    timed,
)


# --- TensorFlow -------------------------------------------------------------------------------------------------
def configure_threads(threads: int | None, inter_op: int | None = 1) -> tuple[int, str]:
    """Set TF's intra-op threads to ``resolve_threads(threads)`` and its inter-op threads to ``inter_op`` (None:
    TF's default) if TF has not started yet. Benchmarks run one op at a time (inter-op 1, like ORT's sequential
    mode); training keeps TF's default inter-op pool (inter-op 1 measured 10 % slower Keras epochs here).

    Returns (threads in effect, source); see the module docstring for the sources."""
    import tensorflow as tf

    want = resolve_threads(threads)
    source = "set"
    try:
        tf.config.threading.set_intra_op_parallelism_threads(want)
    except RuntimeError:  # "cannot be modified after initialization": record what TF really uses
        source = "fixed_earlier"
    if inter_op is not None:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        except RuntimeError:
            pass
    got = tf.config.threading.get_intra_op_parallelism_threads()
    if got == 0:  # 0: TF picks one per schedulable core, which is what resolve_threads(None) counts
        return resolve_threads(None), "tf_default"
    return got, source


def tf_gpu_usable() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _xla_in_use(jit_compile: bool) -> bool:
    import tensorflow as tf

    return bool(jit_compile or tf.config.optimizer.get_jit() or "auto_jit" in os.environ.get("TF_XLA_FLAGS", ""))


def _copy_to(model, device: str, dtype: str = "float32"):
    """The model rebuilt with its variables on ``device`` (a TF device name) and in ``dtype``.

    Keras places variables where they are created, so a model built on the GPU would read its weights across
    the bus on every CPU call; a float16 copy also needs float16 variables. Layers cast float inputs to their
    compute dtype themselves, so the copy still takes float32 input."""
    import keras
    import tensorflow as tf

    config = model.get_config()
    if dtype != "float32":
        for layer in config.get("layers", []):
            if layer.get("class_name") != "InputLayer" and "dtype" in layer.get("config", {}):
                layer["config"]["dtype"] = dtype
    with tf.device(device):
        copy = type(model).from_config(config) if isinstance(model, keras.Sequential) else \
            keras.Model.from_config(config)
        copy.set_weights(model.get_weights())  # assign casts to the variables' dtype
    return copy


def bench_tensorflow(model, in_shape, batch_sizes, device: str, threads: int | None, protocol: Protocol,
                     load_s: float = 0.0, skipped: list | None = None, fp16: bool = True) -> list[dict]:
    """fp32 cells of a Keras model (``in_shape`` = (h, w, 1), NHWC) at each batch size through a compiled
    ``tf.function``; fp16 cells too on a GPU (elsewhere the skip is recorded in ``skipped``)."""
    n_threads, threads_source = configure_threads(threads)  # first: TF fixes its threads when it starts
    import tensorflow as tf

    use_gpu = device in ("cuda", "auto") and tf_gpu_usable()
    if device == "cuda" and not use_gpu:
        raise RuntimeError("device 'cuda' was asked for, but TensorFlow sees no GPU "
                           "(tf.config.list_physical_devices('GPU') is empty)")
    dev = "/GPU:0" if use_gpu else "/CPU:0"
    jit = False
    extra = {"xla": _xla_in_use(jit), "threads_source": threads_source}
    precisions = [("fp32", model if use_gpu or not tf_gpu_usable() else _copy_to(model, dev))]
    if fp16 and use_gpu:
        precisions.append(("fp16", _copy_to(model, dev, "float16")))
    elif fp16 and skipped is not None:
        skipped.append({"runtime": "tensorflow", "precision": "fp16", "reason": FP16_CPU_REASON})
    spec = [tf.TensorSpec((None, *in_shape), tf.float32, name="input")]
    rows, fns = [], {}
    for precision, m in precisions:
        with tf.device(dev):
            fns[precision] = tf.function(lambda x, m=m: m(x, training=False), input_signature=spec,
                                         jit_compile=jit)
        fn, diff, warm = fns[precision], {}, 0.0
        if precision != "fp32":  # timings only: say how far the fp16 logits move from fp32
            with tf.device(dev):
                x = tf.constant(_inputs(in_shape, max(batch_sizes)))
                diff["max_abs_diff_vs_fp32"] = float(np.abs(fn(x).numpy().astype(np.float32)
                                                            - fns["fp32"](x).numpy()).max())
        for bs in batch_sizes:
            with tf.device("/CPU:0"):
                host = tf.constant(_inputs(in_shape, bs))
            gpu = {}
            with HostPeak() as mem:
                with tf.device(dev):
                    x = tf.identity(host)
                if use_gpu:
                    tf.config.experimental.reset_memory_stats("GPU:0")

                    def h2d(host=host):
                        with tf.device(dev):
                            tf.identity(host)
                        tf.test.experimental.sync_devices()

                    gpu["h2d_ms"] = _copy_ms(h2d)

                def call(fn=fn, x=x):
                    with tf.device(dev):
                        fn(x).numpy()  # blocks until the logits are on the host

                t = timed(call, protocol, warm)
            if use_gpu:
                gpu["peak_device_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
                gpu["peak_device_scope"] = "tf allocator"
            rows.append({"runtime": "tensorflow", "provider": "cuda" if use_gpu else "cpu",
                         "device": "cuda" if use_gpu else "cpu", "precision": precision, "batch_size": bs,
                         "threads": n_threads, "load_s": load_s, **extra, **gpu, **diff,
                         **_timing_fields(t, bs, warm), **mem.fields})
            warm += t.warmup_s + t.measured_s
    return rows


# --- TFLite / LiteRT --------------------------------------------------------------------------------------------
TFLITE_FP16_REASON = ("the LiteRT interpreter runs on the CPU, where fp16 is no faster than fp32; a float16 "
                      "TFLite model (float16 weights, fp32 inputs) is benchmarked as its own variant")


def delegated_nodes(interpreter) -> int | None:
    """How many nodes of the allocated interpreter's graph a delegate (XNNPACK by default) runs; None where
    this LiteRT build does not list its nodes (``_get_ops_details`` is not public API)."""
    details = getattr(interpreter, "_get_ops_details", None)
    return None if details is None else sum(op["op_name"] == "DELEGATE" for op in details())


def _tflite_provider(nodes: int | None) -> str:
    return "litert" if nodes is None else ("litert-xnnpack" if nodes else "litert-cpu")


def bench_tflite(path: Path, in_shape, batch_sizes, threads: int | None, protocol: Protocol,
                 load_s: float | None = None, skipped: list | None = None) -> list[dict]:
    """fp32-input cells of a .tflite model (``in_shape`` = (h, w, 1)) at each batch size, on the CPU.

    ``precision`` is the precision of the input and output tensors ("fp32"); what the weights hold (int8,
    float16) is the model's own business, as for an int8 ONNX model. There is no fp16 cell (LiteRT runs on the
    CPU here; a float16 TFLite model is its own variant): ``skipped`` gets that reason, as the other runtimes
    record theirs."""
    from compression_pipeline import keras_backend

    n_threads = resolve_threads(threads)
    t0 = time.perf_counter()
    interp = keras_backend.tflite_interpreter(Path(path), n_threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], (batch_sizes[0], *in_shape))
    interp.allocate_tensors()  # the first allocation applies the default delegate: part of loading
    measured_load = time.perf_counter() - t0
    load_s = measured_load if load_s is None else load_s
    if skipped is not None:
        skipped.append({"runtime": "tflite", "precision": "fp16", "reason": TFLITE_FP16_REASON})
    rows, warm = [], 0.0
    for bs in batch_sizes:
        x = _inputs(in_shape, bs)
        with HostPeak() as mem:
            interp.resize_tensor_input(inp["index"], x.shape)
            interp.allocate_tensors()
            nodes = delegated_nodes(interp)

            def call(x=x):
                interp.set_tensor(inp["index"], x)
                interp.invoke()
                interp.get_tensor(out["index"]).copy()

            t = timed(call, protocol, warm)
        rows.append({"runtime": "tflite", "provider": _tflite_provider(nodes), "device": "cpu",
                     "precision": "fp32", "batch_size": bs, "threads": n_threads, "load_s": load_s,
                     "delegated_nodes": nodes, **_timing_fields(t, bs, warm), **mem.fields})
        warm += t.warmup_s + t.measured_s
    return rows
