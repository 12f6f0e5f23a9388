"""The environment a number was measured in: CPU and its ISA flags, GPU, threads, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

LIBRARIES = ("compression_pipeline", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorflow", "tensorflow-cpu",
             "dagster", "great_expectations", "numpy", "scikit-learn", "torch-pruning")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpu() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                if flags:
                    break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags],
            "machine": platform.machine()}


def _gpu() -> dict | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (subprocess.SubprocessError, OSError):
        return None
    if not out:
        return None
    name, driver, memory = [x.strip() for x in out[0].split(",")]
    info = {"name": name, "driver": driver, "memory": memory, "count": len(out)}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def capture(threads: int | None = None) -> dict:
    return {"cpu": _cpu(), "gpu": _gpu(), "threads": threads or os.cpu_count(), "platform": platform.platform(),
            "libraries": versions()}
