"""Training samples per second on 1 and 2 data-parallel processes (gloo on CPU, NCCL on GPUs with --device cuda),
both in one run, on the digits and the zoo CNN; one torch thread per process.

    python scripts/train_throughput.py                      # CPU: 1 process vs 2 gloo workers
    python scripts/train_throughput.py --device cuda        # GPUs: 1 vs 2 NCCL workers (needs 2 GPUs)

samples/s counts the training steps only (validation and worker start-up excluded); job s is the whole fit,
start-up of the workers included.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--processes", default="1,2")
    args = ap.parse_args(argv)

    import time

    import torch

    from compression_pipeline import data
    from compression_pipeline.frameworks import get
    from compression_pipeline.frameworks.base import Fit
    from compression_pipeline.recipe import Dataset
    from compression_pipeline.types import TrainingSetup, ZooModel

    ds = Dataset()
    parts, spec = data.preprocess(data.load_raw(ds, "."), ds)
    fw = get("torch")
    print(f"digits: {len(parts['y_train'])} training rows, zoo CNN width {args.width}, {args.epochs} epochs, "
          f"batch {args.batch_size}, device {args.device}, {os.cpu_count()} cores")
    print(f"{'processes':>9} {'backend':>8} {'samples/s':>10} {'train s':>8} {'job s':>7} {'test acc':>9}")
    for n in [int(p) for p in args.processes.split(",")]:
        torch.set_num_threads(n)  # shared out: one thread per worker
        model = fw.build(ZooModel(arch="cnn", width=args.width), spec, seed=0)
        t0 = time.perf_counter()
        h = fw.fit(model, parts, spec, Fit(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, seed=0,
                                           setup=TrainingSetup(device=args.device, processes=n)))
        job = time.perf_counter() - t0
        acc = float((fw.predict(model, parts["X_test"], spec).argmax(1) == parts["y_test"]).mean())
        t = h.training
        print(f"{n:>9} {t['backend'] or '-':>8} {t['samples_per_s']:>10,.0f} {t['train_s']:>8.2f} {job:>7.2f} "
              f"{acc:>9.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
