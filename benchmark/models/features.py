"""Model-agnostic access to logits, pooled penultimate features and feature maps, for our zoo and stock
timm models.

Everything goes through timm's standard API (``forward_features`` / ``forward_intermediates`` /
``forward_head(pre_logits=True)`` / ``get_classifier``), so the harness and the methods never need a
model-specific forward. :func:`forward_outputs` computes what a method ``needs`` in one pass.
"""
import re
from typing import AbstractSet, Any, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from ltkd_core.outputs import DEFAULT_NEEDS, FIELD_NEEDS, NEEDS, Outputs

from ..errors import close_matches

__all__ = ["forward_with_features", "forward_outputs", "map_shapes", "feature_dim", "create_model", "list_zoo",
           "ZOO_MODULES"]

# modules (last component of the module name, as timm records it) that make up our zoo
ZOO_MODULES = ("cifar_cnn", "cifar_resnet", "cifar_wrn", "cifar_vgg", "cifar_mobilenetv2", "cifar_shufflenet")


def _unwrap(model: nn.Module) -> nn.Module:
    """Look through DDP / DataParallel / torch.compile wrappers for the timm API."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _logits_and_features(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    fmap = model.forward_features(x)
    feats = model.forward_head(fmap, pre_logits=True)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, nn.Identity):  # num_classes=0: model(x) returns the features
        logits = feats
    elif isinstance(classifier, nn.Module):
        logits = classifier(feats)
    else:  # no single classifier module (e.g. distilled ViTs' two heads): let the model combine them
        logits = model.forward_head(fmap)
    if feats.ndim > 2:  # heads whose pre-logits keep singleton spatial dims
        feats = feats.flatten(1)
    return logits, feats


def forward_with_features(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits, features)``: features = ``forward_head(forward_features(x), pre_logits=True)``
    (B, feature_dim(model)) and logits = ``get_classifier()(features)``, i.e. ``model(x)`` in one pass.

    Works for the zoo and stock timm models. With ``num_classes=0`` the classifier is an Identity and
    the logits are the features (as ``model(x)`` returns then). Models are looked through
    DataParallel / ``torch.compile`` wrappers (their eager forward runs); a DDP-wrapped model is
    refused while gradients are enabled, because bypassing DDP's forward breaks gradient syncing.
    """
    base = _unwrap(model)
    if isinstance(model, nn.parallel.DistributedDataParallel) and torch.is_grad_enabled():
        raise TypeError("forward_with_features: it bypasses DistributedDataParallel's forward; wrap the module that "
                        "calls forward_with_features (the harness wraps DistillStep) in DDP instead")
    return _logits_and_features(base, x)


def _head(model: nn.Module, fmap: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(logits, pooled features) from the last feature map, as :func:`_logits_and_features` computes them."""
    feats = model.forward_head(fmap, pre_logits=True)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, nn.Identity):
        logits = feats
    elif isinstance(classifier, nn.Module):
        logits = classifier(feats)
    else:
        logits = model.forward_head(fmap)
    return logits, feats.flatten(1) if feats.ndim > 2 else feats


def forward_outputs(model: nn.Module, x: torch.Tensor, needs: AbstractSet[str] = DEFAULT_NEEDS) -> Outputs:
    """The :class:`~ltkd_core.outputs.Outputs` a method ``needs`` (its ``NEEDS``), in ONE forward pass.

    Logits and pooled features only (the default): exactly :func:`forward_with_features`. With
    ``feature_maps`` / ``preact_maps``: ``forward_intermediates(x)`` (timm's API: the zoo and stock timm
    models that have it, e.g. ``resnet18``), whose final output feeds the head, so maps, features and
    logits come from the same pass. ``preact_maps`` come from the zoo's ``forward_intermediates_preact``
    where the model has it; elsewhere they are the feature maps (the pre-activations are not exposed).
    Fields not asked for are None. ``index`` is a data need and is ignored here.
    """
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"forward_outputs: unknown needs {sorted(unknown)}; allowed: {sorted(NEEDS)}")
    if not FIELD_NEEDS & set(needs):
        logits, feats = forward_with_features(model, x)
        return Outputs(logits, feats)
    base = _unwrap(model)
    if base is not model and isinstance(model, nn.parallel.DistributedDataParallel) and torch.is_grad_enabled():
        raise TypeError("forward_outputs: feature maps bypass DistributedDataParallel's forward; wrap the module "
                        "that calls forward_outputs (the harness wraps DistillStep) in DDP instead")
    if "preact_maps" in needs and hasattr(base, "forward_intermediates_preact"):
        fmap, maps, pres = base.forward_intermediates_preact(x)
    elif hasattr(base, "forward_intermediates"):
        fmap, maps = base.forward_intermediates(x)
        pres = maps
    else:
        raise TypeError(f"{type(base).__name__} has no forward_intermediates (timm's feature-map API), so methods "
                        f"needing feature maps cannot use it; pick a timm model that has it (e.g. resnet18)")
    logits, feats = _head(base, fmap)
    return Outputs(logits, feats, feature_maps=list(maps) if "feature_maps" in needs else None,
                   preact_maps=list(pres) if "preact_maps" in needs else None)


@torch.no_grad()
def map_shapes(model: nn.Module, input_size: Sequence[int]) -> List[Tuple[int, int, int]]:
    """(C, H, W) of each feature level of ``model`` for inputs of ``input_size`` (C, H, W): one dry forward
    of a single image in eval mode (the model's mode is restored). Feature methods size connectors with it."""
    base = _unwrap(model)
    if not hasattr(base, "forward_intermediates"):
        raise TypeError(f"{type(base).__name__} has no forward_intermediates (timm's feature-map API)")
    ref = next(base.parameters(), None)
    x = torch.zeros(1, *input_size, device=None if ref is None else ref.device,
                    dtype=None if ref is None else ref.dtype)
    was_training = base.training
    base.eval()
    try:
        maps = base.forward_intermediates(x, intermediates_only=True)
    finally:
        base.train(was_training)
    return [tuple(int(d) for d in m.shape[1:]) for m in maps]


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features that :func:`forward_with_features` returns.

    timm models whose head has layers after the pooling (e.g. MobileNetV3's 1280-wide conv head)
    record that pre-logits width as ``head_hidden_size``; otherwise it is ``num_features``.
    """
    base = _unwrap(model)
    for attr in ("head_hidden_size", "num_features"):
        value = getattr(base, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise AttributeError(f"{type(base).__name__} exposes neither head_hidden_size nor num_features")


def list_zoo() -> List[str]:
    """Names of the models the ltkd-bench zoo registers into timm, sorted."""
    names = set()
    for module in ZOO_MODULES:
        names.update(timm.list_models(module=module))
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list:
    """'cifar_resnet8' < 'cifar_resnet20' < 'cifar_resnet110' (numbers compare as numbers)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", name) if tok]


# model sources that timm resolves itself (Hugging Face Hub, a local folder)
_SOURCE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def create_model(name: str, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=..., in_chans=..., **kwargs)``.

    An unknown name raises a one-line ``ValueError`` naming close matches among ``timm.list_models()``
    (e.g. ``'cifar_resnet8x3'`` -> ``'cifar_resnet8x4'``) instead of timm's bare ``RuntimeError``.
    """
    if not isinstance(name, str) or not (name.startswith(_SOURCE_PREFIXES) or timm.is_model(name)):
        raise ValueError(_unknown_model_message(name))
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _unknown_model_message(name: Any) -> str:
    candidates = timm.list_models()
    close = close_matches(name, candidates, n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() or benchmark.models.list_zoo()"
    return f"unknown model {name!r}{hint}"
