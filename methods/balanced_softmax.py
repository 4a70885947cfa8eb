"""``balanced_softmax``: Balanced Softmax CE (Ren et al., NeurIPS 2020, arXiv 2007.10740), no teacher:
the long-tail baseline a distilled student has to beat."""
from __future__ import annotations

import torch.nn.functional as F

from . import register_method
from .base import Method


@register_method("balanced_softmax")
class BalancedSoftmax(Method):
    """CE(z_s + log n_c, y) (log n_c and log pi_c differ by a constant); predictions use plain z_s."""

    hparams = {}
    requires_teacher = False
    summary = "Balanced Softmax CE (Ren et al. 2020), no teacher"

    def forward(self, student, teacher, target, epoch):
        return {"ce": F.cross_entropy(student.logits.float() + self.log_prior, target)}
