"""Step time of the feature methods next to kd on the quick suite's pair (a benchmark, not a test):

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_feature_methods.py [--rounds 7] [--steps 10] [--threads 1]

cifar_cnn_small -> cifar_cnn_tiny on 1x28x28 Fashion-MNIST-shaped inputs, batch 128, the harness's
DistillStep + SGD step on one fixed batch (compute bound), eager. Methods run in interleaved rounds and the
median round counts, so a busy machine slows every method alike. Prints ms per step and what a run of the
quick suite's student recipe (6 epochs x 116 steps) costs at that speed.
"""
import argparse
import statistics
import time
from typing import Callable, Dict

import torch

import benchmark  # noqa: F401  (registers the zoo)
import methods
from benchmark.models import create_model, feature_dim, map_shapes
from benchmark.step import DistillStep

QUICK_TRAIN = 14886  # Fashion-MNIST-LT IF 100 training images (configs/quick.yaml)
QUICK_STEPS = 6 * (QUICK_TRAIN // 128)  # student recipe: 6 epochs of batch 128
CASES = [("kd", {}), ("at", {}), ("rkd", {}), ("fitnet", {}), ("reviewkd", {}), ("crd", {}),
         ("crd", {"nce_k": 4096})]


def make_step(name: str, hparams: Dict) -> Callable[[int], float]:
    """A closure running ``n`` training steps of ``name`` and returning the mean seconds per step."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    t = create_model("cifar_cnn_small", num_classes=10, in_chans=1).to(memory_format=fmt).eval()
    s = create_model("cifar_cnn_tiny", num_classes=10, in_chans=1).to(memory_format=fmt).train()
    for p in t.parameters():
        p.requires_grad_(False)
    targets = torch.arange(QUICK_TRAIN) % 10
    ctx = methods.MethodContext(class_counts=torch.bincount(targets).tolist(), student_dim=feature_dim(s),
                                teacher_dim=feature_dim(t), epochs=6, num_train=QUICK_TRAIN, train_targets=targets,
                                student_shapes=map_shapes(s, (1, 28, 28)), teacher_shapes=map_shapes(t, (1, 28, 28)))
    step = DistillStep(s, methods.create_method(name, ctx, **hparams), t)
    opt = torch.optim.SGD([p for p in step.parameters() if p.requires_grad], lr=0.05, momentum=0.9,
                          weight_decay=5e-4, foreach=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 28, 28, generator=gen).contiguous(memory_format=fmt)
    index = torch.randperm(QUICK_TRAIN, generator=gen)[:128]
    y = targets[index]

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            terms, _ = step(x, y, 3, index=index)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / max(n, 1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per method per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {f"{n}{'' if not hp else ' ' + str(hp)}": make_step(n, hp) for n, hp in CASES}
    for run in runs.values():
        run(3)  # warm-up
    times: Dict[str, list] = {k: [] for k in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for key in order:
            times[key].append(runs[key](args.steps))
    kd = statistics.median(times["kd"])
    print(f"batch 128, {args.threads} thread(s), median of {args.rounds} rounds x {args.steps} steps, torch "
          f"{torch.__version__}")
    for key, ts in times.items():
        med = statistics.median(ts)
        print(f"{key:24s} {1000 * med:8.1f} ms/step  x{med / kd:5.2f} of kd  quick-suite run ~{med * QUICK_STEPS:6.0f} s")


if __name__ == "__main__":
    main()
