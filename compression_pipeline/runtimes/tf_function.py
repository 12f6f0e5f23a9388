"""TensorFlow: a Keras model run through one ``tf.function``, and TF's thread configuration (``configure_threads``,
used by training too: this module is the one place it lives).

- The model runs through one ``tf.function`` traced for a ``None`` batch dimension with ``jit_compile=False``;
  ``xla`` records whether XLA compiles it anyway (global auto-clustering). The timed call ends with ``.numpy()``
  on the output, so it blocks until the result is on the host. Tracing happens in the first (cold) call, which
  the protocol keeps apart from the samples.
- Threads: TensorFlow reads its thread counts once, when its runtime starts; afterwards setting them raises.
  ``configure_threads`` sets them if it still can and returns the value really in effect with
  ``threads_source``: ``set`` (applied now), ``fixed_earlier`` (TF had already started with another value),
  ``tf_default`` (TF's default, one thread per core the process may use, recorded as that number). Call it
  before the model is built or loaded when the count matters.
- On a GPU the input is copied to the device before the clock starts (``h2d_ms`` times that copy apart),
  ``peak_device_mb`` is TF's allocator peak during the cell, and the fp16 session is a float16 copy of the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from compression_pipeline.benchmark import resolve_threads
from compression_pipeline.runtimes.base import FP16_CPU_REASON, Cell, Session, copy_ms
from compression_pipeline.types import InputSpec, Layout


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


def gpu_usable() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _xla_in_use(jit_compile: bool) -> bool:
    import tensorflow as tf

    return bool(jit_compile or tf.config.optimizer.get_jit() or "auto_jit" in os.environ.get("TF_XLA_FLAGS", ""))


def copy_to(model, device: str, dtype: str = "float32"):
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
        clone = type(model).from_config(config) if isinstance(model, keras.Sequential) else \
            keras.Model.from_config(config)
        clone.set_weights(model.get_weights())  # assign casts to the variables' dtype
    return clone


def open(model, spec: InputSpec, layout: Layout, device: str = "cpu", threads: int | None = None,
         load_s: float = 0.0) -> TfSession:
    """A session of the Keras ``model``, which takes ``spec``'s samples in ``layout``; ``load_s``: how long the
    caller took to load it. Configure the threads (``configure_threads``) before loading the model when the
    count matters: this calls it again and records what TF really uses."""
    n_threads, threads_source = configure_threads(threads)  # first: TF fixes its threads when it starts
    use_gpu = device in ("cuda", "auto") and gpu_usable()
    if device == "cuda" and not use_gpu:
        raise RuntimeError("device 'cuda' was asked for, but TensorFlow sees no GPU "
                           "(tf.config.list_physical_devices('GPU') is empty)")
    tf_device = "/GPU:0" if use_gpu else "/CPU:0"
    jit = False
    on = "cuda" if use_gpu else "cpu"
    return TfSession(model=model if use_gpu or not gpu_usable() else copy_to(model, tf_device), tf_device=tf_device,
                     jit=jit, spec=spec, layout=layout, provider=on, device=on, threads=n_threads, load_s=load_s,
                     fields={"xla": _xla_in_use(jit), "threads_source": threads_source})


@dataclass(kw_only=True)
class TfSession(Session):
    runtime: ClassVar[str] = "tensorflow"
    model: Any  # keras.Model
    tf_device: str  # /CPU:0 | /GPU:0
    jit: bool = False
    fn: Any = field(init=False, repr=False)  # the traced tf.function

    def __post_init__(self):
        super().__post_init__()
        import tensorflow as tf

        signature = [tf.TensorSpec((None, *self.spec.sample_shape(self.layout)), tf.float32, name="input")]
        with tf.device(self.tf_device):
            self.fn = tf.function(lambda x, m=self.model: m(x, training=False), input_signature=signature,
                                  jit_compile=self.jit)

    def feed(self, x: np.ndarray):
        import tensorflow as tf

        with tf.device("/CPU:0"):
            return tf.constant(x)

    def cell(self, host) -> Cell:
        import tensorflow as tf

        fn, dev = self.fn, self.tf_device
        with tf.device(dev):
            x = tf.identity(host)

        def call():
            with tf.device(dev):
                fn(x).numpy()  # blocks until the logits are on the host

        if self.device != "cuda":
            return Cell(call)
        tf.config.experimental.reset_memory_stats("GPU:0")

        def h2d():
            with tf.device(dev):
                tf.identity(host)
            tf.test.experimental.sync_devices()

        return Cell(call, {"h2d_ms": copy_ms(h2d)},
                    lambda: {"peak_device_mb": tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20,
                             "peak_device_scope": "tf allocator"})

    def outputs(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        with tf.device(self.tf_device):
            return self.fn(tf.constant(x)).numpy().astype(np.float32)

    def half(self) -> Session | str:
        if self.device != "cuda":
            return FP16_CPU_REASON
        return replace(self, precision="fp16", model=copy_to(self.model, self.tf_device, "float16"))
