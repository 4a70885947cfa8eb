"""``dkd``: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022, arXiv 2203.08679).

KD splits into a target-class term (TCKD, binary [p_y, 1 - p_y]) and a non-target term (NCKD, the
distribution over the other classes) that KD weights by (1 - p_y^teacher); DKD weights them freely.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import Method, as_target, linear_warmup


def _binary_and_nontarget(logits: Tensor, target_mask: Tensor) -> Tuple[Tensor, Tensor]:
    """log [p_y, 1 - p_y] (B, 2) and log-softmax over the non-target classes (B, C), -inf at y."""
    lse = torch.logsumexp(logits, dim=1)
    masked = logits.masked_fill(target_mask, float("-inf"))  # the target logit masked out before the softmax
    lse_nt = torch.logsumexp(masked, dim=1)
    log_p_y = (logits * target_mask).sum(1) - lse
    log_binary = torch.stack([log_p_y, lse_nt - lse], dim=1)  # log(1 - p_y) without cancellation
    return log_binary, masked - lse_nt.unsqueeze(1)


def dkd_terms(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, temperature: float) -> Tuple[Tensor, Tensor]:
    """Per-sample (TCKD, NCKD), each T^2 * KL(teacher || student), shape (B,), float32.

    Per sample, KD = TCKD + (1 - p_y^teacher) * NCKD (Zhao et al., Eq. 1)."""
    t = float(temperature)
    z_s, z_t = logits_student.float() / t, logits_teacher.float() / t
    mask = F.one_hot(target, z_s.shape[1]).bool()
    bin_s, nt_s = _binary_and_nontarget(z_s, mask)
    bin_t, nt_t = _binary_and_nontarget(z_t, mask)
    tckd = (bin_t.exp() * (bin_t - bin_s)).sum(1)
    nckd = (nt_t.exp() * torch.where(mask, torch.zeros_like(nt_t), nt_t - nt_s)).sum(1)
    return tckd * (t * t), nckd * (t * t)


def dkd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor,
             alpha: float, beta: float, temperature: float) -> Tensor:
    """alpha * TCKD + beta * NCKD, mean over the batch (0-dim); as mdistiller's ``dkd_loss``."""
    tckd, nckd = dkd_terms(logits_student, logits_teacher, target, temperature)
    return (alpha * tckd + beta * nckd).mean()


@register_method("dkd")
class DKD(Method):
    """CE + min(epoch / warmup, 1) * dkd_loss; CIFAR defaults alpha=1, beta=8, T=4, warm-up 20 epochs."""

    hparams = {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20}
    hparam_bounds = {"alpha": "[0, inf)", "beta": "[0, inf)", "temperature": "(0, inf)", "warmup": "[0, inf)"}
    epoch_params = {"warmup": "warmup"}
    summary = "DKD (Zhao et al. 2022)"

    def forward(self, student, teacher, target, epoch):
        teacher = self.checked_teacher(teacher)
        z_s = student.logits.float()
        dkd = dkd_loss(z_s, as_target(teacher.logits), target, self.alpha, self.beta, self.temperature)
        return {"ce": F.cross_entropy(z_s, target), "dkd": linear_warmup(epoch, self.warmup) * dkd}
