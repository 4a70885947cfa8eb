"""``bkd``: Balanced Knowledge Distillation (Zhang et al., 2021, arXiv 2104.10510; Neurocomputing 2023).

The teacher's soft targets are re-weighted by class-balanced "effective number" weights (Cui et al.,
CVPR 2019) and renormalised, so the KL term stops favouring head classes; the CE stays instance-balanced.
Follows the authors' code (EricZsy/BalancedKnowledgeDistillation, ``BKDLoss``): w_c = (1 - beta) /
(1 - beta^{n_c}) normalised to mean 1, beta = 0.9999, T = 2, loss CE + alpha * T^2 * KL. Their
CIFAR-10 script switches the weights on late (deferred re-weighting, DRW: from 0-based epoch 160 of 200,
plain KD at T=2 before). ``drw_epoch`` reproduces that: plain KD for 1-based epochs 1..drw_epoch, the
re-weighted teacher after (``drw_epoch=160`` is their schedule; configs/cifar10_lt.yaml scales it to its
epochs). The default 0 applies the weights from the start, their CIFAR-100 setting.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import Method, MethodContext, as_target
from .kd import kd_loss


def effective_number_weights(class_counts: Tensor, beta: float) -> Tensor:
    """w_c = (1 - beta) / (1 - beta^{n_c}), normalised to mean 1 (all ones when beta = 0); a class with no
    sample counts as one. The constant (1 - beta) cancels in the normalisation, so it is not computed."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1.0)
    w = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)).reciprocal()
    return (w / w.mean()).float()


def bkd_loss(logits_student: Tensor, logits_teacher: Tensor, class_weights: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(q || softmax(z_s/T)) with q_c proportional to w_c * softmax(z_t/T)_c, batch mean (0-dim).

    Re-weighting then renormalising is softmax(z_t/T + log w), so this is ``kd_loss`` on shifted logits."""
    t = float(temperature)
    shifted = logits_teacher.float() + t * torch.log(class_weights.float())
    return kd_loss(logits_student, shifted, t)


@register_method("bkd")
class BKD(Method):
    """CE + alpha * bkd_loss (effective-number re-weighted teacher), T=2, beta=0.9999."""

    hparams = {"temperature": 2.0, "beta": 0.9999, "alpha": 1.0, "drw_epoch": 0}
    hparam_bounds = {"temperature": "(0, inf)", "beta": "[0, 1)", "alpha": "[0, inf)", "drw_epoch": "[0, inf)"}
    epoch_params = {"drw_epoch": "start"}  # plain KD through epoch drw_epoch, re-weighted after
    summary = "Balanced KD (Zhang et al. 2021)"

    def __init__(self, ctx: MethodContext, **overrides) -> None:
        super().__init__(ctx, **overrides)  # hparam_bounds: beta in [0, 1), drw_epoch >= 0
        self.register_buffer("class_weights", effective_number_weights(self.class_counts, self.beta),
                             persistent=False)

    def forward(self, student, teacher, target, epoch):
        teacher = self.checked_teacher(teacher)
        z_s, z_t = student.logits.float(), as_target(teacher.logits)
        if epoch > self.drw_epoch:
            kd = bkd_loss(z_s, z_t, self.class_weights, self.temperature)
        else:
            kd = kd_loss(z_s, z_t, self.temperature)
        return {"ce": F.cross_entropy(z_s, target), "kd": self.alpha * kd}
