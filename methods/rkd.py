"""``rkd``: relational knowledge distillation (Park et al., CVPR 2019), distance + angle, on pooled features.

The student mimics the teacher's *relations* within a batch: pairwise Euclidean distances (each network's
divided by its mean non-zero distance) and the cosines of the angles at every triplet (e_j - e_i,
e_k - e_i). Both are compared with the Huber (smooth L1) loss. Defaults are mdistiller's CIFAR-100
configuration: distance weight 25, angle weight 50, CE weight 1, RKD weight 1, on the pooled
penultimate features, with the squared distance clamped at 1e-12 before its square root (mdistiller's
``eps``; the diagonal is then set to 0). The paper leaves the embedding open; we follow mdistiller.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import Method, as_target


def pairwise_distances(e: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """(B, B) Euclidean distances of the rows of ``e`` (squared if asked), clamped at ``eps``, zero diagonal."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * (e @ e.t())).clamp_min(eps)
    if not squared:
        d = d.sqrt()
    return d * (1.0 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype))


def triplet_cosines(e: Tensor) -> Tensor:
    """(B * B * B,): cos of the angle at i between e_j - e_i and e_k - e_i, for every (i, j, k)."""
    u = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # u[i, j] = unit(e_j - e_i)
    return torch.einsum("ijd,ikd->ijk", u, u).reshape(-1)


def rkd_loss(f_s: Tensor, f_t: Tensor, squared: bool = False, eps: float = 1e-12,
             distance_weight: float = 25.0, angle_weight: float = 50.0) -> Tensor:
    """distance_weight * Huber(normalised distances) + angle_weight * Huber(triplet cosines) (float32, 0-dim;
    autocast is off inside: bf16 Gram matrices would be too coarse for distances and angles)."""
    with torch.autocast(device_type=f_s.device.type, enabled=False):
        s, t = f_s.flatten(1).float(), f_t.flatten(1).float().detach()
        d_s, d_t = pairwise_distances(s, squared, eps), pairwise_distances(t, squared, eps)
        d_s = d_s / d_s[d_s > 0].mean()
        d_t = d_t / d_t[d_t > 0].mean()
        loss_d = F.smooth_l1_loss(d_s, d_t)
        loss_a = F.smooth_l1_loss(triplet_cosines(s), triplet_cosines(t))
        return distance_weight * loss_d + angle_weight * loss_a


@register_method("rkd")
class RKD(Method):
    """ce_weight * CE + feat_weight * rkd_loss(pooled student features, pooled teacher features)."""

    hparams = {"distance_weight": 25.0, "angle_weight": 50.0, "ce_weight": 1.0, "feat_weight": 1.0,
               "squared": False, "eps": 1e-12}
    hparam_bounds = {"distance_weight": "[0, inf)", "angle_weight": "[0, inf)", "ce_weight": "[0, inf)",
                     "feat_weight": "[0, inf)", "eps": "(0, inf)"}
    summary = "RKD, relational KD: distance + angle (Park et al. 2019)"

    def forward(self, student, teacher, target, epoch) -> Dict[str, Tensor]:
        teacher = self.checked_teacher(teacher)
        loss = rkd_loss(student.features, as_target(teacher.features), self.squared, self.eps,
                        self.distance_weight, self.angle_weight)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits.float(), target),
                "rkd": self.feat_weight * loss}
