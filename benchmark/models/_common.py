"""Shared pieces of the CIFAR zoo: timm's model API (head, features, intermediates), default cfgs, builder.

Every zoo model subclasses :class:`CifarNet`, implements ``forward_features`` (returning the last
feature map, B x C x H x W) and, once its trunk is built, calls :meth:`CifarNet._init_features` with
its feature levels and :meth:`CifarNet._init_head`. timm's conventions follow from that:

* ``forward_head(x, pre_logits=True)`` -> pooled features (B, num_features), dropout included
  (as timm's ResNet does), so ``get_classifier()(forward_head(x, pre_logits=True)) == forward(x)``;
* ``get_classifier()`` / ``reset_classifier(num_classes, global_pool)``; ``num_classes=0`` gives an
  Identity head and ``global_pool=''`` (only with ``num_classes=0``) returns the unpooled map;
* ``feature_info`` (one entry per feature level: ``num_chs``, ``reduction``, ``module``), so
  ``timm.create_model(name, features_only=True)`` works with timm's list / dict / hook / getter / fx
  wrappers; ``forward_intermediates`` and ``prune_intermediate_layers`` in timm's signature;
* ``set_grad_checkpointing()``; TorchScript (``torch.jit.script``) and FX tracing.

Feature levels mirror the ``feats`` lists of the KD literature's CIFAR code (CRD / mdistiller): level 0
is the stem, then one level per stage. :meth:`CifarNet.forward_intermediates_preact` also returns each
level's pre-activation (see its docstring), which feature-distillation methods such as ReviewKD use.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint

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


def _run_preact(module: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``module`` on ``x``; return (output, pre-activation), the tensor before its final ReLU.

    A block with a ``forward_preact`` method says itself; a Sequential recurses into its last child; a
    ReLU is applied out of place (the pre-activation survives); anything else ends in no activation,
    so its output is its own pre-activation.
    """
    if hasattr(module, "forward_preact"):
        return module.forward_preact(x)
    if isinstance(module, nn.Sequential) and len(module) > 0:
        for child in list(module)[:-1]:
            x = child(x)
        return _run_preact(module[-1], x)
    if isinstance(module, nn.ReLU):
        return F.relu(x), x
    out = module(x)
    return out, out


class CifarNet(nn.Module):
    """Base class of the zoo: timm's model API on top of a subclass's ``forward_features`` and levels."""

    num_features: int
    num_classes: int
    grad_checkpointing: bool
    #: whether the modules after the last level are a pure norm (+ activation): ``norm=True`` applies them
    tail_is_norm: bool = False

    # -- construction ---------------------------------------------------------------------------
    def _init_features(self, levels: Sequence[Sequence[str]], modules: Sequence[str], channels: Sequence[int],
                       reductions: Sequence[int], tail: Sequence[str] = ()) -> None:
        """Declare the feature levels: ``levels[i]`` are the attribute paths run (in order) from level i-1's
        output to level i's, ``modules[i]`` the module whose output level i is (timm's ``feature_info``),
        ``tail`` the paths from the last level to ``forward_features``' output."""
        if not (len(levels) == len(modules) == len(channels) == len(reductions)):
            raise ValueError(f"{type(self).__name__}: levels, modules, channels and reductions must have one "
                             f"entry per feature level")
        self._level_paths: List[List[str]] = [list(p) for p in levels]
        self._tail_paths: List[str] = list(tail)
        self.feature_info = [dict(num_chs=int(c), reduction=int(r), module=m)
                             for c, r, m in zip(channels, reductions, modules)]
        self.grad_checkpointing = False

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0,
                   global_pool: str = "avg") -> None:
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.drop_rate = float(drop_rate or 0.0)
        self.global_pool, self.fc = self._make_head(self.num_classes, global_pool)

    def _make_head(self, num_classes: int, global_pool: str) -> Tuple[nn.Module, nn.Module]:
        """timm's pooling (``''`` = none, ``avg``, ``max``, ``avgmax``, ``catavgmax``) and a linear classifier."""
        if not global_pool and num_classes > 0:
            raise ValueError(f"{type(self).__name__}: global_pool='' (no pooling) needs num_classes=0, got "
                             f"num_classes={num_classes}; use reset_classifier(0, '') for unpooled features")
        try:
            pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        except AssertionError:
            raise ValueError(f"{type(self).__name__}: unknown global_pool {global_pool!r}; use one of "
                             f"'', 'avg', 'max', 'avgmax', 'catavgmax'") from None
        self.head_hidden_size = self.num_features * pool.feat_mult()
        fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        return pool, fc

    # -- timm head API -------------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New classifier for ``num_classes`` (0: none); ``global_pool`` None keeps the current pooling."""
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        ref = next(self.parameters(), None)
        self.num_classes = int(num_classes)
        self.global_pool, self.fc = self._make_head(self.num_classes, pool_type)
        if ref is not None:
            self.fc.to(device=ref.device, dtype=ref.dtype)
        self.fc.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- timm feature API ----------------------------------------------------------------------
    @torch.jit.ignore
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's intermediate-feature API: the outputs of the feature levels in ``indices`` (None: all,
        int n: the last n, list: those) and, unless ``intermediates_only``, ``forward_features(x)``
        (the last level reached when ``stop_early``). ``norm`` applies a final norm layer (WRN's BN-ReLU)
        to the last level; models without one ignore it."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__}: output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        last = max_index if (stop_early or intermediates_only) else len(self.feature_info) - 1
        out, maps, _ = self._forward_levels(x, last, preact=False)
        intermediates = [maps[i] for i in take]
        if norm and self.tail_is_norm and take and take[-1] == len(self.feature_info) - 1:
            intermediates[-1] = out if last == take[-1] else self._forward_tail(maps[-1])
        if intermediates_only:
            return intermediates
        return out, intermediates

    @torch.jit.ignore
    def forward_intermediates_preact(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor],
                                                                     List[torch.Tensor]]:
        """One full pass returning ``(forward_features(x), level outputs, level pre-activations)``.

        A level's pre-activation is the tensor right before the ReLU that follows its output: inside the
        level for post-activation networks (ResNet, VGG, ShuffleNets, the CNNs: output = relu(preact));
        the next layer's BN for the pre-activation WRN (as the KD literature's CIFAR code defines it); the
        output itself where no ReLU follows (MobileNetV2's linear bottlenecks and the WRN's tail-less levels).
        """
        return self._forward_levels(x, len(self.feature_info) - 1, preact=True)

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Replace the levels after the last one in ``indices`` (and the tail, the head) by Identity."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        for paths in self._level_paths[max_index + 1:]:
            for path in paths:
                self._set_module(path, nn.Identity())
        truncated = max_index < len(self.feature_info) - 1
        if truncated or (prune_norm if self.tail_is_norm else prune_head):
            for path in self._tail_paths:
                self._set_module(path, nn.Identity())
            self._tail_paths = []
        if prune_head:
            self.reset_classifier(0, "")
        return take

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in backward instead of storing its activations (timm's API)."""
        self.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for timm's layer-wise lr decay (stem, then one group per block)."""
        return dict(stem=r"^conv1|^bn1", blocks=r"^layer(\d+)\.(\d+)")

    # -- the level runner (eager Python: intermediates, pre-activations, checkpointed forward) -------
    def _set_module(self, path: str, module: nn.Module) -> None:
        parent, _, name = path.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, name, module)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and isinstance(module, nn.Sequential) and torch.is_grad_enabled():
            return checkpoint(module, x)  # a whole stage per segment: in-place ReLUs stay inside it
        return module(x)

    def _forward_tail(self, x: torch.Tensor) -> torch.Tensor:
        for path in self._tail_paths:
            x = self.get_submodule(path)(x)
        return x

    def _forward_levels(self, x: torch.Tensor, last: int, preact: bool
                        ) -> Tuple[torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
        """Levels 0..last: (forward_features output if ``last`` is the final level, else level ``last``'s
        output; the level outputs; their pre-activations, or [] unless ``preact``)."""
        maps: List[torch.Tensor] = []
        pres: List[torch.Tensor] = []
        for paths in self._level_paths[:last + 1]:
            modules = [self.get_submodule(p) for p in paths]
            if preact:
                for module in modules[:-1]:
                    x = module(x)
                x, pre = _run_preact(modules[-1], x)
                pres.append(pre)
            else:
                for module in modules:
                    x = self._run(module, x)
            maps.append(x)
        if preact:
            pres = self._refine_preacts(maps, pres)
        if last == len(self._level_paths) - 1:
            x = self._forward_tail(x)
        return x, maps, pres

    def _refine_preacts(self, maps: List[torch.Tensor], pres: List[torch.Tensor]) -> List[torch.Tensor]:
        """Hook for networks whose pre-activation is not inside the level (the WRN): default unchanged."""
        return pres


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


def build_cifar_model(model_cls: Union[Type[nn.Module], Callable[..., nn.Module]], variant: str,
                      pretrained: bool = False, num_levels: int = 4, flatten_sequential: bool = False,
                      **kwargs: Any) -> nn.Module:
    """Build a zoo model through timm's ``build_model_with_cfg`` (sets ``pretrained_cfg``/``default_cfg``).

    ``features_only=True`` returns all ``num_levels`` feature levels by default (timm's ``out_indices``);
    ``flatten_sequential`` lets timm's list/dict wrappers reach levels one ``nn.Sequential`` deep.
    There are no pretrained weights for the zoo: ``pretrained=True`` raises a ``ValueError`` unless a local
    file is named with ``pretrained_cfg_overlay=dict(file=...)`` (timm's own loader then adapts the head).
    ``drop_path_rate``/``drop_block_rate`` of 0 (or None) are accepted and ignored, other values raise.
    """
    if pretrained and not (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):
        raise ValueError(
            f"{variant}: no pretrained weights exist for the ltkd-bench CIFAR zoo; create it with "
            f"pretrained=False and train it (teachers are trained by the harness), or load your own "
            f"weights with timm.create_model({variant!r}, checkpoint_path=...) or "
            f"pretrained=True, pretrained_cfg_overlay=dict(file=...)")
    for name in ("drop_path_rate", "drop_block_rate"):
        value = kwargs.pop(name, None)
        if value:
            raise ValueError(f"{variant}: {name}={value} is not supported by the CIFAR zoo")
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    feature_cfg = dict(out_indices=tuple(range(num_levels)), flatten_sequential=flatten_sequential)
    model = build_model_with_cfg(model_cls, variant, pretrained=pretrained, feature_cfg=feature_cfg, **kwargs)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model
