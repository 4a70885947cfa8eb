"""The method interface: a distillation method is its loss terms and hyper-parameters.

The harness owns the loop, devices, precision, data and checkpoints. A method gets the student's
and teacher's outputs for a batch and returns named loss terms, which the harness sums and logs.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["Outputs", "MethodContext", "Method", "as_target", "linear_warmup"]


def as_target(t: Tensor) -> Tensor:
    """A teacher output as a constant float32 target: detached, and usable by autograd even when the
    harness produced it under ``torch.inference_mode`` (such tensors cannot be saved for backward)."""
    t = t.detach().float()
    return t.clone() if t.is_inference() else t


def linear_warmup(epoch: int, warmup: float) -> float:
    """``min(epoch / warmup, 1)`` for a 1-based epoch (mdistiller's DKD schedule); 1 when warmup <= 0."""
    return 1.0 if warmup <= 0 else min(float(epoch) / float(warmup), 1.0)


@dataclass
class Outputs:
    """What a network produced for one batch: logits (B, C) and pooled penultimate features (B, D)."""

    logits: Tensor
    features: Tensor


@dataclass
class MethodContext:
    """Facts about the run a method may need: class counts of the TRAIN split, feature widths, epochs."""

    class_counts: Sequence[int]
    student_dim: int
    teacher_dim: Optional[int] = None
    epochs: int = 1
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    def class_prior(self, device: Optional[torch.device] = None) -> Tensor:
        """pi_c = n_c / N as a float tensor."""
        counts = torch.as_tensor(list(self.class_counts), dtype=torch.float32, device=device)
        return counts / counts.sum()


class Method(nn.Module):
    """Base class of every method.

    Subclasses set ``hparams`` (name -> default) and implement :meth:`forward`. Hyper-parameters are
    available as attributes (``self.temperature``) and are stored in every run record. A method may
    own modules (e.g. a projector); the harness moves them to the device and trains them with the
    student. ``setup`` runs once before training with the frozen teacher and the un-augmented train set.
    """

    name: ClassVar[str] = ""
    hparams: ClassVar[Dict[str, Any]] = {}
    requires_teacher: ClassVar[bool] = True
    #: One line shown by ``python -m benchmark list`` and in the leaderboard legend.
    summary: ClassVar[str] = ""

    def __init__(self, ctx: MethodContext, **overrides: Any) -> None:
        super().__init__()
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, list(self.hparams), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"method '{self.name}' has no hyper-parameter '{key}'.{hint} "
                f"Allowed: {', '.join(sorted(self.hparams)) or '(none)'}."
            )
        self.ctx = ctx
        self.config: Dict[str, Any] = {}
        for key, default in self.hparams.items():
            value = overrides.get(key, default)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise TypeError(f"method '{self.name}': hyper-parameter '{key}' must be true/false, got {value!r}")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"method '{self.name}': hyper-parameter '{key}' must be a number, got {value!r}")
                value = type(default)(value) if isinstance(default, float) else value
            self.config[key] = value
            setattr(self, key, value)
        self.register_buffer("class_counts", torch.as_tensor(list(ctx.class_counts), dtype=torch.float32),
                             persistent=False)

    @property
    def log_prior(self) -> Tensor:
        """log(pi_c) on the method's device, from the training class counts (a class absent from the
        train split counts as 1 sample, so the prior stays finite)."""
        counts = self.class_counts.clamp_min(1.0)
        return torch.log(counts / counts.sum())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())

    def require_teacher(self, teacher: Optional[Outputs]) -> Outputs:
        """The teacher's outputs, or a clear error when the harness passed none."""
        if teacher is None:
            raise ValueError(f"method '{self.name}' needs teacher outputs (requires_teacher=True), got None")
        return teacher

    def setup(
        self,
        teacher: Optional[Callable[[Tensor], Outputs]],
        train_batches: Callable[[], Iterable[Tuple[Tensor, Tensor]]],
    ) -> None:
        """One-time preparation before training (priors, prototypes). Default: nothing.

        ``teacher(x)`` returns the frozen teacher's :class:`Outputs` (no grad); ``train_batches()``
        yields un-augmented, normalised ``(x, y)`` training batches on the training device.
        """

    def forward(self, student: Outputs, teacher: Optional[Outputs], target: Tensor, epoch: int) -> Dict[str, Tensor]:
        """Loss terms for one batch; ``epoch`` is 1-based. Every value is a 0-dim tensor."""
        raise NotImplementedError
