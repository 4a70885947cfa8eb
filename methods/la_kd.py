"""``la_kd``: logit-adjusted KD, post-hoc logit adjustment (Menon et al., ICLR 2021, arXiv 2007.07314)
applied to distillation: the teacher is debiased by its training prior, the student trains with the
logit-adjusted loss, and predicts with its plain logits."""
from __future__ import annotations

import torch.nn.functional as F

from . import register_method
from .base import Method, as_target
from .kd import kd_loss


@register_method("la_kd")
class LAKD(Method):
    """CE(z_s + tau*log(pi), y) + alpha * kd_loss(z_s, z_t - tau*log(pi), T)."""

    hparams = {"tau": 1.0, "temperature": 4.0, "alpha": 1.0}
    hparam_bounds = {"tau": "[0, inf)", "temperature": "(0, inf)", "alpha": "[0, inf)"}
    summary = "Logit-adjusted KD (teacher z_t - tau log pi, logit-adjusted CE)"

    def forward(self, student, teacher, target, epoch):
        teacher = self.checked_teacher(teacher)
        z_s = student.logits.float()
        adjust = self.tau * self.log_prior
        z_t = as_target(teacher.logits) - adjust
        return {
            "ce": F.cross_entropy(z_s + adjust, target),
            "kd": self.alpha * kd_loss(z_s, z_t, self.temperature),
        }
