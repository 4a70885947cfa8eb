"""``dist``: DIST, "Knowledge Distillation from A Stronger Teacher" (Huang et al., NeurIPS 2022,
arXiv 2205.10536). Matches relations rather than values: 1 - Pearson correlation between student and
teacher probabilities across classes per sample (inter-class) and across the batch per class
(intra-class), as in the authors' ``dist_kd.py`` (T^2 scaling included). Defaults are the paper's
CIFAR-100 setting as we know it: beta = gamma = 2, T = 4, plus CE with weight 1.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import Method, as_target


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(logits_student: Tensor, logits_teacher: Tensor, beta: float, gamma: float, temperature: float) -> Tensor:
    """T^2 * (beta * (1 - mean_i pearson(p_s,i, p_t,i)) + gamma * (1 - mean_c pearson(p_s[:, c], p_t[:, c])))."""
    t = float(temperature)
    p_s = F.softmax(logits_student.float() / t, dim=1)
    p_t = F.softmax(logits_teacher.float() / t, dim=1)
    inter = 1.0 - _pearson_rows(p_s, p_t).mean()
    intra = 1.0 - _pearson_rows(p_s.t(), p_t.t()).mean()
    return (t * t) * (beta * inter + gamma * intra)


@register_method("dist")
class DIST(Method):
    """CE + DIST relation loss (inter- and intra-class Pearson), beta=gamma=2, T=4."""

    hparams = {"beta": 2.0, "gamma": 2.0, "temperature": 4.0}
    hparam_bounds = {"beta": "[0, inf)", "gamma": "[0, inf)", "temperature": "(0, inf)"}
    summary = "DIST (Huang et al. 2022)"

    def forward(self, student, teacher, target, epoch):
        teacher = self.checked_teacher(teacher)
        z_s = student.logits.float()
        return {
            "ce": F.cross_entropy(z_s, target),
            "dist": dist_loss(z_s, as_target(teacher.logits), self.beta, self.gamma, self.temperature),
        }
