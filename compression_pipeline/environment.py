"""The environment a number was measured in: CPU and its ISA flags, GPU, threads, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

LIBRARIES = ("compression_pipeline", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorflow", "tensorflow-cpu",
             "dagster", "great_expectations", "numpy", "scikit-learn", "torch-pruning", "matplotlib")
ISA_FLAGS = ("sse4_2", "fma", "f16c", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")


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
    info.update(_nvidia_smi_extras())
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def _nvidia_smi_extras() -> dict:
    """The CUDA version the driver supports (nvidia-smi's header) and the compute capability, when shown."""
    out = {}
    try:
        # check=False: a failed nvidia-smi prints no "CUDA Version:", so nothing is recorded.
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False).stdout
        if "CUDA Version:" in text:
            out["driver_cuda"] = text.split("CUDA Version:", 1)[1].split()[0]
        cap = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        if cap.returncode == 0 and cap.stdout.strip():
            out["compute_capability"] = cap.stdout.strip().splitlines()[0]
    except (subprocess.SubprocessError, OSError):
        pass
    return out


def runtimes() -> dict:
    """What the runtimes offer here: ORT's providers (built in, and usable), torch's threads and CUDA build."""
    out = {}
    try:
        import onnxruntime as ort

        from compression_pipeline.onnx_tools import cuda_usable

        out["onnxruntime_providers_available"] = ort.get_available_providers()
        out["onnxruntime_cuda_usable"] = cuda_usable()
        try:  # the CUDA major the onnxruntime-gpu wheel was built for (its libraries must match it)
            from onnxruntime.capi import build_and_package_info

            out["onnxruntime_cuda_build"] = getattr(build_and_package_info, "cuda_version", None)
        except ImportError:
            pass
    except ImportError:
        pass
    try:
        import torch

        out.update(torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads(),
                   torch_cuda_build=torch.version.cuda, torch_cuda_available=torch.cuda.is_available())
    except ImportError:
        pass
    return out


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def capture(threads: int | None = None) -> dict:
    """``threads``: the count set for the runtimes (None: one per usable core, as the harness resolves it)."""
    from compression_pipeline.benchmark import resolve_threads

    return {"cpu": _cpu(), "gpu": _gpu(), "threads": resolve_threads(threads), "threads_requested": threads,
            "platform": platform.platform(), "libraries": versions(), "runtimes": runtimes(),
            # other work on the machine while measuring: a load above the core count means shared, noisy timings
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
