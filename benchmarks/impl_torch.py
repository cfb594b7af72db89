"""Reference: PyTorch, eager (``torch-eager``) and with ``torch.compile(model)`` (``torch-compile``).

The usual PyTorch loop: an ``nn.Sequential`` in NCHW, ``F.cross_entropy``, ``zero_grad`` /
``backward`` / ``step`` once per batch. The data set sits on the device as tensors and each
epoch gathers a fresh permutation once (as the JAX loops do). Threads: PyTorch's default
(reported as ``torch_threads``).

``precision="bfloat16"``: PyTorch's automatic mixed precision as its documentation recommends,
``torch.autocast(device_type, dtype=torch.bfloat16)`` around the forward pass and the loss
(convolutions and linear layers run in bfloat16; autocast computes the cross-entropy in
float32), the backward pass and the optimizer step outside it; the parameters and the optimizer
state stay float32. No ``GradScaler``: bfloat16 has float32's exponent range.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import torch
import torch.nn.functional as F
from torch import nn


def network(workload: str) -> nn.Module:
    if workload == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    if workload == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if workload == "wide":
        conv = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]
        return nn.Sequential(
            *conv(1, 128), *conv(128, 128), nn.MaxPool2d(2),
            *conv(128, 256), *conv(256, 256), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(256 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 10))
    raise ValueError(f"unknown workload {workload!r}")


class Loop:
    def __init__(self, impl, workload, data, settings):
        self.w = workload
        self.dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(settings.seed)
        # NHWC (N, 28, 28, 1) -> NCHW (N, 1, 28, 28); the MLP takes flat (N, 784).
        prep = (lambda x: x.reshape(len(x), 784)) if workload.name == "mlp" else \
            (lambda x: x.transpose(0, 3, 1, 2))
        tensor = lambda a: torch.from_numpy(a.copy()).to(self.dev)
        self.x, self.y = tensor(prep(data.x_train)), tensor(data.y_train).long()
        self.x_test, self.y_test = tensor(prep(data.x_test)), tensor(data.y_test).long()
        self.module = network(workload.name).to(self.dev)
        if impl == "torch-compile":
            # A cold compilation, as JAX's (whose persistent cache is off by default): Inductor's
            # on-disk caches go to a fresh directory, removed at exit.
            cache = tempfile.mkdtemp(prefix="fnn-bench-inductor-")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            atexit.register(shutil.rmtree, cache, ignore_errors=True)
        self.model = torch.compile(self.module) if impl == "torch-compile" else self.module
        params = self.module.parameters()
        self.opt = torch.optim.Adam(params, lr=workload.lr) if workload.optimizer == "adam" else \
            torch.optim.SGD(params, lr=workload.lr, momentum=workload.momentum)
        self.gen = torch.Generator(device=self.dev).manual_seed(settings.seed + 1)
        self.bf16 = settings.precision == "bfloat16"

    def autocast(self):
        """bfloat16 autocast on this device for the bfloat16 variant; a no-op context for float32."""
        return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.bf16)

    def start_epoch(self, epoch: int) -> None:
        n, b = len(self.x), self.w.batch
        steps = n // b
        idx = torch.randperm(n, device=self.dev, generator=self.gen)[: steps * b]
        self.xb = self.x[idx].view(steps, b, *self.x.shape[1:])
        self.yb = self.y[idx].view(steps, b)

    def step(self, i: int):
        self.model.train()
        with self.autocast():
            loss = F.cross_entropy(self.model(self.xb[i]), self.yb[i])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def sync(self, handle) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def test_accuracy(self) -> float:
        self.model.eval()
        hits = 0
        for j in range(0, len(self.x_test), 1000):
            with self.autocast():
                logits = self.model(self.x_test[j:j + 1000])
            hits += int((logits.argmax(1) == self.y_test[j:j + 1000]).sum())
        return hits / len(self.x_test)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def device(self) -> str:
        return torch.cuda.get_device_name(0) if self.dev.type == "cuda" else "cpu"

    def info(self) -> dict:
        return {"torch_threads": torch.get_num_threads()}


def build(impl: str, workload, data, settings):
    return Loop(impl, workload, data, settings)
