"""PyTorch training and evaluation on the preprocessed splits (CPU or GPU, seeded)."""

from __future__ import annotations

import numpy as np

from compression_pipeline.data import as_images


def set_threads(threads: int | None) -> None:
    """Always set torch's thread count (None: one per core). The count changes the order of float sums, hence the
    trained weights: leaving it to whatever ran before in the process makes training irreproducible."""
    import os

    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def train(module, splits: dict, image_shape, epochs: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
          teacher=None, temperature: float = 4.0, alpha: float = 0.7, log=None):
    """Train ``module`` with Adam and cross-entropy; with a ``teacher``, add distillation (KL at ``temperature``).

    The weights of the epoch with the best validation accuracy are kept. Returns per-epoch history: train
    loss and validation accuracy.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    X = torch.from_numpy(as_images(splits["X_train"], image_shape))
    y = torch.from_numpy(splits["y_train"]).long()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    history, best = [], (-1.0, None)
    soft = None
    if teacher is not None:  # the teacher is frozen and sees no augmentation: its logits are computed once
        teacher.eval()
        with torch.no_grad():
            soft = torch.cat([teacher(X[i: i + 512]) for i in range(0, len(X), 512)])
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(len(X), generator=gen)
        total = 0.0
        for i in range(0, len(X), batch_size):
            idx = order[i: i + batch_size]
            logits = module(X[idx])
            loss = F.cross_entropy(logits, y[idx])
            if soft is not None:
                kd = F.kl_div(F.log_softmax(logits / temperature, 1), F.softmax(soft[idx] / temperature, 1),
                              reduction="batchmean") * temperature ** 2
                loss = alpha * kd + (1 - alpha) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val_acc = accuracy(predict(module, splits["X_val"], image_shape), splits["y_val"])
        sched.step()
        history.append({"epoch": epoch + 1, "loss": total / len(X), "val_accuracy": val_acc})
        if val_acc > best[0]:  # keep the weights of the best validation epoch, not merely the last one
            best = (val_acc, {k: v.detach().clone() for k, v in module.state_dict().items()})
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(X):.4f}, val accuracy {val_acc:.4f}")
    if best[1] is not None:
        module.load_state_dict(best[1])
    module.eval()
    return history


def predict(module, X: np.ndarray, image_shape, batch_size: int = 256) -> np.ndarray:
    """Logits for flat samples ``X`` (float32 numpy)."""
    import torch

    module.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            out.append(module(torch.from_numpy(as_images(X[i: i + batch_size], image_shape))).numpy())
    return np.concatenate(out)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())
