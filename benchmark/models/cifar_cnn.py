"""Small, fast plain convnets for the CPU ``quick``/``ci`` suites (Fashion-MNIST-LT, 28x28 gray).

Not from the KD literature: a conv-BN-ReLU stack in three stages at full / half / quarter
resolution (the first conv of stages 2 and 3 has stride 2), global average pooling and a linear
classifier. Widths and depths were picked for CPU training throughput (see ``tests/benchmarks``):

* ``cifar_cnn_tiny``  (student): widths (16, 32, 48), depths (1, 2, 1): 4 convs, ~29k parameters
  at 10 classes;
* ``cifar_cnn_small`` (teacher): widths (32, 64, 128), depths (1, 1, 2): 4 convs, ~242k parameters.

Feature levels (``feature_info``): the three stages ``stages.0``..``stages.2`` (reductions 1, 2, 4); each
ends in a ReLU, so its pre-activation is the last BN's output.
"""
from typing import Sequence

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._common import CifarNet, build_cifar_model, cifar_cfg, init_weights_kaiming

__all__ = ["CifarCNN"]


def _conv_bn_relu(in_chs: int, out_chs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class CifarCNN(CifarNet):
    """Plain conv-BN-ReLU network: ``stages[i]`` has ``depths[i]`` convs of ``widths[i]`` channels.

    The first conv of the network (stage 1) maps ``in_chans`` to ``widths[0]`` at full resolution;
    the first conv of every later stage has stride 2.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 48), depths: Sequence[int] = (1, 2, 1),
                 num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg") -> None:
        super().__init__()
        if len(widths) != len(depths) or min(depths) < 1:
            raise ValueError(f"CifarCNN: widths {widths} and depths {depths} must pair up, depths >= 1")
        self.in_chans = in_chans
        stages = []
        prev = in_chans
        for i, (width, depth) in enumerate(zip(widths, depths)):
            convs = [_conv_bn_relu(prev if j == 0 else width, width, stride=2 if (i > 0 and j == 0) else 1)
                     for j in range(depth)]
            stages.append(nn.Sequential(*convs))
            prev = width
        self.stages = nn.Sequential(*stages)
        n = len(widths)
        self._init_features(levels=[(f"stages.{i}",) for i in range(n)], modules=[f"stages.{i}" for i in range(n)],
                            channels=widths, reductions=[2 ** i for i in range(n)])
        self._init_head(prev, num_classes, drop_rate, global_pool)
        init_weights_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_levels(x, len(self._level_paths) - 1, preact=False)[0]
        return self.stages(x)

    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^stages\.0\.0", blocks=r"^stages\.(\d+)")


default_cfgs = generate_default_cfgs({
    "cifar_cnn_tiny": cifar_cfg(first_conv="stages.0.0.0"),
    "cifar_cnn_small": cifar_cfg(first_conv="stages.0.0.0"),
})


@register_model
def cifar_cnn_tiny(pretrained: bool = False, **kwargs) -> CifarCNN:
    """Tiny student for the CPU suites: widths (16, 32, 48), depths (1, 2, 1)."""
    model_args = dict(widths=(16, 32, 48), depths=(1, 2, 1))
    return build_cifar_model(CifarCNN, "cifar_cnn_tiny", pretrained, num_levels=3, flatten_sequential=True,
                             **dict(model_args, **kwargs))


@register_model
def cifar_cnn_small(pretrained: bool = False, **kwargs) -> CifarCNN:
    """Small teacher for the CPU suites: widths (32, 64, 128), depths (1, 1, 2)."""
    model_args = dict(widths=(32, 64, 128), depths=(1, 1, 2))
    return build_cifar_model(CifarCNN, "cifar_cnn_small", pretrained, num_levels=3, flatten_sequential=True,
                             **dict(model_args, **kwargs))
