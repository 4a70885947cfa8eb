"""The training loop the harness owns: devices, precision, schedule, checkpoints, progress, NaN guard.

One function, :func:`train`, trains a network with a method (``ce`` for teachers) and returns what a
run record needs. State is checkpointed atomically every epoch and on Ctrl-C (mid-epoch, with the
step reached), so a killed run resumes where it stopped and ends with the same numbers as an
uninterrupted run: data order and augmentation are functions of (seed, epoch) only.
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from .config import TrainRecipe
from .distributed import all_reduce_sum, world_size
from .distributed import rank as dist_rank
from .evaluate import per_class_counts, summarize
from .models import forward_with_features

__all__ = ["resolve_device", "lr_at", "DistillStep", "TrainResult", "NonFiniteLoss", "RunInterrupted", "train"]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf: the run is recorded as failed and the grid goes on."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: state was checkpointed; rerunning the same command resumes."""


def resolve_device(pref: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    return dev


def lr_at(recipe: TrainRecipe, epoch: int, base_lr: Optional[float] = None) -> float:
    """Learning rate of 1-based ``epoch`` (stateless, so resuming needs no scheduler state).

    multistep: x gamma after each milestone (lr of epoch e uses the count of milestones < e, as in the
    KD literature's code); cosine: half-cosine from lr to 0 over the epochs; both after a linear warm-up.
    """
    lr = recipe.lr if base_lr is None else base_lr
    if recipe.warmup_epochs and epoch <= recipe.warmup_epochs:
        return lr * epoch / recipe.warmup_epochs
    if recipe.schedule == "multistep":
        return lr * recipe.gamma ** sum(epoch > m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        span = max(recipe.epochs - recipe.warmup_epochs, 1)
        t = (epoch - 1 - recipe.warmup_epochs) / span
        return 0.5 * lr * (1.0 + math.cos(math.pi * t))
    return lr


class DistillStep(nn.Module):
    """Student + method (+ frozen teacher held outside the module tree): one forward -> loss terms.

    Wrapping both student and method lets DDP synchronise the method's own modules (projectors) too.
    """

    def __init__(self, student: nn.Module, method: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.student = student
        self.method = method
        self._teacher = [teacher]  # not a submodule: no grads, no DDP broadcast, not in the checkpoint

    @property
    def teacher(self) -> Optional[nn.Module]:
        return self._teacher[0]

    def teacher_outputs(self, x: Tensor):
        from methods import Outputs

        with torch.inference_mode():
            logits, feats = forward_with_features(self.teacher, x)
        # clone outside inference mode: plain tensors that autograd may save for the student's loss
        return Outputs(logits.float().clone(), feats.float().clone())

    def forward(self, x: Tensor, y: Tensor, epoch: int):
        from methods import Outputs

        logits, feats = forward_with_features(self.student, x)
        t_out = self.teacher_outputs(x) if self.teacher is not None else None
        terms = self.method(Outputs(logits, feats), t_out, y, epoch)
        return terms, logits


@dataclass
class TrainResult:
    """What the loop hands to the run record."""

    status: str = "ok"  # ok | failed
    reason: Optional[str] = None
    final: Dict[str, Any] = field(default_factory=dict)
    best: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    epochs_completed: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    images_seen: int = 0
    resumed_from: Optional[Dict[str, int]] = None

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.train_time_s if self.train_time_s > 0 else 0.0


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


_DDP_STOP_EVERY = 20  # DDP: steps between agreements on a stop request (Ctrl-C / SIGTERM / preemption)



def evaluate_model(model: nn.Module, test_data, num_classes: int, recipe: TrainRecipe, class_counts,
                   amp_dtype: Optional[torch.dtype]) -> Dict[str, Any]:
    """Per-class test accuracy (reduced across ranks) and its summary."""
    rank, world = dist_rank(), world_size()
    was_training = model.training
    model.eval()
    correct, total = per_class_counts(model, test_data.eval_batches(recipe.eval_batch_size, rank, world),
                                      num_classes, amp_dtype)
    model.train(was_training)
    correct, total = all_reduce_sum(correct.clone()), all_reduce_sum(total.clone())
    correct, total = correct.cpu().tolist(), total.cpu().tolist()
    per_class = [100.0 * c / t if t else 0.0 for c, t in zip(correct, total)]
    return {"per_class_acc": per_class, "per_class_test_count": total,
            **summarize(per_class, class_counts, per_class_total=total)}


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so the state saved is consistent."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame) -> None:
        if self.hit:  # second Ctrl-C: leave at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(student: nn.Module, method: nn.Module, recipe: TrainRecipe, train_data, test_data, *,
          seed: int, device: torch.device, teacher: Optional[nn.Module] = None,
          checkpoint: Optional[Path] = None, base_lr: Optional[float] = None, desc: str = "train",
          progress: bool = True, log: Callable[[str], None] = print,
          stop_after_steps: Optional[int] = None) -> TrainResult:
    """Train ``student`` with ``method`` (and a frozen ``teacher``); evaluate; return a :class:`TrainResult`.

    ``stop_after_steps`` simulates a kill after that many optimiser steps (tests of resume).
    """
    from tqdm.auto import tqdm

    rank, world = dist_rank(), world_size()
    t_wall = time.perf_counter()
    amp_dtype = torch.bfloat16 if (device.type == "cuda" and recipe.amp) else None
    num_classes = train_data.num_classes
    class_counts = train_data.class_counts
    mem_fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    student.to(device=device, memory_format=mem_fmt)
    method.to(device)
    if teacher is not None:
        teacher.to(device=device, memory_format=mem_fmt).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if world > 1 and getattr(recipe, "sync_bn", False):
        if device.type == "cuda":  # in place for a model (its BatchNorm children are replaced)
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        elif rank == 0:
            log(f"[{desc}] sync_bn ignored: SyncBatchNorm needs CUDA")
    step_module: nn.Module = DistillStep(student, method, teacher)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(step_module) if recipe.compile else step_module

    params = [p for p in step_module.parameters() if p.requires_grad]
    opt_kw: Dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.SGD(params, lr=lr_at(recipe, 1, base_lr), momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=recipe.nesterov, **opt_kw)

    result = TrainResult()
    start_epoch, start_step = 1, 0
    state: Dict[str, Any] = {}
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        student.load_state_dict(state["student"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_step = state["epoch"], state["step"]
        result.history = state["history"]
        result.best = state["best"]
        result.train_time_s, result.images_seen = state["train_time_s"], state["images_seen"]
        result.resumed_from = {"epoch": start_epoch, "step": start_step}
        log(f"[{desc}] resuming from epoch {start_epoch} step {start_step} ({checkpoint.name})")
        result.final = state.get("final", {})
    else:
        base = _unwrap(step_module)
        method.setup(base.teacher_outputs if teacher is not None else None,
                     lambda: train_data.eval_batches(recipe.eval_batch_size))

    def save(epoch: int, step: int, running: Dict[str, Tensor]) -> None:
        if checkpoint is None or rank != 0:
            return
        _atomic_save({"student": student.state_dict(), "method": method.state_dict(),
                      "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                      "running": {k: v.detach().cpu() for k, v in running.items()},
                      "history": result.history, "best": result.best, "final": result.final,
                      "train_time_s": result.train_time_s, "images_seen": result.images_seen}, checkpoint)

    if recipe.batch_size % world:
        raise ValueError(f"batch_size {recipe.batch_size} is the global batch: it must be divisible by the {world} "
                         "processes")
    batch = recipe.batch_size // world  # per-rank batch: the global batch is the recipe's for any world size
    steps = train_data.steps_per_epoch(batch, world)
    if steps < 1:
        raise ValueError(f"the training split has {len(train_data)} images, fewer than one batch of "
                         f"{recipe.batch_size}; lower batch_size")
    step_module.train()
    global_steps = 0
    with _Interrupt() as interrupt:
        for epoch in range(start_epoch, recipe.epochs + 1):
            lr = lr_at(recipe, epoch, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(seed * 1000 + epoch)  # any global randomness (dropout) is epoch-determined
            running = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device)}
            if epoch == start_epoch and start_step and "running" in state:
                running = {k: v.to(device) for k, v in state["running"].items()}
            first = start_step if epoch == start_epoch else 0
            bar = tqdm(total=steps, initial=first, desc=f"{desc} ep {epoch}/{recipe.epochs}", leave=False,
                       disable=(not progress) or rank != 0, dynamic_ncols=True, mininterval=1.0)
            t0 = time.perf_counter()
            seen = 0
            for i, (x, y) in enumerate(train_data.train_batches(batch, seed, epoch, recipe.augment,
                                                                rank, world)):
                if i < first:
                    continue
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    terms, logits = forward(x, y, epoch)
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for k, v in terms.items():
                    key = f"loss_{k}"
                    running[key] = running.get(key, torch.zeros((), device=device)) + v.detach().float()
                running["loss"] += loss.detach().float()
                running["correct"] += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                global_steps += 1
                bar.update(1)
                if (i + 1) % 50 == 0 and not bar.disable:
                    done = i + 1
                    bar.set_postfix(loss=f"{running['loss'].item() / done:.3f}",
                                    acc=f"{100 * running['correct'].item() / (done * y.shape[0]):.1f}",
                                    ips=f"{seen * world / (time.perf_counter() - t0):.0f}")
                stop = interrupt.hit or (stop_after_steps is not None and global_steps >= stop_after_steps)
                if world > 1:  # DDP: all ranks stop at the same step or none does (else all-reduces hang)
                    stop = (i + 1) % _DDP_STOP_EVERY == 0 and bool(
                        all_reduce_sum(torch.tensor(float(stop), device=device)).item())
                if stop:
                    bar.close()
                    result.train_time_s += time.perf_counter() - t0
                    result.images_seen += seen * world
                    save(epoch, i + 1, running)
                    raise RunInterrupted(f"{desc}: stopped at epoch {epoch} step {i + 1}; state saved to "
                                         f"{checkpoint}; rerun the same command to resume")
            bar.close()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            result.train_time_s += time.perf_counter() - t0
            result.images_seen += seen * world
            if world > 1:
                from .distributed import average_bn_stats

                average_bn_stats(_unwrap(step_module))  # every rank evaluates and saves the same model
            for k in running:
                running[k] = all_reduce_sum(running[k])
            n_steps = steps * world
            stats = {k: running[k].item() / n_steps for k in running if k not in ("correct",)}
            if not all(math.isfinite(v) for v in stats.values()):
                bad = ", ".join(f"{k}={v}" for k, v in stats.items() if not math.isfinite(v))
                result.status, result.reason = "failed", f"non-finite loss at epoch {epoch} ({bad})"
                result.epochs_completed = epoch - 1
                result.wall_time_s = time.perf_counter() - t_wall
                raise NonFiniteLoss(result.reason)
            row: Dict[str, Any] = {"epoch": epoch, "lr": lr,
                                   "train_acc": 100.0 * running["correct"].item() / (n_steps * batch),
                                   **stats}
            is_last = epoch == recipe.epochs
            if is_last or (recipe.eval_every and epoch % recipe.eval_every == 0):
                ev = evaluate_model(student, test_data, num_classes, recipe, class_counts, amp_dtype)
                row["test_acc"] = ev["overall"]
                if not result.best or ev["overall"] > result.best["overall"]:
                    result.best = {"epoch": epoch, **ev}
                if is_last:
                    result.final = {"epoch": epoch, **ev}
            result.history.append(row)
            if rank == 0:
                msg = (f"[{desc}] epoch {epoch}/{recipe.epochs} loss {row['loss']:.4f} "
                       f"train {row['train_acc']:.1f}%")
                if "test_acc" in row:
                    msg += f" test {row['test_acc']:.2f}%"
                log(msg + f" lr {lr:.4g} {seen * world / max(time.perf_counter() - t0, 1e-9):.0f} img/s")
            save(epoch + 1, 0, {})
            start_step = 0
    result.epochs_completed = recipe.epochs
    result.wall_time_s = time.perf_counter() - t_wall
    return result


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") else module
