"""``fitnet``: FitNets hints (Romero et al., ICLR 2015), single-stage version as in mdistiller.

A learned regressor (the "connector") maps the student's feature map at the hint level onto the
teacher's at the same level; the loss is the MSE between the two, added to CE from the start (the
paper's two-stage schedule, hint pre-training then KD, is not used: mdistiller trains both at once).
Defaults are mdistiller's CIFAR-100 configuration: CE weight 1, hint weight 100, hint level 2 of the
``feats`` list (stem, stage 1, 2, 3), i.e. the middle stage. Our ``hint_layer = -1`` means "the middle
level of each network" (``len(levels) // 2``), which is that same level 2 on every CIFAR network of the
literature (4- or 5-level ResNets, WRNs, VGGs, MobileNetV2, ShuffleNets) and the middle one elsewhere.

The connector is mdistiller's ``ConvReg`` (conv, BN, ReLU) for the size ratios it covers: equal or
slightly larger student maps (a conv of kernel 1 + H_s - H_t), a 2x larger student (3x3 stride-2 conv),
a 2x smaller one (4x4 stride-2 transposed conv). Other ratios, which mdistiller does not handle (stock
timm pairs at other resolutions), get a 1x1 conv and a resize to the teacher's size (adaptive average
pooling down, bilinear up): our choice.
"""
from typing import Dict, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from . import register_method
from .base import Method, MethodContext, as_target

Shape = Tuple[int, int, int]


class ConvRegressor(nn.Module):
    """Maps (B, C_s, H_s, W_s) student maps to the teacher's (C_t, H_t, W_t): conv (see module doc), BN, ReLU."""

    def __init__(self, s_shape: Shape, t_shape: Shape, use_relu: bool = True) -> None:
        super().__init__()
        (cs, hs, ws), (ct, ht, wt) = s_shape, t_shape
        self.out_size: Tuple[int, int] = (ht, wt)
        self.resize = False
        if (hs, ws) == (2 * ht, 2 * wt):
            self.conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif (2 * hs, 2 * ws) == (ht, wt):
            self.conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif ht <= hs < 2 * ht and wt <= ws < 2 * wt:
            self.conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
        else:
            self.conv = nn.Conv2d(cs, ct, kernel_size=1)
            self.resize = True
        self.bn = nn.BatchNorm2d(ct)
        self.relu = nn.ReLU(inplace=True) if use_relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.resize:
            if x.shape[-2] * x.shape[-1] >= self.out_size[0] * self.out_size[1]:
                x = F.adaptive_avg_pool2d(x, self.out_size)
            else:
                x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return self.relu(self.bn(x))


def hint_level(requested: int, num_levels: int, who: str) -> int:
    """The hint level: ``requested`` if >= 0 (checked against ``num_levels``), else the middle level."""
    level = num_levels // 2 if requested < 0 else requested
    if not 0 <= level < num_levels:
        raise ValueError(f"method 'fitnet': hint_layer={requested} is out of range for the {who}, which has "
                         f"{num_levels} feature levels (0..{num_levels - 1}); use -1 for the middle one")
    return level


def require_shapes(ctx: MethodContext, method: str) -> Tuple[Sequence[Shape], Sequence[Shape]]:
    """ctx.student_shapes / teacher_shapes, or a one-line error saying how to fill them."""
    if not ctx.student_shapes or not ctx.teacher_shapes:
        raise ValueError(f"method '{method}' sizes its connectors from the feature maps: MethodContext needs "
                         f"student_shapes and teacher_shapes (benchmark.models.map_shapes(model, input_size))")
    return ctx.student_shapes, ctx.teacher_shapes


@register_method("fitnet")
class FitNet(Method):
    """ce_weight * CE + feat_weight * MSE(connector(student map), teacher map) at the hint level."""

    hparams = {"hint_layer": -1, "ce_weight": 1.0, "feat_weight": 100.0}
    hparam_bounds = {"hint_layer": "[-1, inf)", "ce_weight": "[0, inf)", "feat_weight": "[0, inf)"}
    needs = frozenset({"logits", "features", "feature_maps"})
    summary = "FitNet, hint on a middle stage through a learned connector (Romero et al. 2015)"

    def __init__(self, ctx: MethodContext, **overrides) -> None:
        super().__init__(ctx, **overrides)
        s_shapes, t_shapes = require_shapes(ctx, self.name)
        self.level_s = hint_level(self.hint_layer, len(s_shapes), "student")
        self.level_t = hint_level(self.hint_layer, len(t_shapes), "teacher")
        self.connector = ConvRegressor(tuple(s_shapes[self.level_s]), tuple(t_shapes[self.level_t]))

    def forward(self, student, teacher, target, epoch) -> Dict[str, Tensor]:
        teacher = self.checked_teacher(teacher)
        f_s = self.connector(self.require_maps(student)[self.level_s])
        f_t = as_target(self.require_maps(teacher)[self.level_t])
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits.float(), target),
            "hint": self.feat_weight * F.mse_loss(f_s.float(), f_t),
        }
