"""``python -m benchmark speed``: images/s of one KD training step three ways, in one process.

(a) ltkd-bench's path: uint8 data resident on the device, batched crop/flip, channels_last, bf16
    autocast and fused SGD on CUDA, no host sync per step, teacher under ``inference_mode``;
(b) the usual eager pipeline: torchvision transforms on PIL images in a DataLoader, fp32, teacher in
    ``no_grad``, ``loss.item()`` logged every step (how most KD codebases are written);
(c) the compute bound: (a)'s forward/backward/step on one batch already on the device.
Data are synthetic CIFAR-shaped tensors (throughput does not depend on pixel values).
"""
import argparse
import json
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import methods
from methods.kd import kd_loss

from .config import TrainRecipe
from .data import TensorData
from .device import resolve_device
from .models import create_model, feature_dim
from .runner import method_context
from .train import Trainer

__all__ = ["measure", "measure_cell", "CELL_CASES", "main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t0


def _models(teacher: str, student: str, num_classes: int, in_chans: int, device: torch.device,
            channels_last: bool):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    t = create_model(teacher, num_classes=num_classes, in_chans=in_chans).to(device, memory_format=fmt).eval()
    s = create_model(student, num_classes=num_classes, in_chans=in_chans).to(device, memory_format=fmt).train()
    for p in t.parameters():
        p.requires_grad_(False)
    return t, s


def _kd(student: nn.Module, teacher: nn.Module, num_classes: int, device: torch.device):
    ctx = methods.MethodContext(class_counts=[100] * num_classes, student_dim=feature_dim(student),
                                teacher_dim=feature_dim(teacher))
    return methods.create_method("kd", ctx).to(device)


@dataclass
class _Synthetic:
    """Synthetic CIFAR-shaped uint8 images (N, H, W) or (N, H, W, C) and labels: throughput does not depend
    on pixel values."""

    raw: np.ndarray
    labels: np.ndarray
    num_classes: int
    in_chans: int
    image_size: int

    @classmethod
    def make(cls, n_images: int, image_size: int, in_chans: int, num_classes: int) -> "_Synthetic":
        """``n_images`` random images and labels from a fixed seed."""
        rng = np.random.default_rng(0)
        shape = (n_images, image_size, image_size) + ((in_chans,) if in_chans > 1 else ())
        raw = rng.integers(0, 256, size=shape, dtype=np.uint8)
        return cls(raw, rng.integers(0, num_classes, size=n_images), num_classes, in_chans, image_size)

    @property
    def mean(self) -> tuple:
        """Per-channel normalisation mean (any fixed value: the pixels are random)."""
        return (0.5,) * self.in_chans

    @property
    def std(self) -> tuple:
        """Per-channel normalisation std."""
        return (0.25,) * self.in_chans

    @property
    def pad(self) -> int:
        """Random-crop padding, as the CIFAR (32 px) and Fashion-MNIST (28 px) recipes use."""
        return 4 if self.image_size >= 32 else 2


class _PILImages(Dataset):
    """The synthetic images as PIL images through torchvision transforms: the usual eager input pipeline."""

    def __init__(self, data: _Synthetic, transform: Callable) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data.raw)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data.raw[i])), int(self.data.labels[i])


def measure(teacher: str = "cifar_cnn_small", student: str = "cifar_cnn_tiny", image_size: int = 28,
            in_chans: int = 1, num_classes: int = 10, batch_size: int = 64, steps: int = 100,
            device: Union[str, torch.device] = "cpu", workers: Optional[int] = None, n_images: int = 4096,
            warmup: int = 30, compile: bool = False, rounds: int = 5) -> Dict[str, Any]:
    """Images/s of paths (a), (b), (c) and the ratios a/b and a/c (``compile``: torch.compile for a and c).

    Each path is warmed up, then timed in ``rounds`` interleaved rounds of ``steps / rounds`` steps; the
    median round counts."""

    device = torch.device(device)
    data = _Synthetic.make(n_images, image_size, in_chans, num_classes)
    out: Dict[str, Any] = {"teacher": teacher, "student": student, "batch_size": batch_size, "steps": steps,
                           "input": f"{in_chans}x{image_size}x{image_size}", "device": str(device),
                           "data": "synthetic CIFAR-shaped uint8 tensors (throughput does not depend on pixels)",
                           "torch": torch.__version__, "threads": torch.get_num_threads(), "compile": compile}
    step_a, step_c = _harness_steps(data, teacher, student, batch_size, device, compile)
    step_b, nw = _eager_step(data, teacher, student, batch_size, device, workers)
    # interleaved rounds (a, c, b, a, c, b, ...) and the median: machine drift hits every path alike
    paths = {"a_ltkd_ips": step_a, "c_compute_ips": step_c, "b_eager_ips": step_b}
    out.update(_interleaved(paths, steps, rounds, warmup, batch_size, device))
    out["rounds"] = rounds
    out["b_workers"] = nw
    out["a_over_b"] = out["a_ltkd_ips"] / out["b_eager_ips"]
    out["a_over_c"] = out["a_ltkd_ips"] / out["c_compute_ips"]
    return out


def _harness_steps(data: _Synthetic, teacher: str, student: str, batch_size: int, device: torch.device,
                   compile: bool) -> Tuple[Callable[[], None], Callable[[], None]]:
    """(a) the harness's own ``Trainer.train_step`` on device-resident data, and (c) the same step on one
    batch already on the device (the compute bound)."""
    t, s = _models(teacher, student, data.num_classes, data.in_chans, device, channels_last=True)
    method = _kd(s, t, data.num_classes, device)
    size, n_images = data.image_size, len(data.raw)
    images = torch.from_numpy(data.raw).view(n_images, size, size, data.in_chans).permute(0, 3, 1, 2)
    tensors = TensorData(images, torch.from_numpy(data.labels), data.mean, data.std, device, padding=data.pad)
    tensors.num_classes, tensors.class_counts = data.num_classes, [100] * data.num_classes
    recipe = TrainRecipe(epochs=1, batch_size=batch_size, lr=0.05, compile=compile)
    trainer = Trainer(recipe, tensors, tensors, seed=0, device=device, teacher=t, progress=False, log=lambda m: None)
    trainer.add("kd", s, method)
    batches = _endless_batches(tensors, batch_size)

    def step_a() -> None:
        trainer.train_step(*next(batches), 1)

    xc, yc = next(batches)

    def step_c() -> None:
        trainer.train_step(xc, yc, 1)

    return step_a, step_c


def _endless_batches(data: TensorData, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Training batches of epochs 1, 2, ... in the harness's order; a ValueError when an epoch has none."""
    epoch = 0
    while True:
        epoch += 1
        empty = True
        for batch in data.train_batches(batch_size, seed=0, epoch=epoch):
            empty = False
            yield batch
        if empty:
            raise ValueError(f"speed: no full batch of {batch_size} in the synthetic data; use a smaller --batch-size")


def _eager_step(data: _Synthetic, teacher: str, student: str, batch_size: int, device: torch.device,
                workers: Optional[int]) -> Tuple[Callable[[], None], int]:
    """(b) the usual pipeline: PIL + torchvision transforms + DataLoader, fp32, ``no_grad`` teacher, ``.item()``
    every step; returns the step and its DataLoader workers."""
    t2, s2 = _models(teacher, student, data.num_classes, data.in_chans, device, channels_last=False)
    opt2 = torch.optim.SGD(s2.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    tf = transforms.Compose([transforms.RandomCrop(data.image_size, padding=data.pad),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(data.mean, data.std)])
    nw = workers if workers is not None else min(8, max(1, (os.cpu_count() or 2) // 2))
    loader = DataLoader(_PILImages(data, tf), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=nw,
                        pin_memory=device.type == "cuda", persistent_workers=nw > 0)
    st = {"it": iter(loader), "log": 0.0}

    def step_b() -> None:
        try:
            x, y = next(st["it"])
        except StopIteration:
            st["it"] = iter(loader)
            x, y = next(st["it"])
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            zt = t2(x)
        zs = s2(x)
        loss = 0.1 * nn.functional.cross_entropy(zs, y) + 0.9 * kd_loss(zs, zt, 4.0)
        opt2.zero_grad()
        loss.backward()
        opt2.step()
        st["log"] += loss.item()

    return step_b, nw


def _interleaved(paths: Dict[str, Callable[[], None]], steps: int, rounds: int, warmup: int, batch_size: int,
                 device: torch.device) -> Dict[str, float]:
    """Images/s of each path: all warmed up, then ``rounds`` rounds of every path in turn; the median round."""
    for fn in paths.values():
        _timed(fn, 0, warmup, device)
    per_round = max(1, steps // rounds)
    times: Dict[str, list] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, fn in paths.items():
            times[key].append(per_round * batch_size / _timed(fn, per_round, 0, device))
    return {key: float(np.median(values)) for key, values in times.items()}


#: The two cells ``speed --grid`` measures: the quick suite's pair, and the literature's CIFAR-100 pair.
CELL_CASES = {
    "quick": dict(teacher="cifar_cnn_small", student="cifar_cnn_tiny", image_size=28, in_chans=1, num_classes=10,
                  batch_size=128),
    "resnet32x4->resnet8x4": dict(teacher="cifar_resnet32x4", student="cifar_resnet8x4", image_size=32, in_chans=3,
                                  num_classes=100, batch_size=64),
}


def measure_cell(teacher: str, student: str, image_size: int, in_chans: int, num_classes: int, batch_size: int,
                 method_names: Optional[list] = None, steps: int = 10, warmup: int = 2,
                 device: Union[str, torch.device] = "cpu", rounds: int = 3) -> Dict[str, Any]:
    """Seconds per batch for a cell of ``method_names`` trained in lockstep (one data stream, one teacher
    forward) vs one at a time (a trainer per method), with the harness's own :class:`Trainer`; interleaved
    rounds, median."""
    device = torch.device(device)
    names = method_names or [m for m in methods.list_methods() if methods.get_method(m).requires_teacher
                             or m == "ce"]
    rng = np.random.default_rng(0)
    n = batch_size * (steps + warmup) + batch_size
    images = torch.from_numpy(rng.integers(0, 256, size=(n, in_chans, image_size, image_size), dtype=np.uint8))
    data = TensorData(images, torch.from_numpy(rng.integers(0, num_classes, size=n)), (0.5,) * in_chans,
                      (0.25,) * in_chans, device, padding=4 if image_size >= 32 else 2)
    data.num_classes, data.class_counts = num_classes, [max(1, 500 // (c + 1)) for c in range(num_classes)]
    data.info = SimpleNamespace(in_chans=in_chans, image_size=image_size)
    recipe = TrainRecipe(epochs=1, batch_size=batch_size, eval_batch_size=256)
    torch.manual_seed(0)
    t = create_model(teacher, num_classes=num_classes, in_chans=in_chans)

    def trainer(members: list) -> Trainer:
        tr = Trainer(recipe, data, data, seed=0, device=device, teacher=t, progress=False, log=lambda m: None)
        for name in members:
            torch.manual_seed(0)
            s = create_model(student, num_classes=num_classes, in_chans=in_chans)
            cls = methods.get_method(name)
            tr.add(name, s, cls(method_context(cls, data, s.to(device), t.to(device), 1)))
        return tr

    batches = list(data.train_batches(batch_size, 0, 1, with_index=True))
    cell = trainer(names)
    solos = [trainer([name]) for name in names]

    def run(trainers: list, k: int) -> float:
        t0 = time.perf_counter()
        for i in range(k):
            x, y, index = batches[i % len(batches)]
            for tr in trainers:
                tr.train_step(x, y, 1, index=index)
        _sync(device)
        return (time.perf_counter() - t0) / k

    run([cell], warmup)
    run(solos, warmup)
    together, alone = [], []
    for _ in range(rounds):
        together.append(run([cell], steps))
        alone.append(run(solos, steps))
    out = {"teacher": teacher, "student": student, "methods": names, "batch_size": batch_size, "steps": steps,
           "rounds": rounds, "device": str(device), "threads": torch.get_num_threads(),
           "lockstep_s_per_batch": float(np.median(together)), "one_at_a_time_s_per_batch": float(np.median(alone))}
    out["speedup"] = out["one_at_a_time_s_per_batch"] / out["lockstep_s_per_batch"]
    return out


def main(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.grid:
        results = {}
        for case, kw in CELL_CASES.items():
            res = results[case] = measure_cell(**kw, steps=args.steps if args.steps != 100 else 6, device=device)
            print(f"cell {case}: {len(res['methods'])} methods, batch {res['batch_size']}, {res['steps']} steps x "
                  f"{res['rounds']} rounds on {res['device']} ({res['threads']} threads): lockstep "
                  f"{res['lockstep_s_per_batch'] * 1e3:.0f} ms/batch, one at a time "
                  f"{res['one_at_a_time_s_per_batch'] * 1e3:.0f} ms/batch: {res['speedup']:.2f}x")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        return 0
    res = measure(args.teacher, args.student, args.image_size, args.in_chans, args.num_classes, args.batch_size,
                  args.steps, device, compile=args.compile)
    print(f"KD step {res['teacher']} -> {res['student']}, input {res['input']}, batch {res['batch_size']}, "
          f"{res['steps']} timed steps per path in {res['rounds']} interleaved rounds (median) on {res['device']} "
          f"(torch {res['torch']}, {res['threads']} threads)")
    print(f"data: {res['data']}")
    print(f"  (a) ltkd-bench path         {res['a_ltkd_ips']:10.0f} img/s" + ("  (torch.compile)" if args.compile else ""))
    print(f"  (b) usual eager pipeline    {res['b_eager_ips']:10.0f} img/s  (DataLoader, {res['b_workers']} workers)")
    print(f"  (c) compute bound           {res['c_compute_ips']:10.0f} img/s")
    print(f"  a/b = {res['a_over_b']:.2f}x   a/c = {res['a_over_c']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0
