"""VGG with batch norm for CIFAR, as in the KD literature (CRD / DKD ``vgg8``, ``vgg11``, ``vgg13``).

Five blocks of 3x3 conv(bias) -> BN -> ReLU; 2x2 max pooling after blocks 0, 1 and 2, so on 32x32
inputs the blocks run at 32 / 16 / 8 / 4 / 4 px (the literature keeps blocks 3 and 4 at the same
resolution for CIFAR). Global average pooling and a linear 512 -> classes head. Parameter counts at
100 classes: vgg8 3.96M, vgg13 9.46M (vgg11 9.28M). The convs keep their bias, as in the reference
implementation, so the counts match the literature.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._common import CifarNet, build_cifar_model, cifar_cfg, init_weights_kaiming

__all__ = ["CifarVGG", "VGG_CFGS"]

# channels of the convs in each of the five blocks
VGG_CFGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


class CifarVGG(CifarNet):
    def __init__(self, cfg: Sequence[Sequence[int]] = VGG_CFGS["vgg8"], num_classes: int = 100,
                 in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"CifarVGG: cfg must list the convs of 5 blocks, got {len(cfg)}")
        self.in_chans = in_chans
        prev = in_chans
        blocks = []
        for block_cfg in cfg:
            layers = []
            for width in block_cfg:
                layers += [nn.Conv2d(prev, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                prev = width
            blocks.append(nn.Sequential(*layers))
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool = nn.MaxPool2d(2, 2)
        self._init_head(prev, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        x = self.block3(x)
        return self.block4(x)

    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^block0", blocks=r"^block(\d+)")


default_cfgs = generate_default_cfgs({
    name: cifar_cfg(first_conv="block0.0", pool_size=(4, 4)) for name in ("cifar_vgg8", "cifar_vgg11", "cifar_vgg13")
})


def _create(variant: str, pretrained: bool, **kwargs) -> CifarVGG:
    model_args = dict(cfg=VGG_CFGS[variant.replace("cifar_", "")])
    return build_cifar_model(CifarVGG, variant, pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_vgg8(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-8 with BN (one conv per block), 3.96M params."""
    return _create("cifar_vgg8", pretrained, **kwargs)


@register_model
def cifar_vgg11(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-11 with BN (VGG config A)."""
    return _create("cifar_vgg11", pretrained, **kwargs)


@register_model
def cifar_vgg13(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-13 with BN (VGG config B), 9.46M params."""
    return _create("cifar_vgg13", pretrained, **kwargs)
