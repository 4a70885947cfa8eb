"""CIFAR ResNets of the KD literature (He et al. 2016, section 4.2; the CRD / mdistiller variants).

3x3 stride-1 stem conv -> BN -> ReLU, then three stages of ``n = (depth - 2) / 6`` basic blocks
at 32 / 16 / 8 px (strides 1, 2, 2), global average pooling and a linear classifier. A block's
shortcut is a 1x1 conv + BN where the shape changes. ``cifar_resnetN`` uses widths
16 (stem) / 16 / 32 / 64; the "x4" variants (``cifar_resnet8x4``, ``cifar_resnet32x4``) use
32 / 64 / 128 / 256. Parameter counts at 100 classes: resnet20 0.28M, resnet32 0.47M,
resnet56 0.86M, resnet110 1.73M, resnet8x4 1.23M, resnet32x4 7.43M.

Feature levels (``feature_info``): the stem (``relu``) and ``layer1``..``layer3`` (reductions 1, 1, 2, 4).
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model

from ._common import CifarNet, build_cifar_model, cifar_cfg, init_weights_kaiming

__all__ = ["CifarResNet", "BasicBlock"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)

    def forward_preact(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(output, the residual sum before the final ReLU): one pass, same numbers as ``forward``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        pre = self.bn2(self.conv2(out)) + shortcut
        return F.relu(pre), pre


class CifarResNet(CifarNet):
    """ResNet for 32x32 inputs; ``widths`` = (stem, stage1, stage2, stage3)."""

    def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 100,
                 in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"CifarResNet: widths must be (stem, stage1, stage2, stage3), got {widths}")
        n = (depth - 2) // 6
        self.depth = depth
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        prev = widths[0]
        layers = []
        for width, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(prev, width, stride if i == 0 else 1))
                prev = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self._init_features(levels=[("conv1", "bn1", "relu"), ("layer1",), ("layer2",), ("layer3",)],
                            modules=["relu", "layer1", "layer2", "layer3"], channels=widths,
                            reductions=(1, 1, 2, 4))
        self._init_head(prev, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, 3, preact=False)[0]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)


def _create(variant: str, pretrained: bool, depth: int, widths: Sequence[int], **kwargs) -> CifarResNet:
    model_args = dict(depth=depth, widths=tuple(widths))
    return build_cifar_model(CifarResNet, variant, pretrained, num_levels=4, **dict(model_args, **kwargs))


_W1 = (16, 16, 32, 64)
_W4 = (32, 64, 128, 256)

default_cfgs = generate_default_cfgs({
    name: cifar_cfg() for name in (
        "cifar_resnet8", "cifar_resnet14", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44",
        "cifar_resnet56", "cifar_resnet110", "cifar_resnet8x4", "cifar_resnet32x4")
})


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-8 (1 block per stage, widths 16/32/64)."""
    return _create("cifar_resnet8", pretrained, 8, _W1, **kwargs)


@register_model
def cifar_resnet14(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-14 (2 blocks per stage, widths 16/32/64)."""
    return _create("cifar_resnet14", pretrained, 14, _W1, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks per stage, widths 16/32/64), 0.28M params."""
    return _create("cifar_resnet20", pretrained, 20, _W1, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (5 blocks per stage, widths 16/32/64), 0.47M params."""
    return _create("cifar_resnet32", pretrained, 32, _W1, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-44 (7 blocks per stage, widths 16/32/64)."""
    return _create("cifar_resnet44", pretrained, 44, _W1, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (9 blocks per stage, widths 16/32/64), 0.86M params."""
    return _create("cifar_resnet56", pretrained, 56, _W1, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-110 (18 blocks per stage, widths 16/32/64), 1.73M params."""
    return _create("cifar_resnet110", pretrained, 110, _W1, **kwargs)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-8x4 (1 block per stage, widths 64/128/256, stem 32), 1.23M params."""
    return _create("cifar_resnet8x4", pretrained, 8, _W4, **kwargs)


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32x4 (5 blocks per stage, widths 64/128/256, stem 32), 7.43M params."""
    return _create("cifar_resnet32x4", pretrained, 32, _W4, **kwargs)
