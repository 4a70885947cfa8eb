"""``reviewkd``: knowledge review (Chen et al., CVPR 2021, "Distilling Knowledge via Knowledge Review").

Each student level is fused, deepest first, with the already fused deeper levels by an attention-based
fusion block (ABF: 1x1 conv to a common width, a 2-channel sigmoid attention mixing it with the upsampled
residual, a 3x3 conv to the teacher's width); every fused output is compared with the teacher's map of
the same level by the hierarchical context loss (HCL: MSE at full size plus MSE of 4x4, 2x2, 1x1 average
poolings smaller than the map, weighted 1, 1/2, 1/4, 1/8 and normalised by their sum).

Defaults are mdistiller's CIFAR-100 configuration: CE weight 1, review weight 5 (its resnet32x4 ->
resnet8x4 config; its global default is 1), linear warm-up of the review term over 20 epochs, middle
width min(512, width of the student's pooled features). Where the paper leaves choices open we follow
mdistiller: the levels are the stages after the stem plus the pooled features (as a 1x1 map); the
student's are post-activation, the teacher's pre-activation (``Outputs.preact_maps``; ``stu_preact``
switches the student's too); fused maps are resized to the teacher's size by nearest interpolation.
When the networks have different numbers of stages the deepest ``min`` of them are paired (mdistiller
configures pairs by hand; aligning from the deep end is what its reversed lists do).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register_method
from .base import Method, MethodContext, as_target, linear_warmup
from .fitnet import require_shapes


class ABF(nn.Module):
    """Attention-based fusion: (student map, residual from the deeper level) -> (output map, new residual)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Optional[Tensor], out_size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("ABF: a fusing block needs the residual of the deeper level")
            residual = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def hcl_loss(maps_s: Sequence[Tensor], maps_t: Sequence[Tensor]) -> Tensor:
    """Hierarchical context loss summed over paired maps (same shapes), in float32."""
    total = 0.0
    for f_s, f_t in zip(maps_s, maps_t):
        f_s, f_t = f_s.float(), f_t.float()
        h = f_s.shape[-2]
        loss, weight, norm = F.mse_loss(f_s, f_t), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size))
            norm += weight
        total = total + loss / norm
    return total


@register_method("reviewkd")
class ReviewKD(Method):
    """ce_weight * CE + warm-up * feat_weight * HCL(review-fused student levels, teacher levels)."""

    hparams = {"ce_weight": 1.0, "feat_weight": 5.0, "warmup": 20, "max_mid_channels": 512, "stu_preact": False}
    hparam_bounds = {"ce_weight": "[0, inf)", "feat_weight": "[0, inf)", "warmup": "[0, inf)",
                     "max_mid_channels": "[1, inf)"}
    epoch_params = {"warmup": "warmup"}
    needs = frozenset({"logits", "features", "feature_maps", "preact_maps"})
    summary = "ReviewKD, knowledge review with attention-based fusion (Chen et al. 2021)"

    def __init__(self, ctx: MethodContext, **overrides) -> None:
        super().__init__(ctx, **overrides)
        s_shapes, t_shapes = require_shapes(ctx, self.name)
        if not ctx.teacher_dim:
            raise ValueError("method 'reviewkd' needs the teacher's pooled feature width (MethodContext.teacher_dim)")
        self.num_stages = min(len(s_shapes), len(t_shapes)) - 1
        if self.num_stages < 1:
            raise ValueError(f"method 'reviewkd' needs at least one stage after the stem in both networks; got "
                             f"{len(s_shapes)} and {len(t_shapes)} feature levels")
        in_channels = [int(s[0]) for s in s_shapes[-self.num_stages:]] + [int(ctx.student_dim)]
        out_channels = [int(t[0]) for t in t_shapes[-self.num_stages:]] + [int(ctx.teacher_dim)]
        mid = min(int(self.max_mid_channels), in_channels[-1])
        blocks = [ABF(c_in, mid, c_out, fuse=i < len(in_channels) - 1)
                  for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))]
        self.abfs = nn.ModuleList(blocks[::-1])  # deepest (the pooled features) first

    def _levels(self, out, maps: List[Tensor]) -> List[Tensor]:
        """The paired stages (deepest ``num_stages``) and the pooled features as a 1x1 map, shallow to deep."""
        return list(maps[-self.num_stages:]) + [out.features.flatten(1)[:, :, None, None]]

    def forward(self, student, teacher, target, epoch) -> Dict[str, Tensor]:
        teacher = self.checked_teacher(teacher)
        s_levels = self._levels(student, self.require_maps(student, "preact_maps" if self.stu_preact else "feature_maps"))
        t_levels = [as_target(t) for t in self._levels(teacher, self.require_maps(teacher, "preact_maps"))]
        fused: List[Tensor] = []
        residual: Optional[Tensor] = None
        for abf, x, t in zip(self.abfs, s_levels[::-1], t_levels[::-1]):
            out, residual = abf(x, residual, tuple(t.shape[-2:]))
            fused.insert(0, out)
        warm = linear_warmup(epoch, self.warmup)
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits.float(), target),
            "review": (warm * self.feat_weight) * hcl_loss(fused, t_levels),
        }
