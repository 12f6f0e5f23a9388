"""What a runtime session is: a model opened once on one runtime at one precision, which the harness
(``benchmark.run``) times at each batch size with one protocol.

A runtime module opens a session from what it runs (an ONNX file, a ``torch.nn.Module``, a Keras model, a .tflite
file) with the ``InputSpec`` of its inputs and the layout the model takes (NCHW, NHWC, NF): the random inputs
come from those two, so no runtime guesses a shape. A session gives, per batch size, a ``Cell``: the call to time
and the facts of that cell; its rows carry the session's load time, provider, device, precision, threads and
``fields`` (the runtime's own facts). ``half()`` is the same model at fp16 on the same device, or why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from compression_pipeline.types import InputSpec, Layout

FP16_CPU_REASON = ("fp16 is benchmarked on CUDA only: this run is on CPU, where neither the ORT CPU provider nor "
                   "torch has fast fp16 convolutions (they run slower than fp32)")


@dataclass
class Cell:
    """One batch size of a session: ``call`` blocks until its result is ready (synchronizes on a GPU); ``fields``
    are facts known before timing (``h2d_ms``, LiteRT's delegate); ``after`` reads those known only afterwards
    (device memory), outside the cell's host-memory window; ``enter`` makes the session ready for this cell again
    after another cell of it ran (an interleaved session switches between batch sizes; untimed)."""

    call: Callable[[], object]
    fields: dict = field(default_factory=dict)
    after: Callable[[], dict] = dict
    enter: Callable[[], object] = lambda: None


@dataclass(kw_only=True)
class Session(ABC):
    runtime: ClassVar[str]  # onnxruntime | torch | tensorflow | tflite: the rows' ``runtime``
    spec: InputSpec
    layout: Layout
    provider: str  # what really runs it (ORT's provider, "cpu"/"cuda", litert-xnnpack...)
    device: str  # cpu | cuda
    threads: int  # in effect, not merely asked for
    load_s: float  # creating the session (or loading the model: the caller's measure for torch and Keras)
    precision: str = "fp32"
    fields: dict = field(default_factory=dict)  # the runtime's own facts, carried by each of its rows

    def __post_init__(self):
        self.spec.sample_shape(self.layout)  # a layout the spec's samples cannot take fails here, at open

    def inputs(self, batch_size: int, seed: int = 0) -> np.ndarray:
        """Random float32 samples of the spec, drawn in its stored layout ((C, H, W) or (F,)) and given in the
        session's: every runtime times the same samples, whatever layout it takes."""
        x = np.random.default_rng(seed).random((batch_size, *self.spec.shape), dtype=np.float32)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.layout == "NHWC" else x

    def feed(self, x: np.ndarray) -> Any:
        """``x`` as the runtime takes it on the host; made before the cell's memory window opens."""
        return x

    @abstractmethod
    def cell(self, host) -> Cell:
        """The cell of the batch ``host`` (what ``feed`` returned): puts it where the model reads it (the device)."""

    @abstractmethod
    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for ``x`` as float32 numpy (the fp16 cells say how far theirs move from fp32)."""

    def half(self) -> Session | str:
        """This model at fp16 on this device (a new session), or the reason it is not benchmarked here."""
        return FP16_CPU_REASON


def check_input(declared, spec: InputSpec, layout: Layout, where) -> None:
    """Refuse a model file whose declared input (batch first; unknown dims as None, strings or -1) cannot take the
    spec's samples in ``layout``: one clear error at open instead of the runtime's at the first call."""
    want = spec.sample_shape(layout)
    dims = list(declared)[1:]
    if len(dims) != len(want) or any(isinstance(d, int) and d > 0 and d != w for d, w in zip(dims, want)):
        raise ValueError(f"{where}: the model's input has shape {list(declared)}, which does not take {layout} "
                         f"samples of shape {want} (InputSpec shape {spec.shape}); give the layout the model was "
                         f"built or exported with (NCHW, NHWC or NF)")


# --- device-side measurements the runtimes share ---------------------------------------------------------------
def copy_ms(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median time of ``fn`` (a host-to-device copy of one batch that blocks until done), in ms."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def device_memory() -> dict:
    """Device memory held by this process (nvidia-smi per process), else by the whole device, as row fields."""
    mb, scope = _process_device_mb()
    return {"peak_device_mb": mb, "peak_device_scope": scope}


def _process_device_mb() -> tuple[float | None, str]:
    if not shutil.which("nvidia-smi"):
        return None, "unavailable"
    try:
        # check=False: a failed query leaves nothing to parse; that ends in the device fallback or "unavailable".
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
        for line in out.splitlines():
            pid, used = [x.strip() for x in line.split(",")]
            if pid == str(os.getpid()):
                return float(used), "process"
        # In a container the PID namespace often hides our pid: fall back to the device (the gpu pool is exclusive).
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
        return float(out.split()[0]), "device"
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None, "unavailable"
