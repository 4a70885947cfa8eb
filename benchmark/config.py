"""Suite configuration: YAML -> validated dataclasses, with ``key=value`` overrides.

A suite names datasets, teacher->student pairs, methods, seeds and the two training recipes.
Validation happens before any training: an unknown key, a wrong type or an unknown
method/model/dataset fails with the key's path and the allowed values.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

__all__ = [
    "ConfigError", "TrainRecipe", "DatasetEntry", "Pair", "SuiteConfig", "CONFIG_DIR",
    "load_suite", "list_suites", "apply_overrides", "parse_override",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A suite file or override is invalid; the message names the key and the fix."""


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
        for key, allowed in self._CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{where}.{key}: '{getattr(self, key)}' is not one of {', '.join(allowed)}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr must be > 0, got {self.lr}")


@dataclass
class DatasetEntry:
    """One dataset of the grid and the imbalance factors to run it at."""

    name: str
    root: Optional[str] = None
    imbalance_factors: List[Optional[float]] = field(default_factory=lambda: [None])
    data_seed: int = 0  # selects the long-tailed subset; independent of the training seed
    options: Dict[str, Any] = field(default_factory=dict)  # extra build_dataset kwargs, e.g. {n_max: 600}


@dataclass
class Pair:
    """A teacher -> student pair (timm model names)."""

    teacher: str
    student: str
    student_lr: Optional[float] = None  # e.g. 0.01 for MobileNet/ShuffleNet students


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
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- parsing

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers/dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: {value!r} matches none of {', '.join(_type_name(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, List):
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected: `seeds: 0` == `seeds: [0]`
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: Any, data: Dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore
            raise ConfigError(f"{where or 'suite'}: missing required key '{name}'")
    return cls(**kwargs)


def parse_override(text: str) -> tuple:
    """``a.b.c=value`` -> (["a", "b", "c"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value (e.g. student_train.epochs=5)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _unshare(node: Any) -> Any:
    """A deep copy in which no two places share an object (unlike copy.deepcopy, which keeps aliasing)."""
    if isinstance(node, dict):
        return {k: _unshare(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshare(v) for v in node]
    return node


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Apply dotted ``key=value`` overrides to the raw YAML mapping (before validation)."""
    raw = _unshare(raw)  # YAML anchors (`student_train: *recipe`) must not make one override change both
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                    continue
                except (ValueError, IndexError):
                    raise ConfigError(f"override '{text}': '{part}' is not a valid index") from None
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{text}': '{'.'.join(path[:i + 1])}' is not a mapping")
        last = path[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError(f"override '{text}': '{last}' is not a valid index") from None
        else:
            node[last] = value
    return raw


def list_suites() -> List[str]:
    """Names of the suites shipped in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.endswith("_reference"))


def resolve_suite_path(suite: str) -> Path:
    """A suite name (``quick``) or a path to a YAML file."""
    path = Path(suite)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = CONFIG_DIR / f"{suite}.yaml"
    if candidate.exists():
        return candidate
    close = difflib.get_close_matches(suite, list_suites(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown suite '{suite}'.{hint} Suites: {', '.join(list_suites())} (or a path to a .yaml file)")


def load_suite(suite: str, overrides: Optional[List[str]] = None, validate_names: bool = True) -> SuiteConfig:
    """Load, override and validate a suite; unknown names fail here, before any training."""
    path = resolve_suite_path(suite)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = _from_dict(SuiteConfig, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None
    cfg.teacher_train.validate("teacher_train")
    cfg.student_train.validate("student_train")
    if validate_names:
        validate_names_exist(cfg)
    return cfg


def _unknown(kind: str, name: str, known: List[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
    return ConfigError(f"{where}: unknown {kind} '{name}'.{hint} Known: {shown}")


def validate_names_exist(cfg: SuiteConfig) -> None:
    """Fail before training on an unknown dataset, model, method or method hyper-parameter."""
    import timm

    import datasets as ds
    import methods

    methods.load_plugins(cfg.plugins)
    known_ds = ds.list_datasets()
    for i, entry in enumerate(cfg.datasets):
        if entry.name not in known_ds:
            raise _unknown("dataset", entry.name, known_ds, f"datasets[{i}].name")
        for f in entry.imbalance_factors:
            if f is not None and f < 1:
                raise ConfigError(f"datasets[{i}].imbalance_factors: {f} < 1 (1 = balanced, 100 = the usual LT)")
    if not cfg.datasets:
        raise ConfigError("datasets: the suite names no dataset")
    if not cfg.pairs:
        raise ConfigError("pairs: the suite names no teacher->student pair")
    all_models = timm.list_models()
    model_set = set(all_models)
    for i, pair in enumerate(cfg.pairs):
        for role in ("teacher", "student"):
            name = getattr(pair, role)
            if name not in model_set:
                close = difflib.get_close_matches(name, all_models, n=3, cutoff=0.6)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                zoo = ", ".join(m for m in all_models if m.startswith("cifar_"))
                raise ConfigError(f"pairs[{i}].{role}: unknown model '{name}'.{hint} "
                                  f"CIFAR zoo: {zoo}; or any name from timm.list_models()")
    known_methods = methods.list_methods()
    for i, name in enumerate(method_names(cfg)):
        if name not in known_methods:
            raise _unknown("method", name, known_methods, f"methods[{i}]")
    for name, params in cfg.method_params.items():
        if name not in known_methods:
            raise _unknown("method", name, known_methods, f"method_params.{name}")
        allowed = methods.get_method(name).hparams
        for key in params:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"method_params.{name}: unknown hyper-parameter '{key}'{hint}; "
                                  f"allowed: {', '.join(sorted(allowed)) or '(none)'}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device: '{cfg.device}' is not one of auto, cpu, cuda, cuda:N")


def method_names(cfg: SuiteConfig) -> List[str]:
    """The suite's methods, with ``all`` expanded to every registered method."""
    import methods

    if isinstance(cfg.methods, str):
        if cfg.methods == "all":
            return methods.list_methods()
        return [cfg.methods]
    return list(cfg.methods)
