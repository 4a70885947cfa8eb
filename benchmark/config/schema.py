"""The suite's types: :class:`SuiteConfig` and its parts, with their defaults and per-recipe value checks.

A suite names datasets, teacher->student pairs, methods, seeds and the two training recipes. The field
annotations are the schema: :func:`benchmark.config.convert.from_dict` reads them to check a YAML mapping.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from .exceptions import ConfigError

__all__ = ["TrainRecipe", "DatasetEntry", "Pair", "SuiteConfig", "interval_check"]


def interval_check(where: str, value: float, low: float, *, strict: bool = False) -> None:
    """``value >= low`` (``> low`` when ``strict``), else a one-line error naming ``where``."""
    if value < low or (strict and value == low):
        raise ConfigError(f"{where} must be {'>' if strict else '>='} {low:g}, got {value!r}")


@dataclass
class TrainRecipe:
    """How one network is trained: optimiser, schedule, augmentation, precision, evaluation."""

    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: List[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0
    augment: str = "crop_flip"  # crop_flip | flip | none | rrc_flip (large datasets)
    eval_every: int = 10  # evaluate every k epochs and always at the last one (0: last only)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True
    compile: bool = False
    workers: int = 8  # DataLoader workers for datasets that do not fit on the device
    eval_batch_size: int = 512
    sync_bn: bool = False  # DDP on CUDA: SyncBatchNorm in the student (batch statistics over the global batch)

    _CHOICES = {"schedule": ("multistep", "cosine", "constant"),
                "augment": ("crop_flip", "flip", "none", "rrc_flip")}

    def validate(self, where: str) -> None:
        """Every value torch's SGD and the schedule accept (checked here, not at the first optimiser step)."""
        for key, allowed in self._CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{where}.{key}: '{getattr(self, key)}' is not one of {', '.join(allowed)}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            interval_check(f"{where}.{key}", getattr(self, key), 1)
        for key in ("warmup_epochs", "eval_every", "workers"):
            interval_check(f"{where}.{key}", getattr(self, key), 0)
        interval_check(f"{where}.lr", self.lr, 0, strict=True)
        interval_check(f"{where}.weight_decay", self.weight_decay, 0)
        interval_check(f"{where}.gamma", self.gamma, 0, strict=True)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{where}.momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError(f"{where}.nesterov: Nesterov momentum needs momentum > 0 (got momentum 0); "
                              f"set momentum (e.g. 0.9) or nesterov: false")
        for i, m in enumerate(self.milestones):
            interval_check(f"{where}.milestones[{i}]", m, 1)


@dataclass
class DatasetEntry:
    """One dataset of the grid, the imbalance factors to run it at, and its own method hyper-parameters."""

    name: str
    root: Optional[str] = None
    imbalance_factors: List[Optional[float]] = field(default_factory=lambda: [None])
    data_seed: int = 0  # selects the long-tailed subset; independent of the training seed
    options: Dict[str, Any] = field(default_factory=dict)  # extra build_dataset kwargs, e.g. {n_max: 600}
    method_params: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # override the suite's, per method


@dataclass
class Pair:
    """A teacher -> student pair (timm model names) and its own method hyper-parameters."""

    teacher: str
    student: str
    student_lr: Optional[float] = None  # e.g. 0.01 for MobileNet/ShuffleNet students
    method_params: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # override dataset's and suite's
    #: start the teacher from weights: "timm" (timm's pretrained weights; needs internet) or a local file
    #: (loaded through timm's ``pretrained_cfg_overlay=dict(file=...)``; the classifier is re-initialised)
    teacher_weights: Optional[str] = None
    teacher_finetune: bool = True  # with teacher_weights: fine-tune on the LT split (teacher recipe) or use as is


@dataclass
class SuiteConfig:
    """A whole benchmark grid: datasets x imbalance x pairs x methods x seeds."""

    name: str
    description: str = ""
    datasets: List[DatasetEntry] = field(default_factory=list)
    pairs: List[Pair] = field(default_factory=list)
    methods: Union[str, List[str]] = "all"
    method_params: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [0])
    teacher_train: TrainRecipe = field(default_factory=TrainRecipe)
    student_train: TrainRecipe = field(default_factory=TrainRecipe)
    plugins: List[str] = field(default_factory=list)
    device: str = "auto"
    deterministic: bool = False
    reference: Optional[str] = None  # file of reference accuracies for `benchmark check`

    def to_dict(self) -> Dict[str, Any]:
        """Every field as plain data (nested dataclasses as dicts), e.g. for a run's config snapshot."""
        return dataclasses.asdict(self)
