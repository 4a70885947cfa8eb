"""``at``: attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

The attention map of a feature map f (B, C, H, W) is the channel mean of |f|^p, flattened and
L2-normalised per sample; the loss is the mean squared difference between the student's and the
teacher's maps, summed over the stages. Defaults are mdistiller's CIFAR-100 configuration (p = 2,
CE weight 1, AT weight 1000). Where the paper leaves a choice open we follow mdistiller:

* the stages are the feature levels after the stem (levels 1.. of ``Outputs.feature_maps``), paired
  in order; when the networks have different numbers of levels the shorter list decides (``zip``);
* when a pair's spatial sizes differ, the larger map is average-pooled to the smaller one's size;
* "mean squared difference" is the mean over batch and positions of the normalised maps (mdistiller's
  ``(a_s - a_t).pow(2).mean()``), not the paper's per-sample p-norm of the difference.
"""
from typing import Dict, Sequence

import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import Method, as_target


def attention_map(fmap: Tensor, p: float = 2.0) -> Tensor:
    """(B, H*W): the channel mean of |fmap|^p, flattened, L2-normalised per sample (float32)."""
    return F.normalize(fmap.float().abs().pow(p).mean(1).flatten(1), dim=1)


def at_stage_loss(f_s: Tensor, f_t: Tensor, p: float = 2.0) -> Tensor:
    """Mean squared difference of the attention maps of one stage; the larger map is pooled to the smaller."""
    (hs, ws), (ht, wt) = f_s.shape[-2:], f_t.shape[-2:]
    if hs * ws > ht * wt:
        f_s = F.adaptive_avg_pool2d(f_s.float(), (ht, wt))
    elif hs * ws < ht * wt:
        f_t = F.adaptive_avg_pool2d(f_t.float(), (hs, ws))
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


def at_loss(maps_s: Sequence[Tensor], maps_t: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """Sum over paired stages (in order; the shorter list decides) of :func:`at_stage_loss`."""
    pairs = list(zip(maps_s, maps_t))
    if not pairs:
        raise ValueError("at_loss: no feature maps to compare (both networks need at least one stage after the stem)")
    return sum(at_stage_loss(f_s, f_t, p) for f_s, f_t in pairs)


@register_method("at")
class AT(Method):
    """ce_weight * CE + feat_weight * sum over stages (levels 1..) of the attention-map loss."""

    hparams = {"p": 2.0, "ce_weight": 1.0, "feat_weight": 1000.0}
    hparam_bounds = {"p": "(0, inf)", "ce_weight": "[0, inf)", "feat_weight": "[0, inf)"}
    needs = frozenset({"logits", "features", "feature_maps"})
    summary = "AT, attention transfer over stages (Zagoruyko & Komodakis 2017)"

    def forward(self, student, teacher, target, epoch) -> Dict[str, Tensor]:
        teacher = self.checked_teacher(teacher)
        maps_s = self.require_maps(student)[1:]
        maps_t = [as_target(m) for m in self.require_maps(teacher)[1:]]
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits.float(), target),
            "at": self.feat_weight * at_loss(maps_s, maps_t, self.p),
        }
