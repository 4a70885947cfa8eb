"""CPU training throughput of the quick/ci-suite convnets (not collected by default).

    python -m pytest tests/benchmarks/bench_models.py --benchmark-enable
    python tests/benchmarks/bench_models.py            # plain table: img/s per model x memory format x threads

One "train step" = forward + cross-entropy + backward + SGD step on a batch of 128 1x28x28 images
(Fashion-MNIST shape), 10 classes. Targets on 2 CPU cores: cifar_cnn_tiny >= 4000 img/s,
cifar_cnn_small >= 1500 img/s (an idle machine; a busy one, where OpenMP threads get descheduled,
can be several times slower with 2 threads).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

if __name__ == "__main__":  # `python tests/benchmarks/bench_models.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import benchmark  # noqa: E402,F401  (registers the zoo)

BATCH = 128
TARGETS = {"cifar_cnn_tiny": 4000.0, "cifar_cnn_small": 1500.0}


def make_train_step(name: str, channels_last: bool, batch: int = BATCH):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, in_chans=1).train()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):  # warm-up: oneDNN primitive creation, allocator
        step()
    return step


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_train_step_throughput(benchmark, two_threads, name, channels_last):
    step = make_train_step(name, channels_last)
    benchmark.pedantic(step, rounds=20, iterations=1)
    if benchmark.stats:
        benchmark.extra_info["img_per_s_median"] = BATCH / benchmark.stats.stats.median


def measure(name: str, channels_last: bool, threads: int, rounds: int = 7, steps: int = 10) -> tuple:
    """(median, best) wall-clock images/s over ``rounds`` timings of ``steps`` train steps each, and
    images per CPU-second (process time; with 1 thread this estimates an idle core's speed even when
    other processes share the machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        step = make_train_step(name, channels_last)
        rates, cpu = [], 0.0
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            rates.append(BATCH * steps / (time.perf_counter() - t0))
            cpu += time.process_time() - c0
    finally:
        torch.set_num_threads(before)
    return statistics.median(rates), max(rates), BATCH * steps * rounds / cpu


if __name__ == "__main__":
    import os

    print(f"train step, batch {BATCH}, 1x28x28, 10 classes; wall img/s median (best) [img per CPU-s]; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name in sorted(TARGETS):
        params = sum(p.numel() for p in timm.create_model(name, num_classes=10, in_chans=1).parameters())
        for threads in (2, 1):
            cells = []
            for cl in (False, True):
                med, best, per_cpu_s = measure(name, cl, threads)
                cells.append(f"{'channels_last' if cl else 'nchw'} {med:6.0f} ({best:6.0f}) [{per_cpu_s:6.0f}]")
            print(f"{name:16s} {params:7d} params  threads={threads}  " + "   ".join(cells)
                  + f"   target {TARGETS[name]:.0f}", flush=True)
