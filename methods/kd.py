"""``kd``: vanilla knowledge distillation (Hinton, Vinyals & Dean, 2015, arXiv 1503.02531)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import Method, as_target


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), summed over classes, mean over the batch (0-dim).

    Computed in float32 whatever the input dtype (bf16 softmax/log is too coarse for a KL)."""
    t = float(temperature)
    log_p_s = F.log_softmax(logits_student.float() / t, dim=1)
    log_p_t = F.log_softmax(logits_teacher.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


@register_method("kd")
class KD(Method):
    """(1 - alpha) * CE + alpha * kd_loss; CIFAR defaults T=4, alpha=0.9."""

    hparams = {"temperature": 4.0, "alpha": 0.9}
    hparam_bounds = {"temperature": "(0, inf)", "alpha": "[0, 1]"}  # (1 - alpha) CE + alpha KD
    summary = "KD (Hinton et al. 2015)"

    def forward(self, student, teacher, target, epoch):
        teacher = self.checked_teacher(teacher)
        z_s = student.logits.float()
        return {
            "ce": (1.0 - self.alpha) * F.cross_entropy(z_s, target),
            "kd": self.alpha * kd_loss(z_s, as_target(teacher.logits), self.temperature),
        }
