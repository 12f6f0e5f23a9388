"""The PyTorch adapter: any ``torch.nn.Module`` classifier (the zoo's, torchvision's, timm's, the user's own)."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compression_pipeline.frameworks import pytorch_io
from compression_pipeline.frameworks.base import Fit, Framework
from compression_pipeline.frameworks.pytorch_build import check_io, construct, describe, device_of, load_weights
from compression_pipeline.types import ImportModel, InputSpec


def _feed(X: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Stored samples -> what a PyTorch model takes (normalized; images stay NCHW)."""
    from compression_pipeline.data import feed

    return feed(X, spec, spec.default_layout("torch"))


class PyTorch(Framework):
    name = "torch"
    suffix = "safetensors"

    def build(self, source, spec: InputSpec, seed: int | None = None, data_root: Path | None = None) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)  # global, as zoo.build_torch: the same seed gives the same initial weights
        model = construct(source, spec)
        if isinstance(source, ImportModel) and source.weights:
            load_weights(model, data_root, source.weights, describe(source))
        check_io(model, spec, describe(source))
        return model

    def save(self, model, path: Path) -> None:
        pytorch_io.save(model, path)

    def load(self, path: Path) -> nn.Module:
        return pytorch_io.load(path)

    def copy(self, model) -> nn.Module:
        return copy.deepcopy(model)

    def set_threads(self, threads: int | None) -> None:
        """``threads`` (None: one per core), or the launcher's share of the cores where it gives one."""
        from compression_pipeline.benchmark import resolve_threads, shared_threads

        torch.set_num_threads(shared_threads() or resolve_threads(threads))

    def layout(self, spec: InputSpec):
        return spec.default_layout("torch")

    def fit(self, model, splits, spec: InputSpec, fit: Fit, teacher=None, keep_zero: bool = False, log=None):
        """The one training loop (``pytorch_train``): seeded shuffling, Adam with a cosine schedule, the best
        validation epoch's weights kept; with ``keep_zero``, weight tensors (2+ dimensions: convolutions, dense
        layers) keep their zeros: the masks are re-applied after every optimizer step (biases and norm parameters
        are not masked). ``fit.setup`` says where: this process on its device, or N data-parallel workers
        (``pytorch_ddp``); the model is back on its own device afterwards."""
        return train(model, splits, spec, fit, teacher=teacher, keep_zero=keep_zero, log=log)

    def predict(self, model, X: np.ndarray, spec: InputSpec, batch_size: int = 256) -> np.ndarray:
        model.eval()
        device, out = device_of(model), []
        with torch.inference_mode():
            for i in range(0, len(X), batch_size):
                out.append(model(torch.from_numpy(_feed(X[i: i + batch_size], spec)).to(device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, spec.num_classes), np.float32)

    def kernels(self, model) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().numpy().copy() for name, p in _kernels(model).items()}

    def set_kernels(self, model, kernels: dict[str, np.ndarray]) -> None:
        params = _kernels(model)
        unknown = sorted(set(kernels) - set(params))
        if unknown:
            raise KeyError(f"no convolution or dense kernels named {unknown} in the model")
        with torch.no_grad():
            for name, value in kernels.items():
                params[name].copy_(torch.as_tensor(value, dtype=params[name].dtype))

    def count_params(self, model) -> tuple[int, int]:
        total = nonzero = 0
        for p in model.parameters():
            total += p.numel()
            nonzero += int((p != 0).sum())
        return total, nonzero

    def count_macs(self, model, spec: InputSpec) -> int:
        """Weight MACs of one sample, measured with forward hooks on every convolution (output elements x input
        channels per group x kernel size) and dense layer (output elements x input features); bias adds,
        activations and attention's activation-by-activation products are not counted."""
        macs = []

        def hook(module, _inputs, out):
            if isinstance(module, nn.Linear):
                macs.append(out.numel() * module.in_features)
            else:
                macs.append(out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size))

        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        handles = [m.register_forward_hook(hook) for m in layers]
        training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                model(torch.zeros((1, *spec.sample_shape(self.layout(spec))), device=device_of(model)))
        finally:
            model.train(training)
            for h in handles:
                h.remove()
        return int(sum(macs))

    def export_onnx(self, model, path: Path, spec: InputSpec):
        """The dynamo exporter with a batch-2 example (a batch-1 example specializes the batch dimension to 1)."""
        import onnx

        from compression_pipeline.onnx_tools import IR_VERSION

        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        layout = self.layout(spec)
        example = torch.zeros((2, *spec.sample_shape(layout)), device=device_of(model))
        training = model.training
        model.eval()
        try:
            program = torch.onnx.export(model, (example,), input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
                                        verbose=False)
        finally:
            model.train(training)
        proto = program.model_proto
        proto.ir_version = min(proto.ir_version, IR_VERSION)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        return layout


def train(model, splits, spec: InputSpec, fit: Fit, teacher=None, keep_zero: bool = False, log=None, params=None,
          schedule: bool = True, keep_best: bool = True):
    """``PyTorch.fit`` with the loop's other knobs: ``params`` (module -> the parameters to train), ``schedule``
    (cosine; else a constant rate), ``keep_best`` (evaluate each epoch, keep the best). Weight sharing's centroid
    fine-tune uses them."""
    from compression_pipeline.frameworks import pytorch_ddp, pytorch_train
    from compression_pipeline.types import TrainingSetup

    original = device_of(model)
    X = torch.from_numpy(_feed(splits["X_train"], spec))
    data = pytorch_train.TrainData(X=X, y=torch.from_numpy(np.asarray(splits["y_train"])).long(),
                                   X_val=torch.from_numpy(_feed(splits["X_val"], spec)),
                                   y_val=torch.from_numpy(np.asarray(splits["y_val"])).long())
    if teacher is not None:  # frozen and unaugmented: its logits are computed once
        teacher.eval()
        with torch.no_grad():  # not inference_mode: these logits are used in the loss, outside that mode
            data.soft = torch.cat([teacher(X[i: i + 512].to(device_of(teacher))).float().cpu()
                                   for i in range(0, len(X), 512)])
    placement = pytorch_train.place(fit.setup or TrainingSetup(), data.nbytes(), fit.seed)
    loop = pytorch_train.Loop(epochs=fit.epochs, batch_size=fit.batch_size, lr=fit.lr, seed=fit.seed,
                              temperature=fit.temperature, alpha=fit.alpha, keep_zero=keep_zero, schedule=schedule,
                              keep_best=keep_best, params=params)
    if placement.processes > 1:
        return pytorch_ddp.fit(model, data, loop, placement, log=log)
    device = torch.device("cuda", placement.devices[0]) if placement.device == "cuda" else torch.device("cpu")
    model.to(device)
    try:
        return pytorch_train.train(model, data, loop, placement, device=device, log=log)
    finally:
        model.to(original)


def _kernels(model) -> dict[str, nn.Parameter]:
    """The weights of every convolution and dense layer, by parameter name (``<module path>.weight``)."""
    return {f"{name}.weight" if name else "weight": m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight is not None}
