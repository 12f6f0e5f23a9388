"""PyTorch eager: a ``torch.nn.Module`` in inference mode, on CUDA where a real allocation works.

Threads are set with ``torch.set_num_threads`` and the count in effect is recorded. On CUDA each timed call ends
with ``torch.cuda.synchronize()``, the input batch is on the device before the clock starts (``h2d_ms`` times its
copy apart) and ``peak_device_mb`` is the torch allocator's peak during the cell. The fp16 session is a ``.half()``
copy of the module, on CUDA only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from compression_pipeline.benchmark import resolve_threads
from compression_pipeline.runtimes.base import FP16_CPU_REASON, Cell, Session, copy_ms
from compression_pipeline.types import InputSpec, Layout


def cuda_usable() -> bool:
    """CUDA as torch sees it, proven by a real allocation (is_available() alone can be true on a broken driver)."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        torch.zeros(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


def open(module, spec: InputSpec, layout: Layout, device: str = "cpu", threads: int | None = None,
         load_s: float = 0.0) -> TorchSession:
    """A session of ``module`` (moved to the device, in eval mode), which takes ``spec``'s samples in ``layout``;
    ``load_s``: how long the caller took to load it (the module is the session: nothing is created here)."""
    import torch

    use_cuda = device in ("cuda", "auto") and cuda_usable()
    if device == "cuda" and not use_cuda:
        raise RuntimeError("device 'cuda' was asked for, but torch sees no usable CUDA device")
    torch.set_num_threads(resolve_threads(threads))
    dev = "cuda" if use_cuda else "cpu"
    return TorchSession(module=module.to(dev).eval(), dtype=torch.float32, spec=spec, layout=layout, provider=dev,
                        device=dev, threads=torch.get_num_threads(), load_s=load_s)


@dataclass(kw_only=True)
class TorchSession(Session):
    runtime: ClassVar[str] = "torch"
    module: Any  # torch.nn.Module
    dtype: Any  # torch.float32 | torch.float16: what inputs are cast to

    def feed(self, x: np.ndarray):
        import torch

        return torch.from_numpy(x).to(self.dtype)

    def cell(self, host) -> Cell:
        import torch

        m, cuda = self.module, self.device == "cuda"
        x = host.to(self.device)

        def call():
            with torch.inference_mode():
                m(x)
            if cuda:
                torch.cuda.synchronize()

        if not cuda:
            return Cell(call)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return Cell(call, {"h2d_ms": copy_ms(lambda: (host.to(self.device), torch.cuda.synchronize()))},
                    lambda: {"peak_device_mb": torch.cuda.max_memory_allocated() / 2 ** 20,
                             "peak_device_scope": "torch allocator"})

    def outputs(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(self.feed(x).to(self.device)).float().cpu().numpy()

    def half(self) -> Session | str:
        if self.device != "cuda":
            return FP16_CPU_REASON
        import torch

        return replace(self, precision="fp16", module=copy.deepcopy(self.module).half(), dtype=torch.float16)
