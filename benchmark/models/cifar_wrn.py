"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016), as used in the KD literature (CRD, DKD).

WRN-d-k: 3x3 stride-1 stem conv to 16 channels, three stages of ``n = (d - 4) / 6`` pre-activation
basic blocks (BN-ReLU-conv, twice) of widths 16k / 32k / 64k at 32 / 16 / 8 px, a final BN-ReLU,
global average pooling and a linear classifier. Where the shape changes, the shortcut is a 1x1
conv applied to the pre-activated input. Parameter counts at 100 classes: wrn_40_2 2.26M,
wrn_16_2 0.70M, wrn_40_1 0.57M, wrn_16_1 0.18M.

Feature levels (``feature_info``): the stem conv (``conv1``) and ``block1``..``block3`` (reductions 1, 1, 2, 4),
taken before the final BN-ReLU (``forward_intermediates(norm=True)`` applies it to the last level).
Pre-activations are each level's output through the BN that the next layer applies before its ReLU.
"""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model

from ._common import CifarNet, build_cifar_model, cifar_cfg, init_weights_kaiming

__all__ = ["CifarWideResNet", "PreActBlock"]


class PreActBlock(nn.Module):
    """Pre-activation basic block; ``block_drop_rate`` is the dropout between the two convs (0 in KD)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, block_drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.block_drop_rate = block_drop_rate
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        # identity blocks add the raw input; projection blocks project the pre-activated input
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.relu2(self.bn2(out))
        if self.block_drop_rate > 0.0:
            out = F.dropout(out, p=self.block_drop_rate, training=self.training)
        out = self.conv2(out)
        return out + shortcut


def _batch_norm_no_update(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` as the network computes it (batch statistics in training), without touching running stats."""
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(x, None if use_batch_stats else bn.running_mean, None if use_batch_stats else bn.running_var,
                        bn.weight, bn.bias, use_batch_stats, 0.0, bn.eps)


class CifarWideResNet(CifarNet):
    """WRN-depth-widen_factor for 32x32 inputs."""

    tail_is_norm = True

    def __init__(self, depth: int = 16, widen_factor: int = 2, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0, block_drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"CifarWideResNet: depth must be 6n + 4 (16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.depth, self.widen_factor, self.in_chans = depth, widen_factor, in_chans
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        prev = widths[0]
        blocks = []
        for width, stride in zip(widths[1:], (1, 2, 2)):
            stage = []
            for i in range(n):
                stage.append(PreActBlock(prev, width, stride if i == 0 else 1, block_drop_rate))
                prev = width
            blocks.append(nn.Sequential(*stage))
        self.block1, self.block2, self.block3 = blocks
        self.bn1 = nn.BatchNorm2d(prev)
        self.relu = nn.ReLU(inplace=True)
        self._init_features(levels=[("conv1",), ("block1",), ("block2",), ("block3",)],
                            modules=["conv1", "block1", "block2", "block3"], channels=widths,
                            reductions=(1, 1, 2, 4), tail=("bn1", "relu"))
        self._init_head(prev, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def _refine_preacts(self, maps: List[torch.Tensor], pres: List[torch.Tensor]) -> List[torch.Tensor]:
        """Level i's pre-activation: its output through the next BN (block{i+1}'s first bn1, then ``bn1``)."""
        bns = [self.block1[0].bn1, self.block2[0].bn1, self.block3[0].bn1, self.bn1]
        return [_batch_norm_no_update(bn, m) for bn, m in zip(bns, maps)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, 3, preact=False)[0]
        x = self.conv1(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        return self.relu(self.bn1(x))

    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^conv1", blocks=r"^block(\d+)\.(\d+)")


def _create(variant: str, pretrained: bool, depth: int, widen_factor: int, **kwargs) -> CifarWideResNet:
    model_args = dict(depth=depth, widen_factor=widen_factor)
    return build_cifar_model(CifarWideResNet, variant, pretrained, num_levels=4, **dict(model_args, **kwargs))


default_cfgs = generate_default_cfgs({
    name: cifar_cfg() for name in ("cifar_wrn_16_1", "cifar_wrn_16_2", "cifar_wrn_40_1", "cifar_wrn_40_2")
})


@register_model
def cifar_wrn_16_1(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    """WRN-16-1 (2 blocks per stage, widths 16/32/64)."""
    return _create("cifar_wrn_16_1", pretrained, 16, 1, **kwargs)


@register_model
def cifar_wrn_16_2(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    """WRN-16-2 (2 blocks per stage, widths 32/64/128), 0.70M params."""
    return _create("cifar_wrn_16_2", pretrained, 16, 2, **kwargs)


@register_model
def cifar_wrn_40_1(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    """WRN-40-1 (6 blocks per stage, widths 16/32/64), 0.57M params."""
    return _create("cifar_wrn_40_1", pretrained, 40, 1, **kwargs)


@register_model
def cifar_wrn_40_2(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    """WRN-40-2 (6 blocks per stage, widths 32/64/128), 2.26M params."""
    return _create("cifar_wrn_40_2", pretrained, 40, 2, **kwargs)
