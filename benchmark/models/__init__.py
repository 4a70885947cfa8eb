"""The ltkd-bench model zoo: CIFAR-style networks of the KD literature, registered into timm.

Importing this package (``import benchmark`` does) registers, one family per module:

* ``cifar_resnet``: ``cifar_resnet8/14/20/32/44/56/110``, ``cifar_resnet8x4``, ``cifar_resnet32x4``
* ``cifar_wrn``: ``cifar_wrn_16_1``, ``cifar_wrn_16_2``, ``cifar_wrn_40_1``, ``cifar_wrn_40_2``
* ``cifar_vgg``: ``cifar_vgg8``, ``cifar_vgg11``, ``cifar_vgg13`` (with BN)
* ``cifar_mobilenetv2``: ``cifar_mobilenetv2`` (CRD's ``mobile_half``)
* ``cifar_shufflenet``: ``cifar_shufflenetv1``, ``cifar_shufflenetv2``
* ``cifar_cnn``: ``cifar_cnn_tiny`` / ``cifar_cnn_small``, small fast convnets for the CPU suites

so ``timm.create_model("cifar_resnet8x4", num_classes=100)`` works, and so do timm's feature API
(``features_only=True``, ``forward_intermediates``), TorchScript and gradient checkpointing. All of them
(and stock timm models) are used through :func:`forward_outputs`, which returns what a method needs
(logits, pooled features, feature maps) in one pass; :func:`map_shapes` gives the feature maps' shapes.
"""
from . import cifar_cnn, cifar_mobilenetv2, cifar_resnet, cifar_shufflenet, cifar_vgg, cifar_wrn  # noqa: F401
from ._common import CIFAR100_MEAN, CIFAR100_STD, CifarNet
from .features import (ZOO_MODULES, create_model, feature_dim, forward_outputs, forward_with_features, list_zoo,
                       map_shapes)

__all__ = [
    "forward_with_features", "forward_outputs", "map_shapes", "feature_dim", "create_model", "list_zoo",
    "ZOO_MODULES",
    "CifarNet", "CIFAR100_MEAN", "CIFAR100_STD",
]
