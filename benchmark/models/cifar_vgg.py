"""VGG with batch norm for CIFAR, as in the KD literature (CRD / DKD ``vgg8``, ``vgg11``, ``vgg13``).

Five blocks of 3x3 conv(bias) -> BN -> ReLU; 2x2 max pooling after blocks 0, 1 and 2, so on 32x32
inputs the blocks run at 32 / 16 / 8 / 4 / 4 px (the literature keeps blocks 3 and 4 at the same
resolution for CIFAR). Global average pooling and a linear 512 -> classes head. Parameter counts at
100 classes: vgg8 3.96M, vgg13 9.46M (vgg11 9.28M). The convs keep their bias, as in the reference
implementation, so the counts match the literature.

Feature levels (``feature_info``): the outputs of ``block0``..``block4`` (reductions 1, 2, 4, 8, 8), as the
KD literature's ``feats``; each block ends in a ReLU, so its pre-activation is the last BN's output.
The three max-pools are separate modules (``pool0``..``pool2``), registered in execution order so that
timm's feature wrappers can rebuild the trunk from the model's children.
"""
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
        # registration order = execution order (timm's feature wrappers replay the children)
        self.block0 = blocks[0]
        self.pool0 = nn.MaxPool2d(2, 2)
        self.block1 = blocks[1]
        self.pool1 = nn.MaxPool2d(2, 2)
        self.block2 = blocks[2]
        self.pool2 = nn.MaxPool2d(2, 2)
        self.block3 = blocks[3]
        self.block4 = blocks[4]
        self._init_features(levels=[("block0",), ("pool0", "block1"), ("pool1", "block2"), ("pool2", "block3"),
                                    ("block4",)],
                            modules=[f"block{i}" for i in range(5)], channels=[c[-1] for c in cfg],
                            reductions=(1, 2, 4, 8, 8))
        self._init_head(prev, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, 4, preact=False)[0]
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        return self.block4(x)

    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^block0", blocks=r"^block(\d+)")


default_cfgs = generate_default_cfgs({
    name: cifar_cfg(first_conv="block0.0", pool_size=(4, 4)) for name in ("cifar_vgg8", "cifar_vgg11", "cifar_vgg13")
})


def _create(variant: str, pretrained: bool, **kwargs) -> CifarVGG:
    model_args = dict(cfg=VGG_CFGS[variant.replace("cifar_", "")])
    return build_cifar_model(CifarVGG, variant, pretrained, num_levels=5, **dict(model_args, **kwargs))


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
