"""The one PyTorch training loop: every method that trains (baseline, fine-tuning, distillation, weight sharing's
centroids) runs it, in this process or in each of N data-parallel workers (``pytorch_ddp``).

Read top to bottom: where training runs (``place``: device, backend, precision, preload, all recorded), how
batches reach the device (``Batches``: the split moved to the device once, or pinned host batches copied
without blocking, a few ahead), augmentation as tensor operations on the device (``augment``), and the epoch loop
(``train``: Adam, a cosine schedule, the best validation epoch kept, autocast and fp16 loss scaling, masks kept).

Defaults keep the single-process CPU loop's numbers exactly: one process, fp32, the in-memory split indexed by
the same seeded permutation, no augmentation. With N processes each epoch's permutation and batches are the
same as with one; each worker takes every N-th sample of each global batch and scales its loss by its share, so
DistributedDataParallel's gradient average is the one-process batch's gradient (up to the order of float sums).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from compression_pipeline.frameworks.base import History, pace
from compression_pipeline.types import TrainingSetup


@dataclass(frozen=True)
class Placement:
    """Where and how one training really ran (recorded in the model's handle and the report)."""

    device: str  # "cpu" | "cuda" (the type; each worker has its own index on CUDA)
    processes: int
    backend: str | None  # torch.distributed's backend with several processes
    precision: str  # fp32 | bf16 | fp16
    preload: bool  # the training split moved to the device once
    preload_reason: str
    augment: list = field(default_factory=list)
    augment_seed: int = 0
    devices: list | None = None  # CUDA device indices, one per process
    prefetch: int = 2
    timeout_s: float = 1800.0

    def record(self) -> dict:
        return asdict(self)


def cuda_usable() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def place(setup: TrainingSetup, data_bytes: int, seed: int) -> Placement:
    """What ``setup`` means on this machine: an error when it asks for what is not here (CUDA where there is none,
    more processes than CUDA devices, bf16 on a GPU without it)."""
    if setup.device == "cuda" and not cuda_usable():
        raise RuntimeError("training.device is 'cuda' but CUDA is not usable here (a CPU build of torch, or no "
                           "device): use device 'auto' or 'cpu'")
    device = "cuda" if setup.device == "cuda" or (setup.device == "auto" and cuda_usable()) else "cpu"
    devices = None
    if device == "cuda":
        count = torch.cuda.device_count()
        devices = list(setup.devices or range(setup.processes))[: setup.processes]
        if len(devices) < setup.processes or max(devices) >= count:
            raise RuntimeError(f"training: {setup.processes} processes on CUDA devices {devices}, but this machine "
                               f"has {count} (indices 0..{count - 1}): one device per process")
    backend = None
    if setup.processes > 1:
        backend = {"auto": "nccl" if device == "cuda" else "gloo"}.get(setup.backend, setup.backend)
        if backend == "nccl" and device != "cuda":
            raise RuntimeError("training.backend 'nccl' needs CUDA, and training runs on CPU here: use 'gloo' or "
                               "'auto'")
    precision = setup.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if precision == "fp16" and device == "cpu":
        raise RuntimeError("training.precision 'fp16' needs CUDA; on CPU use 'bf16' or 'fp32'")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("training.precision 'bf16': this GPU has no bf16; use 'fp16' (with loss scaling) or 'auto'")
    preload, reason = _preload(setup, device, devices, data_bytes)
    return Placement(device=device, processes=setup.processes, backend=backend, precision=precision,
                     preload=preload, preload_reason=reason,
                     augment=[a.model_dump(mode="json") for a in setup.augment],
                     augment_seed=seed if setup.augment_seed is None else setup.augment_seed, devices=devices,
                     prefetch=setup.prefetch, timeout_s=setup.timeout_s)


def _preload(setup: TrainingSetup, device: str, devices, data_bytes: int) -> tuple[bool, str]:
    if device == "cpu":  # the split is in this process's memory already: "on the device" is where it is
        return setup.preload != "never", ("host batches (preload: never)" if setup.preload == "never" else
                                          f"in host memory ({data_bytes / 2**20:.1f} MiB): the device is the CPU")
    if setup.preload != "auto":
        return setup.preload == "always", f"preload: {setup.preload}"
    free, total = torch.cuda.mem_get_info(devices[0])
    budget = setup.memory_fraction * total
    fits = data_bytes <= budget and data_bytes <= free
    return fits, (f"{data_bytes / 2**20:.1f} MiB {'fits' if fits else 'does not fit'} in {setup.memory_fraction} "
                  f"of the device's {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")


# --- batches ----------------------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """The training tensors as the model takes them (fed, NCHW or NF), on the host, plus validation."""

    X: torch.Tensor
    y: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    soft: torch.Tensor | None = None  # a teacher's logits on X (distillation)

    def nbytes(self) -> int:
        tensors = (self.X, self.y, self.soft)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class Batches:
    """The batches of one worker, on its device: ``batches(rows)`` yields (x, y, soft) for each list of row indices.

    Preloaded, the split is copied to the device once and each batch is indexed there. Otherwise each batch is
    gathered on the host (into pinned memory on CUDA) by a background thread ``prefetch`` batches ahead and copied
    with ``non_blocking=True``, so the copy overlaps the previous step. Both give the same tensors in the same
    order: the rows decide, never the path."""

    def __init__(self, data: TrainData, device: torch.device, preload: bool, prefetch: int = 2):
        self.device, self.preload, self.prefetch = device, preload, prefetch
        tensors = {"x": data.X, "y": data.y, "soft": data.soft}
        self.pinned = not preload and device.type == "cuda"
        if preload:
            tensors = {k: None if t is None else t.to(device) for k, t in tensors.items()}
        elif self.pinned:
            tensors = {k: None if t is None else t.pin_memory() for k, t in tensors.items()}
        self.tensors = tensors

    def batches(self, rows: list[torch.Tensor]) -> Iterator[tuple]:
        if self.preload:
            for r in rows:
                r = r.to(self.device)
                yield tuple(None if t is None else t[r] for t in self.tensors.values())
            return
        yield from self._prefetched(rows)

    def _gather(self, r: torch.Tensor) -> tuple:
        out = []
        for t in self.tensors.values():
            if t is None:
                out.append(None)
                continue
            b = t.index_select(0, r)
            out.append(b.pin_memory() if self.pinned else b)
        return tuple(out)

    def _prefetched(self, rows: list[torch.Tensor]) -> Iterator[tuple]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            try:
                for r in rows:
                    if stop.is_set():
                        return
                    q.put(self._gather(r))
                q.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
                q.put(e)

        worker = threading.Thread(target=produce, daemon=True, name="batch-prefetch")
        worker.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield tuple(None if t is None else t.to(self.device, non_blocking=self.pinned) for t in item)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(0.01)


# --- augmentation -----------------------------------------------------------------------------------------------
def augment(x: torch.Tensor, ops: list[dict], gen: torch.Generator, total: int | None = None,
            positions: torch.Tensor | None = None) -> torch.Tensor:
    """``ops`` (``TrainingSetup.augment`` as dicts) applied to a batch ``x`` on its device, each sample with its
    own random draw from ``gen`` (a generator on that device). With several workers each holds ``positions`` of a
    global batch of ``total`` samples: the draws are made for all ``total`` and each worker takes its own, so the
    augmented batch is the one a single process would see."""
    n = x.shape[0] if total is None else total
    pos = torch.arange(x.shape[0], device=x.device) if positions is None else positions.to(x.device)
    for op in ops:
        kind = op["op"]
        if kind in ("random_crop", "hflip", "vflip") and x.dim() != 4:
            raise ValueError(f"augmentation {kind!r} needs images (N, C, H, W); these samples are {tuple(x.shape)}")
        if kind == "random_crop":
            p = op["padding"]
            offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=gen, device=x.device)[pos]
            h, w = x.shape[2], x.shape[3]
            padded = F.pad(x, (p, p, p, p), mode="reflect" if op["fill"] == "reflect" else "constant")
            rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, :, None]
            cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, :]
            batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
        elif kind in ("hflip", "vflip"):
            flip = (torch.rand(n, generator=gen, device=x.device) < op["p"])[pos]
            x = torch.where(flip[:, None, None, None], x.flip(3 if kind == "hflip" else 2), x)
        elif kind == "noise":
            noise = torch.randn((n, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)[pos]
            x = x + op["std"] * noise
        else:
            raise ValueError(f"unknown augmentation {kind!r}")
    return x


# --- the loop ---------------------------------------------------------------------------------------------------
@dataclass
class Loop:
    """What one run of ``train`` needs besides the model and the data."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    temperature: float = 4.0
    alpha: float = 0.7
    keep_zero: bool = False
    schedule: bool = True  # the cosine schedule (weight sharing's centroid fine-tune keeps a constant rate)
    keep_best: bool = True  # evaluate every epoch and keep the best validation epoch's weights
    params: Callable | None = None  # module -> the parameters to train (default: all)


def epoch_rows(n: int, batch_size: int, gen: torch.Generator, rank: int = 0, world: int = 1):
    """One epoch's batches: the seeded permutation cut into global batches of ``batch_size``; each worker's rows
    are every ``world``-th of a global batch, from ``rank`` (a global batch smaller than ``world`` is skipped by
    every worker: a worker without samples would stall the others). Yields (rows, positions, global size)."""
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        idx = order[i: i + batch_size]
        if world > 1 and len(idx) < world:
            continue
        pos = torch.arange(rank, len(idx), world)
        yield (idx if world == 1 else idx[pos]), pos, len(idx)


def train(model, data: TrainData, loop: Loop, placement: Placement, *, device: torch.device | None = None,
          rank: int = 0, world: int = 1, wrapped=None, log: Callable[[str], object] | None = None) -> History:
    """Train ``model`` in place (on ``device``, where it already is); ``wrapped``: the module forward and backward
    go through (DistributedDataParallel around ``model``), else ``model`` itself. Rank 0 evaluates, logs, and keeps
    the best validation epoch's weights (every worker's weights are the same after each step). Returns the
    history with the placement, epochs, wall time and samples per second."""
    import torch.distributed as dist

    t_start = time.perf_counter()
    device = device or next(model.parameters()).device
    net = wrapped or model
    # Randomness inside the model (dropout) is drawn per worker: rank r seeds seed + r (rank 0: one process's seed),
    # so workers do not share masks; a model with dropout matches one process in distribution, not bit for bit.
    torch.manual_seed(loop.seed + rank)
    params = list(loop.params(model)) if loop.params else list(model.parameters())
    opt = torch.optim.Adam(params, lr=loop.lr)
    gen = torch.Generator().manual_seed(loop.seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(loop.epochs, 1)) if loop.schedule else None
    masks = [(p, p != 0) for p in model.parameters() if loop.keep_zero and p.dim() >= 2 and bool((p == 0).any())]
    aug_gen = torch.Generator(device=device).manual_seed(placement.augment_seed) if placement.augment else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(placement.precision)
    scaler = torch.amp.GradScaler(device.type) if placement.precision == "fp16" else None
    batches = Batches(data, device, placement.preload, placement.prefetch)
    n, seen, train_s = len(data.X), 0, 0.0
    history, best = History(), (-1.0, None)
    for epoch in range(loop.epochs):
        if world == 1:
            _take_freed_cores(log)
        model.train()
        t0 = time.perf_counter()
        rows = list(epoch_rows(n, loop.batch_size, gen, rank, world))
        total = torch.zeros((), dtype=torch.float64)
        for (xb, yb, sb), (idx, pos, size) in zip(batches.batches([r[0] for r in rows]), rows, strict=True):
            if placement.augment:
                xb = augment(xb, placement.augment, aug_gen, size if world > 1 else None, pos if world > 1 else None)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = net(xb)
                loss = F.cross_entropy(logits.float(), yb)
                if sb is not None:
                    t = loop.temperature
                    kd = F.kl_div(F.log_softmax(logits.float() / t, 1), F.softmax(sb / t, 1), reduction="batchmean")
                    loss = loop.alpha * kd * t ** 2 + (1 - loop.alpha) * loss
            # DDP averages gradients over workers: weighting each worker's mean by its share of the global batch
            # makes that average the global batch's mean gradient (the same as one process).
            step_loss = loss * (len(idx) * world / size) if world > 1 else loss
            opt.zero_grad()
            if scaler is not None:
                scaler.scale(step_loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                step_loss.backward()
                opt.step()
            if masks:
                with torch.no_grad():
                    for p, mask in masks:
                        p.mul_(mask)
            total += loss.item() * len(idx)
            seen += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s += time.perf_counter() - t0
        if world > 1:
            dist.all_reduce(total)
        val_acc = _accuracy(model, data.X_val, data.y_val, device) if rank == 0 and loop.keep_best else None
        if sched is not None:
            sched.step()
        history.append({"epoch": epoch + 1, "loss": float(total) / n, "val_accuracy": val_acc})
        if val_acc is not None and val_acc > best[0]:  # the best validation epoch's weights, not merely the last
            best = (val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if log and rank == 0:
            log(f"epoch {epoch + 1}/{loop.epochs}: loss {float(total) / n:.4f}"
                + ("" if val_acc is None else f", val accuracy {val_acc:.4f}")
                + f" ({pace(epoch + 1, loop.epochs, t_start)})")
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    if world > 1:  # every worker's sample count, so samples/s is the whole job's
        seen_t = torch.tensor(seen, dtype=torch.float64)
        dist.all_reduce(seen_t)
        seen = int(seen_t)
    history.training = {**placement.record(), "epochs": loop.epochs, "threads": torch.get_num_threads(),
                        "train_s": round(train_s, 3),
                        "wall_s": round(time.perf_counter() - t_start, 3), "samples": seen,
                        "samples_per_s": round(seen / train_s, 1) if train_s > 0 else None,
                        "best_epoch": (max(range(len(history)), key=lambda i: history[i]["val_accuracy"]) + 1
                                       if loop.keep_best and history and rank == 0 else None)}
    return history


def _take_freed_cores(log) -> None:
    """Between epochs, the thread count the launcher gives this process now (a phase beside it ended)."""
    from compression_pipeline.benchmark import shared_threads

    n = shared_threads()
    if n and n != torch.get_num_threads():
        if log:
            log(f"now on {n} threads (was {torch.get_num_threads()}): the launcher gave this phase freed cores")
        torch.set_num_threads(n)


def _accuracy(model, X: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 256) -> float:
    """Validation accuracy in fp32, in batches of 256 (as ``PyTorch.predict``)."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(X), batch_size):
            pred = model(X[i: i + batch_size].to(device)).float().argmax(1).cpu()
            correct += int((pred == y[i: i + batch_size]).sum())
    return correct / max(len(X), 1)


def threads_per_worker(processes: int) -> int:
    """This process's thread count shared out among ``processes`` workers (at least one each)."""
    return max(1, math.floor(torch.get_num_threads() / processes))
