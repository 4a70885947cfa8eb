"""What a network produced for one batch (:class:`Outputs`) and what a method may ask for (:data:`NEEDS`).

The data type between the model zoo (which fills it, ``benchmark.models.forward_outputs``) and the methods
(which read it): it lives here so that neither package imports the other. ``methods.base`` re-exports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, List, Optional

from torch import Tensor

__all__ = ["Outputs", "NEEDS", "DEFAULT_NEEDS", "FIELD_NEEDS"]

#: What a method may declare in ``Method.needs``: network outputs (``logits``, pooled ``features``, the
#: levels' ``feature_maps`` / ``preact_maps``, see :class:`Outputs`) and the batch's dataset row ``index``.
NEEDS: FrozenSet[str] = frozenset({"logits", "features", "feature_maps", "preact_maps", "index"})
DEFAULT_NEEDS: FrozenSet[str] = frozenset({"logits", "features"})
#: Needs that fill the :class:`Outputs` field of the same name (the stage maps: an extra forward pass);
#: a field not declared stays None.
FIELD_NEEDS: FrozenSet[str] = frozenset({"feature_maps", "preact_maps"})


@dataclass
class Outputs:
    """What a network produced for one batch: logits (B, C), pooled penultimate features (B, D) and, for
    methods whose ``needs`` ask for them, feature maps (None otherwise).

    ``feature_maps``: the outputs of every feature level of the network (timm's ``forward_intermediates``
    over its ``feature_info``; level 0 is the stem in the zoo and in timm's ResNets, as in the KD
    literature's ``feats``). ``preact_maps``: the same levels before their final activation where the
    network can give them (the zoo's ``forward_intermediates_preact``), else the ``feature_maps`` themselves.
    """

    logits: Tensor
    features: Tensor
    feature_maps: Optional[List[Tensor]] = None
    preact_maps: Optional[List[Tensor]] = None
