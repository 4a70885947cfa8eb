"""Shared pieces of the CIFAR zoo: the timm-style classifier head API, default cfgs and the builder.

Every zoo model subclasses :class:`CifarNet`, implements ``forward_features`` (returning the last
feature map, B x C x H x W, after the final ReLU) and calls :meth:`CifarNet._init_head` once its
trunk is built. The head is global average pooling (adaptive, so 28x28 inputs work too), optional
dropout and a linear classifier, following timm's conventions:

* ``forward_head(x, pre_logits=True)`` -> pooled features (B, num_features), dropout included
  (as timm's ResNet does), so ``get_classifier()(forward_head(x, pre_logits=True)) == forward(x)``;
* ``get_classifier()`` / ``reset_classifier(num_classes)``; ``num_classes=0`` gives an Identity head.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg

__all__ = ["CifarNet", "CIFAR100_MEAN", "CIFAR100_STD", "cifar_cfg", "build_cifar_model",
           "init_weights_kaiming"]

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def cifar_cfg(**kwargs: Any) -> Dict[str, Any]:
    """Default (pretrained) cfg of a zoo model: CIFAR-100 input, no weights."""
    cfg = dict(
        url="",
        num_classes=100,
        input_size=(3, 32, 32),
        pool_size=(8, 8),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        first_conv="conv1",
        classifier="fc",
        fixed_input_size=False,
        license="apache-2.0",
    )
    cfg.update(kwargs)
    return cfg


class CifarNet(nn.Module):
    """Base class of the zoo: timm's classifier-head API on top of a subclass's ``forward_features``."""

    num_features: int
    num_classes: int

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0,
                   global_pool: str = "avg") -> None:
        if global_pool != "avg":
            raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' (got {global_pool!r})")
        self.num_features = self.head_hidden_size = int(num_features)
        self.num_classes = int(num_classes)
        self.drop_rate = float(drop_rate or 0.0)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    # -- timm head API -------------------------------------------------------------------------
    def get_classifier(self, name_only: bool = False):
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' (got {global_pool!r})")
        ref = next(self.parameters(), None)
        self.num_classes = int(num_classes)
        self.fc = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()
        if ref is not None:
            self.fc.to(device=ref.device, dtype=ref.dtype)
        self.fc.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # more of timm's model API: no gradient checkpointing in the zoo; groups for layer-wise lr decay
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for timm's layer-wise lr decay (stem, then one group per block)."""
        return dict(stem=r"^conv1|^bn1", blocks=r"^layer(\d+)\.(\d+)")


def init_weights_kaiming(model: nn.Module) -> None:
    """The CIFAR KD repos' init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, linear bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_cifar_model(model_cls: Type[nn.Module] | Callable[..., nn.Module], variant: str,
                      pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a zoo model through timm's ``build_model_with_cfg`` (sets ``pretrained_cfg``/``default_cfg``).

    There are no pretrained weights for the zoo: ``pretrained=True`` raises a ``ValueError``.
    ``drop_path_rate``/``drop_block_rate`` of 0 (or None) are accepted and ignored, other values raise.
    """
    if pretrained:
        raise ValueError(
            f"{variant}: no pretrained weights exist for the ltkd-bench CIFAR zoo; create it with "
            f"pretrained=False and train it (teachers are trained by the harness), or load your own "
            f"weights with timm.create_model({variant!r}, checkpoint_path=...)")
    for name in ("drop_path_rate", "drop_block_rate"):
        value = kwargs.pop(name, None)
        if value:
            raise ValueError(f"{variant}: {name}={value} is not supported by the CIFAR zoo")
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    model = build_model_with_cfg(model_cls, variant, pretrained=False, **kwargs)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model
