"""The trainer: one loop for a *cell* of students that share data, teacher, seed and recipe.

A cell trains its students in lockstep: one data stream, at most one frozen-teacher forward per batch,
then each student's forward, loss, backward and step, and one shared pass over the test set at each
evaluation. A single run is a cell of one, so there is one loop. Each student keeps its own optimiser,
loop state, RNG stream and checkpoint, so its numbers are the same whether it trained alone or in a cell.

The loop is a sequence of named steps (:meth:`Trainer.add` = setup or restore, :meth:`Trainer.train_step`,
:meth:`Trainer._run_epoch`, :meth:`Trainer._end_epoch` with the reductions and the NaN guard,
:meth:`Trainer._evaluate`, :meth:`Trainer._save`). A :class:`StopRequest` (Ctrl-C, SIGTERM, preemption, or a
step budget in tests) stops it between steps with every student checkpointed; rerunning resumes exactly.
"""
import contextlib
import math
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from methods import Method, Outputs

from .config import TrainRecipe
from .device import amp_dtype, memory_format
from .distributed import all_gather_object, all_reduce_sum, average_bn_stats, rank, world_size
from .evaluate import summarize
from .fileio import atomic_torch_save
from .step import DistillStep, frozen_outputs, needs_of

__all__ = ["FIRST_LOSS", "lr_at", "StopRequest", "LoopState", "TrainResult", "RunInterrupted", "Trainer"]

FIRST_LOSS = "first_loss"  # epoch 1's row: the loss of the run's first step, before any update (mean over ranks)
_DDP_STOP_EVERY = 20  # DDP: steps between agreements on a stop request (all ranks must stop at one step)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or a stop request: state was checkpointed; rerunning the same command resumes."""


def lr_at(recipe: TrainRecipe, epoch: int, student_lr: Optional[float] = None) -> float:
    """Learning rate of 1-based ``epoch`` (stateless, so resuming needs no scheduler state).

    multistep: x gamma after each milestone (lr of epoch e uses the count of milestones < e, as in the
    KD literature's code); cosine: half-cosine from lr to 0 over the epochs; both after a linear warm-up.
    """
    lr = recipe.lr if student_lr is None else student_lr
    if recipe.warmup_epochs and epoch <= recipe.warmup_epochs:
        return lr * epoch / recipe.warmup_epochs
    if recipe.schedule == "multistep":
        return lr * recipe.gamma ** sum(epoch > m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        span = max(recipe.epochs - recipe.warmup_epochs, 1)
        t = (epoch - 1 - recipe.warmup_epochs) / span
        return 0.5 * lr * (1.0 + math.cos(math.pi * t))
    return lr


class StopRequest:
    """An explicit request to stop at the next step: set by SIGINT/SIGTERM inside :meth:`signals`, by
    :meth:`request` (e.g. a preemption notice), or after ``after_steps`` optimiser steps (tests of resume)."""

    def __init__(self, after_steps: Optional[int] = None) -> None:
        self.after_steps = after_steps
        self.hit = False
        self.steps = 0

    def request(self) -> None:
        self.hit = True

    def tick(self) -> bool:
        """Count one step; True when the loop must stop now."""
        self.steps += 1
        if self.after_steps is not None and self.steps >= self.after_steps:
            self.hit = True
        return self.hit

    @contextlib.contextmanager
    def signals(self) -> Iterator["StopRequest"]:
        """Turn SIGINT/SIGTERM into :meth:`request` for the block; a second Ctrl-C leaves at once."""
        def handler(signum, frame) -> None:
            if self.hit and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request()

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                old[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, prev in old.items():
                signal.signal(sig, prev)


@dataclass
class LoopState:
    """Where one student's training stands; checkpointed with its weights and optimiser."""

    epoch: int = 1  # the epoch to run next (1-based)
    step: int = 0  # steps of ``epoch`` already done
    running: Dict[str, Tensor] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    best: Dict[str, Any] = field(default_factory=dict)
    final: Dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0
    images_seen: int = 0
    rng: Optional[Dict[str, Tensor]] = None  # this student's own RNG stream (CPU / CUDA generator states)
    resumed_from: Optional[Dict[str, int]] = None

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "history": self.history, "best": self.best,
                "final": self.final, "train_time_s": self.train_time_s, "images_seen": self.images_seen,
                "running": {k: v.detach().cpu() for k, v in self.running.items()}, "rng": self.rng}

    def load_state_dict(self, state: Dict[str, Any], device: torch.device) -> None:
        for key in ("epoch", "step", "history", "best", "final", "train_time_s", "images_seen", "rng"):
            setattr(self, key, state.get(key, getattr(self, key)))
        self.running = {k: v.to(device) for k, v in state.get("running", {}).items()}
        self.resumed_from = {"epoch": self.epoch, "step": self.step}


@dataclass
class TrainResult:
    """What the loop hands to the run record (``failure`` says why a run failed, else None)."""

    final: Dict[str, Any] = field(default_factory=dict)
    best: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    epochs_completed: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    images_seen: int = 0
    resumed_from: Optional[Dict[str, int]] = None
    predictions: Optional[np.ndarray] = None  # argmax per test image, in test-set order (final epoch)
    targets: Optional[np.ndarray] = None  # the test labels, same order
    cell_size: int = 1
    failure: Optional[str] = None

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.train_time_s if self.train_time_s > 0 else 0.0


@dataclass
class _Member:
    """One student of a cell: its networks, optimiser, loop state and where it is checkpointed."""

    key: str
    student: nn.Module
    method: Method
    module: nn.Module  # DistillStep, possibly DDP-wrapped
    forward: Callable[..., Any]  # ``module`` or its torch.compile
    optimizer: torch.optim.Optimizer
    student_lr: Optional[float]
    checkpoint: Optional[Path]
    on_epoch: Optional[Callable[[Dict[str, Any]], None]]
    state: LoopState = field(default_factory=LoopState)
    failure: Optional[str] = None
    predictions: Optional[np.ndarray] = None


class Trainer:
    """Trains the students added with :meth:`add` in lockstep on one data stream and one teacher."""

    def __init__(self, recipe: TrainRecipe, train_data: Any, test_data: Any, *, seed: int, device: torch.device,
                 teacher: Optional[nn.Module] = None, stop: Optional[StopRequest] = None, desc: str = "train",
                 progress: bool = True, log: Callable[[str], None] = print,
                 member_log: Optional[Callable[[str, str], None]] = None,
                 epoch_report: Optional[Callable[[int, List[tuple], float], None]] = None) -> None:
        self.recipe, self.train_data, self.test_data = recipe, train_data, test_data
        self.seed, self.device, self.desc, self.progress, self.log = seed, device, desc, progress, log
        # member_log(key, line): a student's own lines (its run log); epoch_report(epoch, [(key, row)], img/s): the
        # console's table of an epoch. Without them every line goes to ``log`` prefixed by the student's key.
        self.member_log, self.epoch_report = member_log, epoch_report
        self.stop = stop or StopRequest()
        self.rank, self.world = rank(), world_size()
        self.amp = amp_dtype(device, recipe.amp)
        self.fmt = memory_format(recipe.channels_last)
        if recipe.batch_size % self.world:
            raise ValueError(f"batch_size {recipe.batch_size} is the global batch: it must be divisible by the "
                             f"{self.world} processes")
        self.batch = recipe.batch_size // self.world  # per-rank share of the recipe's global batch
        self.steps = train_data.steps_per_epoch(self.batch, self.world)
        if self.steps < 1:
            raise ValueError(f"the training split has {len(train_data)} images, fewer than one batch of "
                             f"{recipe.batch_size}; lower batch_size")
        self.teacher = teacher
        if teacher is not None:
            teacher.to(device=device, memory_format=self.fmt).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.members: List[_Member] = []
        self.test_targets: Optional[np.ndarray] = None  # set by the final evaluation
        self._t_wall = time.perf_counter()

    # ------------------------------------------------------------------ setup or restore
    def add(self, key: str, student: nn.Module, method: Method, *, student_lr: Optional[float] = None,
            checkpoint: Optional[Path] = None, on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        """Place a student and its method on the device, then restore its checkpoint or run ``method.setup``."""
        student, module, optimizer = self._place(student, method, student_lr)
        member = _Member(key, student, method, module, torch.compile(module) if self.recipe.compile else module,
                         optimizer, student_lr, checkpoint, on_epoch)
        if not (checkpoint is not None and checkpoint.exists() and self._restore(member)):
            teacher = self.teacher if method.requires_teacher else None
            method.setup(None if teacher is None else (lambda x: frozen_outputs(teacher, x, needs_of([method]))),
                         lambda: self.train_data.eval_batches(self.recipe.eval_batch_size))
            member.state.rng = _get_rng(self.device)  # re-derived from (seed, epoch) when an epoch starts
        self.members.append(member)

    def _place(self, student: nn.Module, method: Method, student_lr: Optional[float]) -> tuple:
        """(student, the DistillStep to call, possibly DDP-wrapped, its SGD) on this trainer's device."""
        student.to(device=self.device, memory_format=self.fmt)
        method.to(self.device)
        if self.world > 1 and self.recipe.sync_bn and self.device.type == "cuda":
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        module: nn.Module = DistillStep(student, method, self.teacher if method.requires_teacher else None)
        if self.world > 1:
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        params = [p for p in module.parameters() if p.requires_grad]
        opt_kw: Dict[str, Any] = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        optimizer = torch.optim.SGD(params, lr=lr_at(self.recipe, 1, student_lr), momentum=self.recipe.momentum,
                                    weight_decay=self.recipe.weight_decay, nesterov=self.recipe.nesterov, **opt_kw)
        return student, module, optimizer

    def _restore(self, m: _Member) -> bool:
        """Load ``m``'s checkpoint; an unreadable one (truncated by a crash) is set aside and the run starts over."""
        try:
            state = torch.load(m.checkpoint, map_location=self.device, weights_only=False)
            m.student.load_state_dict(state["student"])
            m.method.load_state_dict(state["method"])
            m.optimizer.load_state_dict(state["optimizer"])
            m.state.load_state_dict(state["loop"], self.device)
        except Exception as err:  # any unreadable or foreign file: nothing in it can be trusted
            bad = m.checkpoint.with_name(m.checkpoint.name + ".unreadable")
            os.replace(m.checkpoint, bad)
            self._say(m.key, f"checkpoint {m.checkpoint.name} is unreadable ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); moved to {bad.name}, starting the run over")
            m.state = LoopState()
            return False
        self._say(m.key, f"resuming from epoch {m.state.epoch} step {m.state.step} ({m.checkpoint.name})")
        return True

    def _say(self, key: str, line: str) -> None:
        """A line about one student: to its own log when the caller gave one, else to ``log`` with its key."""
        if self.member_log is not None:
            self.member_log(key, line)
        else:
            self.log(f"[{key}] {line}")

    def _save(self, m: _Member) -> None:
        if m.checkpoint is None or self.rank != 0:
            return
        atomic_torch_save({"student": m.student.state_dict(), "method": m.method.state_dict(),
                           "optimizer": m.optimizer.state_dict(), "loop": m.state.state_dict()}, m.checkpoint)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Dict[str, TrainResult]:
        """Train every added student to the recipe's last epoch; students restored at different points
        (a method added to a cell later) train as separate groups."""
        if self.recipe.epochs == 0:  # weights used as they are: evaluate once
            for m, ev in zip(self.members, self._evaluate(self.members, predictions=True)):
                m.state.final = m.state.best = {"epoch": 0, **ev}
        groups: Dict[tuple, List[_Member]] = {}
        for m in self.members:
            groups.setdefault((m.state.epoch, m.state.step), []).append(m)
        for (epoch, step), group in sorted(groups.items()):
            for e in range(epoch, self.recipe.epochs + 1):
                live = [m for m in group if m.failure is None]
                if not live:
                    break
                self._run_epoch(live, e, step if e == epoch else 0)
        wall = time.perf_counter() - self._t_wall
        return {m.key: self._result(m, wall) for m in self.members}

    def _result(self, m: _Member, wall: float) -> TrainResult:
        s = m.state
        return TrainResult(final=s.final, best=s.best, history=s.history, epochs_completed=len(s.history),
                           train_time_s=s.train_time_s, wall_time_s=wall, images_seen=s.images_seen,
                           resumed_from=s.resumed_from, predictions=m.predictions, targets=self.test_targets,
                           cell_size=len(self.members),
                           failure=m.failure)

    def _start_epoch(self, members: Sequence[_Member], epoch: int, first_step: int) -> None:
        for m in members:
            for group in m.optimizer.param_groups:
                group["lr"] = lr_at(self.recipe, epoch, m.student_lr)
            if first_step == 0 or m.state.rng is None:  # a fresh epoch: the student's stream is epoch-determined
                torch.manual_seed(self.seed * 1000 + epoch)
                m.state.rng = _get_rng(self.device)
                m.state.running = {}
            m.state.epoch, m.state.step = epoch, first_step

    def _run_epoch(self, members: List[_Member], epoch: int, first_step: int) -> None:
        self._start_epoch(members, epoch, first_step)
        for m in members:
            m.module.train()
        bar = tqdm(total=self.steps, initial=first_step, leave=False, mininterval=1.0, dynamic_ncols=True,
                   desc=f"{self.desc} ep {epoch}/{self.recipe.epochs}",
                   disable=True if (not self.progress or self.rank != 0) else None)  # None: off when not a TTY
        t0, seen = time.perf_counter(), 0
        with_index = "index" in needs_of([m.method for m in members])
        batches = self.train_data.train_batches(self.batch, self.seed, epoch, self.recipe.augment, self.rank,
                                                self.world, with_index=with_index)
        for i, batch in enumerate(batches):
            if i < first_step:
                continue
            x, y = batch[0], batch[1]
            self.train_step(x, y, epoch, members, index=batch[2] if with_index else None)
            seen += y.shape[0]
            bar.update(1)
            if self._must_stop(i):
                bar.close()
                self._interrupt(members, epoch, i + 1, time.perf_counter() - t0, seen)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        for m in members:
            m.state.train_time_s += time.perf_counter() - t0
            m.state.images_seen += seen * self.world
        self._end_epoch(members, epoch, seen, time.perf_counter() - t0)

    def _must_stop(self, i: int) -> bool:
        stop = self.stop.tick()
        if self.world > 1:  # DDP: all ranks stop at the same step or none does (else all-reduces hang)
            stop = (i + 1) % _DDP_STOP_EVERY == 0 and bool(
                all_reduce_sum(torch.tensor(float(stop), device=self.device)).item())
        return stop

    def _interrupt(self, members: List[_Member], epoch: int, step: int, elapsed: float, seen: int) -> None:
        for m in members:
            m.state.step = step
            m.state.train_time_s += elapsed
            m.state.images_seen += seen * self.world
            self._save(m)
        where = ", ".join(str(m.checkpoint) for m in members if m.checkpoint is not None) or "(no checkpoint)"
        raise RunInterrupted(f"{self.desc}: stopped at epoch {epoch} step {step}; state saved to {where}; rerun "
                             "the same command to resume")

    def train_step(self, x: Tensor, y: Tensor, epoch: int, members: Optional[List[_Member]] = None,
                   index: Optional[Tensor] = None) -> None:
        """One batch for every (live) student: one teacher forward computing what their methods need (logits,
        features, stage maps), then each student's step in its own RNG stream (so a student draws the same
        numbers alone or in a cell). ``index``: the batch's dataset rows (methods that need them). No host sync."""
        members = [m for m in (self.members if members is None else members) if m.failure is None]
        needs = needs_of([m.method for m in members if m.method.requires_teacher])
        t_out = None
        if self.teacher is not None and needs:
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                t_out = frozen_outputs(self.teacher, x, needs)
        for m in members:
            try:
                self._student_step(m, x, y, epoch, t_out if m.method.requires_teacher else None, index)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # one broken method must not stop its cell: the run is recorded as failed
                m.failure = f"{type(err).__name__}: {err}"
                self._say(m.key, f"FAILED at epoch {epoch}:\n{traceback.format_exc()}")

    def _student_step(self, m: _Member, x: Tensor, y: Tensor, epoch: int, t_out: Optional[Outputs],
                      index: Optional[Tensor]) -> None:
        _set_rng(m.state.rng, self.device)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            terms, logits = m.forward(x, y, epoch, t_out, index)
        loss = sum(terms.values())
        m.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        m.optimizer.step()
        m.state.rng = _get_rng(self.device)
        run = m.state.running
        for k, v in terms.items():
            run[f"loss_{k}"] = run.get(f"loss_{k}", 0) + v.detach().float()
        run["loss"] = run.get("loss", 0) + loss.detach().float()
        run["correct"] = run.get("correct", 0) + (logits.detach().argmax(1) == y).sum()
        if epoch == 1 and m.state.step == 0:  # the loss before any update: deterministic for a seed and teacher
            run[FIRST_LOSS] = loss.detach().float()
        m.state.step += 1

    # ------------------------------------------------------------------ end of epoch
    def _end_epoch(self, members: List[_Member], epoch: int, seen: int, elapsed: float) -> None:
        """Reduce the epoch's sums, fail non-finite students (the rest go on), evaluate when due, save."""
        rows = {m.key: self._epoch_row(m, epoch) for m in members if m.failure is None}
        live = [m for m in members if m.failure is None]
        self._evaluate_if_due(live, rows, epoch)
        ips = seen * self.world / max(elapsed, 1e-9)
        for m in live:
            row = rows[m.key]
            m.state.history.append(row)
            m.state.epoch, m.state.step = epoch + 1, 0
            self._save(m)  # durable before it is reported
            if self.rank == 0:
                if m.on_epoch is not None:
                    m.on_epoch(row)
                self._say(m.key, f"epoch {epoch}/{self.recipe.epochs} loss {row['loss']:.4f} train "
                          f"{row['train_acc']:.1f}%" + (f" test {row['test_acc']:.2f}%" if "test_acc" in row else "")
                          + f" lr {row['lr']:.4g} {ips:.0f} img/s")
        if self.rank == 0 and self.epoch_report is not None and live:
            self.epoch_report(epoch, [(m.key, rows[m.key]) for m in live], ips)

    def _evaluate_if_due(self, live: List[_Member], rows: Dict[str, Dict[str, Any]], epoch: int) -> None:
        """Every ``eval_every`` epochs and at the last one: test accuracy into the rows, best and final."""
        is_last = epoch == self.recipe.epochs
        if not live or not (is_last or (self.recipe.eval_every and epoch % self.recipe.eval_every == 0)):
            return
        for m, ev in zip(live, self._evaluate(live, predictions=is_last)):
            rows[m.key]["test_acc"] = ev["overall"]
            if not m.state.best or ev["overall"] > m.state.best["overall"]:
                m.state.best = {"epoch": epoch, **ev}
            if is_last:
                m.state.final = {"epoch": epoch, **ev}

    def _epoch_row(self, m: _Member, epoch: int) -> Optional[Dict[str, Any]]:
        """The epoch's mean losses and train accuracy over all ranks; a non-finite loss fails the student."""
        if self.world > 1:
            average_bn_stats(_unwrap(m.module).student)  # every rank evaluates and saves the same model
        n_steps = self.steps * self.world
        sums = {k: all_reduce_sum(torch.as_tensor(v, device=self.device).float().clone())
                for k, v in m.state.running.items()}
        per = {FIRST_LOSS: self.world}  # one step per rank, not the epoch's steps
        stats = {k: v.item() / per.get(k, n_steps) for k, v in sums.items() if k != "correct"}
        bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
        if bad:
            m.failure = f"non-finite loss at epoch {epoch} (" + ", ".join(f"{k}={v}" for k, v in bad.items()) + ")"
            self._say(m.key, f"FAILED: {m.failure}")
            return None
        return {"epoch": epoch, "lr": lr_at(self.recipe, epoch, m.student_lr),
                "train_acc": 100.0 * sums["correct"].item() / (n_steps * self.batch), **stats}

    @torch.inference_mode()
    def _evaluate(self, members: List[_Member], predictions: bool = False) -> List[Dict[str, Any]]:
        """One pass over the test set for all ``members``: per-class accuracy (reduced across ranks), its
        summary, and (``predictions``) the argmax of every test image, gathered in test-set order."""
        c = self.train_data.num_classes
        models = [m.student for m in members]
        modes = [mod.training for mod in models]
        for mod in models:
            mod.eval()
        correct = [torch.zeros(c, dtype=torch.long, device=self.device) for _ in models]
        total = torch.zeros(c, dtype=torch.long, device=self.device)
        preds: List[List[Tensor]] = [[] for _ in models]
        targets: List[Tensor] = []
        for x, y in self.test_data.eval_batches(self.recipe.eval_batch_size, self.rank, self.world):
            total += torch.bincount(y, minlength=c)
            if predictions:
                targets.append(y)
            for j, mod in enumerate(models):
                with torch.autocast(x.device.type, dtype=self.amp, enabled=self.amp is not None):
                    pred = mod(x).argmax(dim=1)
                correct[j] += torch.bincount(y[pred == y], minlength=c)
                if predictions:
                    preds[j].append(pred)
        for mod, mode in zip(models, modes):
            mod.train(mode)
        if predictions:
            self.test_targets = _gather(targets)
            for m, p in zip(members, preds):
                m.predictions = _gather(p)
        total_l = all_reduce_sum(total).cpu().tolist()
        return [self._summary(all_reduce_sum(corr).cpu().tolist(), total_l) for corr in correct]

    def _summary(self, correct: List[int], total: List[int]) -> Dict[str, Any]:
        per_class = [100.0 * a / t if t else 0.0 for a, t in zip(correct, total)]
        return {"per_class_acc": per_class, "per_class_test_count": total,
                **summarize(per_class, self.train_data.class_counts, per_class_total=total)}


def _gather(parts: List[Tensor]) -> np.ndarray:
    """This rank's tensors, concatenated, then every rank's in rank order (shards are contiguous, in order)."""
    mine = torch.cat(parts).cpu().numpy() if parts else np.zeros(0, dtype=np.int64)
    return np.concatenate(all_gather_object(mine))


def _get_rng(device: torch.device) -> Dict[str, Tensor]:
    """The global RNG state this student's randomness (dropout, drop-path) draws from."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: Dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module

