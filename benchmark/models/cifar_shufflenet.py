"""ShuffleNet V1 / V2 for CIFAR as in the CRD repository (``ShuffleV1``, ``ShuffleV2``).

Faithful to the KD literature's variants rather than to the "3x3 stem" rule of the rest of the
zoo: both start with a 1x1 stride-1 conv to 24 channels (BN, ReLU) and each of the three stages
starts with a stride-2 unit, so on 32x32 inputs the stages run at 16 / 8 / 4 px.

* V1 (Zhang et al. 2018): groups 3, stage widths 240 / 480 / 960, 4 / 8 / 4 bottleneck units
  (grouped 1x1 -> channel shuffle -> depthwise 3x3 -> grouped 1x1; the first 1x1 of the net is
  ungrouped; stride-2 units concatenate an avg-pooled shortcut). 0.95M params at 100 classes.
* V2 (Ma et al. 2018), 1x: stage widths 116 / 232 / 464 with 3 / 7 / 3 basic units after each
  down-sampling unit, then a 1x1 conv to 1024, BN, ReLU. 1.36M params at 100 classes.

Feature levels (``feature_info``), as the KD literature's ``feats``: the stem (``relu``, after conv1-BN) and
``layer1``..``layer3`` (reductions 1, 2, 4, 8). Pre-activations are the last unit's output before its final
ReLU (V2: before the ReLU of the convolved half; the pass-through half is kept and the result shuffled
like the output, so output = relu(pre-activation); the CRD code keeps it unshuffled).
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model

from ._common import CifarNet, build_cifar_model, cifar_cfg, init_weights_kaiming

__all__ = ["CifarShuffleNetV1", "CifarShuffleNetV2", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _bn_conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN, no activation."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs),
    )


# ---------------------------------------------------------------------------------------------- V1
class ShuffleV1Unit(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_chs // 4
        self.stride = stride
        self.shuffle_groups = first_groups
        self.conv1 = _bn_conv(in_chs, mid, 1, groups=first_groups)
        self.conv2 = _bn_conv(mid, mid, 3, stride=stride, groups=mid)
        self.conv3 = _bn_conv(mid, out_chs, 1, groups=groups)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        out = F.relu(self.conv2(out), inplace=True)
        out = self.conv3(out)
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(out, inplace=True)

    def forward_preact(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(output, the sum / concatenation before the final ReLU)."""
        out = F.relu(self.conv1(x), inplace=True)
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        out = F.relu(self.conv2(out), inplace=True)
        out = self.conv3(out)
        res = self.shortcut(x)
        pre = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(pre), pre


class CifarShuffleNetV1(CifarNet):
    def __init__(self, stage_widths: Sequence[int] = (240, 480, 960), stage_blocks: Sequence[int] = (4, 8, 4),
                 groups: int = 3, stem_width: int = 24, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, stem_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        prev = stem_width
        stages = []
        for width, n in zip(stage_widths, stage_blocks):
            units = []
            for i in range(n):
                if i == 0:  # stride 2: the unit's output is concatenated with the pooled input
                    units.append(ShuffleV1Unit(prev, width - prev, 2, groups, 1 if prev == stem_width else groups))
                else:
                    units.append(ShuffleV1Unit(width, width, 1, groups, groups))
                prev = width
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self._init_features(levels=[("conv1", "bn1", "relu"), ("layer1",), ("layer2",), ("layer3",)],
                            modules=["relu", "layer1", "layer2", "layer3"],
                            channels=[stem_width, *stage_widths], reductions=(1, 2, 4, 8))
        self._init_head(prev, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, 3, preact=False)[0]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)


# ---------------------------------------------------------------------------------------------- V2
class ShuffleV2Basic(nn.Module):
    """Half the channels pass through, the other half go 1x1 -> dw 3x3 -> 1x1; concat; shuffle."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.split = chs // 2
        half = chs - self.split
        self.conv1 = _bn_conv(half, half, 1)
        self.conv2 = _bn_conv(half, half, 3, groups=half)
        self.conv3 = _bn_conv(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, :self.split], x[:, self.split:]
        out = F.relu(self.conv1(x2), inplace=True)
        out = self.conv2(out)
        out = F.relu(self.conv3(out), inplace=True)
        return channel_shuffle(torch.cat([x1, out], 1), 2)

    def forward_preact(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(output, the same concatenation and shuffle taken before the convolved half's last ReLU)."""
        x1, x2 = x[:, :self.split], x[:, self.split:]
        out = F.relu(self.conv1(x2), inplace=True)
        out = self.conv3(self.conv2(out))
        pre = channel_shuffle(torch.cat([x1, out], 1), 2)
        return channel_shuffle(torch.cat([x1, F.relu(out)], 1), 2), pre


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: both branches see the whole input; output = concat of two halves, shuffled."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid = out_chs // 2
        # left: dw 3x3 stride 2 -> 1x1
        self.left_dw = _bn_conv(in_chs, in_chs, 3, stride=2, groups=in_chs)
        self.left_pw = _bn_conv(in_chs, mid, 1)
        # right: 1x1 -> dw 3x3 stride 2 -> 1x1
        self.right_pw1 = _bn_conv(in_chs, mid, 1)
        self.right_dw = _bn_conv(mid, mid, 3, stride=2, groups=mid)
        self.right_pw2 = _bn_conv(mid, mid, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.left_pw(self.left_dw(x)), inplace=True)
        right = F.relu(self.right_pw1(x), inplace=True)
        right = F.relu(self.right_pw2(self.right_dw(right)), inplace=True)
        return channel_shuffle(torch.cat([left, right], 1), 2)


class CifarShuffleNetV2(CifarNet):
    def __init__(self, stage_widths: Sequence[int] = (116, 232, 464), stage_blocks: Sequence[int] = (3, 7, 3),
                 last_width: int = 1024, stem_width: int = 24, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, stem_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        prev = stem_width
        stages = []
        for width, n in zip(stage_widths, stage_blocks):
            stages.append(nn.Sequential(ShuffleV2Down(prev, width), *[ShuffleV2Basic(width) for _ in range(n)]))
            prev = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(prev, last_width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_width)
        self.relu2 = nn.ReLU(inplace=True)
        self._init_features(levels=[("conv1", "bn1", "relu"), ("layer1",), ("layer2",), ("layer3",)],
                            modules=["relu", "layer1", "layer2", "layer3"],
                            channels=[stem_width, *stage_widths], reductions=(1, 2, 4, 8),
                            tail=("conv2", "bn2", "relu2"))
        self._init_head(last_width, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, 3, preact=False)[0]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.relu2(self.bn2(self.conv2(x)))


default_cfgs = generate_default_cfgs({
    "cifar_shufflenetv1": cifar_cfg(pool_size=(4, 4)),
    "cifar_shufflenetv2": cifar_cfg(pool_size=(4, 4)),
})


@register_model
def cifar_shufflenetv1(pretrained: bool = False, **kwargs) -> CifarShuffleNetV1:
    """CRD's ``ShuffleV1``: groups 3, widths 240/480/960, 4/8/4 units, 0.95M params."""
    model_args = dict(stage_widths=(240, 480, 960), stage_blocks=(4, 8, 4), groups=3)
    return build_cifar_model(CifarShuffleNetV1, "cifar_shufflenetv1", pretrained, num_levels=4,
                             **dict(model_args, **kwargs))


@register_model
def cifar_shufflenetv2(pretrained: bool = False, **kwargs) -> CifarShuffleNetV2:
    """CRD's ``ShuffleV2`` (1x): widths 116/232/464, 3/7/3 units, 1024-wide last conv, 1.36M params."""
    model_args = dict(stage_widths=(116, 232, 464), stage_blocks=(3, 7, 3), last_width=1024)
    return build_cifar_model(CifarShuffleNetV2, "cifar_shufflenetv2", pretrained, num_levels=4,
                             **dict(model_args, **kwargs))
