"""pytest-benchmark entry of the KD-step speed comparison (issue 5): run explicitly with

    python -m pytest tests/benchmarks/bench_speed.py --benchmark-enable

It times ltkd-bench's step (a); `python -m benchmark speed` prints (a), (b), (c) and the ratios.
"""
import pytest
import torch

from benchmark.data import TensorData
from benchmark.speed import _kd, _models, measure
from benchmark.step import DistillStep


@pytest.fixture(scope="module")
def kd_step():
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t, s = _models("cifar_cnn_small", "cifar_cnn_tiny", 10, 1, dev, channels_last=True)
    step = DistillStep(s, _kd(s, t, 10, dev), t)
    opt = torch.optim.SGD(s.parameters(), lr=0.05, momentum=0.9)
    data = TensorData(torch.randint(0, 256, (4096, 1, 28, 28), dtype=torch.uint8), torch.arange(4096) % 10,
                      (0.5,), (0.25,), dev, padding=2)
    batches = iter(())

    def one_step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = data.train_batches(64, 0, 1)
            x, y = next(batches)
        terms, _ = step(x, y, 1)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return one_step


def test_bench_ltkd_kd_step(benchmark, kd_step):
    benchmark(kd_step)


def test_bench_ratios(benchmark):
    res = benchmark.pedantic(measure, kwargs={"steps": 100, "batch_size": 64}, rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in res.items() if isinstance(v, (int, float))})
    print(f"\na={res['a_ltkd_ips']:.0f} b={res['b_eager_ips']:.0f} c={res['c_compute_ips']:.0f} img/s; "
          f"a/b={res['a_over_b']:.2f} a/c={res['a_over_c']:.2f}")
