"""MobileNetV2 for CIFAR as in the CRD repository (``mobile_half``: expansion 6, width 0.5).

Faithful to the KD literature's variant rather than to the "stride-1 stem" rule of the rest of the
zoo: the 3x3 stem conv has stride 2, the inverted-residual stages (t, c, n, s) =
(1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1) with channels
scaled by 0.5, so on 32x32 inputs they run at 16/16/8/4/4/2/2 px; every block has its 1x1
expansion conv (also where t = 1). A 1x1 conv to 1280 channels, BN, ReLU, global average pooling
and a linear head follow. 0.81M parameters at 100 classes.

Feature levels (``feature_info``), as the KD literature's ``feats``: the stem (``conv1``, its ReLU ``conv1.2``) and the end of
each resolution (the block groups before a stride-2 group and the last one: ``blocks.1``, ``blocks.2``,
``blocks.4``, ``blocks.6``; reductions 2, 2, 4, 8, 16). The groups end in linear bottlenecks (no ReLU),
so their pre-activations are the outputs themselves; the stem's is its BN output.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._common import CifarNet, build_cifar_model, cifar_cfg, init_weights_kaiming

__all__ = ["CifarMobileNetV2", "InvertedResidual"]

# (expansion t, channels c, blocks n, stride s); t=None means "the model's expansion"
_SETTING: Tuple[Tuple[object, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_chs)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid = in_chs * expand_ratio
        self.use_res = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            _conv_bn(in_chs, mid, 1),                        # pointwise expansion
            _conv_bn(mid, mid, 3, stride=stride, groups=mid),  # depthwise
            _conv_bn(mid, out_chs, 1, act=False),            # linear bottleneck
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res else out


class CifarMobileNetV2(CifarNet):
    def __init__(self, expansion: int = 6, width_mult: float = 0.5, stem_stride: int = 2,
                 num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", setting: Sequence[Tuple[object, int, int, int]] = _SETTING) -> None:
        super().__init__()
        self.in_chans = in_chans
        prev = int(32 * width_mult)
        self.conv1 = _conv_bn(in_chans, prev, 3, stride=stem_stride)
        blocks = []
        for t, c, n, s in setting:
            out = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(prev, out, s if i == 0 else 1, expansion if t is None else int(t)))
                prev = out
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn(prev, last, 1)
        # a level ends where the resolution is about to drop (and at the last group)
        strides = [s for _, _, _, s in setting]
        ends = [g for g in range(len(setting)) if g == len(setting) - 1 or strides[g + 1] > 1]
        # the stem's level is named by its ReLU ("conv1.2"): timm's list/dict wrappers flatten Sequentials
        levels, modules, channels, reductions = [("conv1",)], ["conv1.2"], [int(32 * width_mult)], [stem_stride]
        reduction, start = stem_stride, 0
        for end in ends:
            levels.append(tuple(f"blocks.{g}" for g in range(start, end + 1)))
            modules.append(f"blocks.{end}")
            channels.append(int(setting[end][1] * width_mult))
            for g in range(start, end + 1):
                reduction *= strides[g]
            reductions.append(reduction)
            start = end + 1
        self._init_features(levels, modules, channels, reductions, tail=("conv2",))
        self._init_head(last, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, len(self.feature_info) - 1, preact=False)[0]
        x = self.conv1(x)
        x = self.blocks(x)
        return self.conv2(x)

    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^conv1", blocks=[(r"^blocks\.(\d+)", None), (r"^conv2", (99999,))])


default_cfgs = generate_default_cfgs({
    "cifar_mobilenetv2": cifar_cfg(first_conv="conv1.0", pool_size=(2, 2)),
})


@register_model
def cifar_mobilenetv2(pretrained: bool = False, **kwargs) -> CifarMobileNetV2:
    """CRD's ``mobile_half``: MobileNetV2, expansion 6, width 0.5, 0.81M params."""
    model_args = dict(expansion=6, width_mult=0.5)
    return build_cifar_model(CifarMobileNetV2, "cifar_mobilenetv2", pretrained, num_levels=5, flatten_sequential=True,
                             **dict(model_args, **kwargs))
