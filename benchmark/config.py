"""Suite configuration: YAML -> validated dataclasses, with ``key=value`` overrides.

A suite names datasets, teacher->student pairs, methods, seeds and the two training recipes.
Validation happens before any training: an unknown key, a wrong type, an impossible value or an
unknown method/model/dataset/option fails with one line naming the key's path and the fix.

YAML is read with :class:`SuiteLoader`: ``yaml.safe_load`` semantics (no tag is ever executed),
plus floats as people write them (``1e-2``, ``5.e-4``, ``.5``; PyYAML's YAML 1.1 rules read those
as strings) and an error for a key given twice in one mapping (YAML 1.1 silently keeps the last).
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from .errors import did_you_mean, unknown_name

__all__ = [
    "ConfigError", "TrainRecipe", "DatasetEntry", "Pair", "SuiteConfig", "CONFIG_DIR", "SuiteLoader",
    "load_suite", "list_suites", "apply_overrides", "parse_override", "yaml_load", "validate_suite",
    "validate_names_exist", "check_device", "check_data", "dataset_options", "effective_method_params",
    "method_names",
]

CONFIG_DIR = Path(str(importlib.resources.files("configs")))  # shipped with the package (wheel installs too)


class ConfigError(ValueError):
    """A suite file or override is invalid; the message names the key and the fix."""


# ----------------------------------------------------------------------------- YAML

_FLOAT = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5  1.  5.e-4  1_000.5  1.5e3
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?          # .5  -.5  .5e-3
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                 # 1e-2  1E5  5e-4
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*      # 190:20:30.15 (YAML 1.1 sexagesimal, kept)
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2-style floats and duplicate keys rejected (key and line named)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first given at line {first}); YAML would keep only "
                                    f"the last one: remove one of them", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


SuiteLoader.yaml_implicit_resolvers = {
    first: [(tag, _FLOAT if tag == _FLOAT_TAG else regexp) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_error(err: yaml.YAMLError, source: str, lines: bool = True) -> str:
    """One line ``source:line:col: problem`` from a PyYAML error (which spans several lines);
    ``lines=False`` (a one-line override value) gives ``source: at column N: problem``."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    if mark is None:
        where = source
    else:
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if lines else f"{source}: at column {mark.column + 1}"
    text = problem + (f" ({context})" if context else "")
    if "constructor for the tag" in problem:
        text += "; only plain YAML values are allowed (tags such as !!python/... are never executed)"
    else:
        text = f"not valid YAML: {text}"
    return " ".join(f"{where}: {text}".split())


def yaml_load(text: str, source: str) -> Any:
    """Parse ``text`` with :class:`SuiteLoader`; a syntax error becomes a one-line ``ConfigError``."""
    try:
        return yaml.load(text, Loader=SuiteLoader)  # noqa: S506 - SuiteLoader is a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(err, source)) from None


# ----------------------------------------------------------------------------- schema

def _interval_check(where: str, value: float, low: float, *, strict: bool = False) -> None:
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
            _interval_check(f"{where}.{key}", getattr(self, key), 1)
        for key in ("warmup_epochs", "eval_every", "workers"):
            _interval_check(f"{where}.{key}", getattr(self, key), 0)
        _interval_check(f"{where}.lr", self.lr, 0, strict=True)
        _interval_check(f"{where}.weight_decay", self.weight_decay, 0)
        _interval_check(f"{where}.gamma", self.gamma, 0, strict=True)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{where}.momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError(f"{where}.nesterov: Nesterov momentum needs momentum > 0 (got momentum 0); "
                              f"set momentum (e.g. 0.9) or nesterov: false")
        for i, m in enumerate(self.milestones):
            _interval_check(f"{where}.milestones[{i}]", m, 1)


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
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- parsing

def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers/dataclasses."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Union:
        return _convert_union(value, tp, where)
    if value is None:
        if origin in (dict, Dict):  # `method_params:` with every entry commented out
            return {}
        raise ConfigError(f"{where}: no value given (an empty `key:` or `key=`); expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, _mapping(value, where), where)
    if origin in (list, List):
        items = value if isinstance(value, list) else [value]  # a scalar where a list is expected: `seeds: 0`
        return [_convert(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(items)]
    if origin in (dict, Dict):
        return {str(k): _convert(v, typing.get_args(tp)[1], f"{where}.{k}") for k, v in _mapping(value, where).items()}
    scalar = _SCALARS.get(tp) if isinstance(tp, type) else None
    return scalar(value, where) if scalar is not None else value


def _convert_union(value: Any, tp: Any, where: str) -> Any:
    """``Optional[X]`` / ``Union[X, Y]``: None where allowed, else the first member type that accepts ``value``."""
    args = typing.get_args(tp)
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


def _mapping(value: Any, where: str) -> Dict[Any, Any]:
    """``value`` when it is a mapping, else a one-line error naming ``where``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _as_bool(value: Any, where: str) -> bool:
    """YAML's ``true`` / ``false`` only (no 0/1, no strings)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _as_int(value: Any, where: str) -> int:
    """An integer (``true`` is not one here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _as_float(value: Any, where: str) -> float:
    """A finite number (integers allowed), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _as_str(value: Any, where: str) -> str:
    """A string (YAML's unquoted ``1e-2`` or ``yes`` are not strings here)."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


_SCALARS: Dict[type, Any] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _from_dict(cls: Any, data: Dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_name(where, "key", key, fields))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore
            raise ConfigError(f"{where or 'suite'}: missing required key '{name}'")
    return cls(**kwargs)


def parse_override(text: str) -> tuple:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML; ``a.b=`` gives None)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value (e.g. student_train.epochs=5)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override '{text}': empty part in the key '{key.strip()}' (e.g. student_train.lr=0.01)")
    if not raw.strip():
        return parts, None
    try:
        value = yaml.load(raw, Loader=SuiteLoader)  # noqa: S506 - SuiteLoader is a SafeLoader
    except yaml.YAMLError as err:
        msg = _yaml_error(err, f"override '{text}'", lines=False)
        hint = " (quote a string value: key='text')" if "not valid YAML" in msg else ""
        raise ConfigError(msg + hint) from None
    return parts, value


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
            if node.get(part) is None:
                node[part] = {}  # also replaces a null (`method_params:` left empty)
            node = node[part]
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
    """Names of the suites shipped in ``configs/`` (``published.yaml`` holds published numbers, not a suite)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.endswith("_reference")
                  and p.stem != "published")


def resolve_suite_path(suite: str) -> Path:
    """A suite name (``quick``) or a path to a YAML file."""
    path = Path(suite).expanduser()
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))
        hint = f" (it holds {', '.join(inside[:5])})" if inside else ""
        raise ConfigError(f"--suite {suite}: is a folder{hint}; give a suite name or a .yaml file")
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path
        raise ConfigError(f"--suite {suite}: no such file; give a suite name ({', '.join(list_suites())}) or "
                          "an existing .yaml file")
    candidate = CONFIG_DIR / f"{suite}.yaml"
    if candidate.exists() and suite in list_suites():
        return candidate
    raise ConfigError(unknown_name("--suite", "suite", suite, list_suites()) + " (or a path to a .yaml file)")


def load_suite(suite: str, overrides: Optional[List[str]] = None, validate_names: bool = True,
               validate: bool = True) -> SuiteConfig:
    """Load, override and validate a suite; every invalid value fails here, before any training.

    With ``validate_names=False`` only the checks that need no registry run (``list`` reads every suite);
    with ``validate=False`` only keys and types are checked (the CLI validates after applying its options).
    """
    path = resolve_suite_path(suite)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the suite ({err})") from None
    raw = yaml_load(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (datasets:, pairs:, methods:, ...)")
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = _from_dict(SuiteConfig, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None
    if validate:
        validate_suite(cfg, names=validate_names)
    return cfg


# ----------------------------------------------------------------------------- validation

def _no_duplicates(values: Sequence[Any], where: str) -> None:
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ConfigError(f"{where}[{i}]: {v!r} is listed twice; list each once")
        seen.add(v)


def validate_suite(cfg: SuiteConfig, names: bool = True) -> None:
    """Every check of a loaded (and CLI-modified) config; ``names``: also those that need the registries."""
    cfg.teacher_train.validate("teacher_train")
    cfg.student_train.validate("student_train")
    _check_grid_lists(cfg)
    for i, entry in enumerate(cfg.datasets):
        _check_dataset_entry(entry, f"datasets[{i}]")
    for i, pair in enumerate(cfg.pairs):
        if pair.student_lr is not None:
            _interval_check(f"pairs[{i}].student_lr", pair.student_lr, 0, strict=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name) or ".." in cfg.name:  # it names files and folders
        raise ConfigError(f"name: '{cfg.name}' may hold only letters, digits, '_', '-' and '.' (no '..'): it names "
                          "configs/<name>_reference.json and results/reference/<name>/")
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise ConfigError(f"device: '{cfg.device}' is not one of auto, cpu, cuda, cuda:N")
    if names:
        validate_names_exist(cfg)


def _check_grid_lists(cfg: SuiteConfig) -> None:
    """Datasets, pairs, methods and seeds: none empty (nothing would train), none listed twice, seeds >= 0."""
    if not cfg.datasets:
        raise ConfigError("datasets: the suite names no dataset")
    if not cfg.pairs:
        raise ConfigError("pairs: the suite names no teacher->student pair")
    if isinstance(cfg.methods, list):
        if not cfg.methods:
            raise ConfigError("methods: the list is empty (only teachers would train); name methods or use `all`")
        _no_duplicates(cfg.methods, "methods")
    if not cfg.seeds:
        raise ConfigError("seeds: the list is empty (nothing would train); give at least one seed, e.g. [0]")
    _no_duplicates(cfg.seeds, "seeds")
    for i, s in enumerate(cfg.seeds):
        _interval_check(f"seeds[{i}]", s, 0)


def _check_dataset_entry(entry: DatasetEntry, where: str) -> None:
    """Imbalance factors (at least one, none twice, each >= 1 or null) and a data seed >= 0."""
    if not entry.imbalance_factors:
        raise ConfigError(f"{where}.imbalance_factors: the list is empty; give e.g. [100] (or [null] for the "
                          f"dataset's default)")
    _no_duplicates(entry.imbalance_factors, f"{where}.imbalance_factors")
    for j, f in enumerate(entry.imbalance_factors):
        if f is not None and f < 1:
            raise ConfigError(f"{where}.imbalance_factors[{j}]: {f:g} < 1 (1 = balanced, 100 = the usual LT)")
    _interval_check(f"{where}.data_seed", entry.data_seed, 0)


def dataset_options(name: str) -> Optional[Dict[str, Any]]:
    """Extra keyword options of dataset ``name``'s builder (name -> default), None when it takes ``**kw``.

    Derived from the builder's signature, so a new option of a family is allowed without touching this file.
    """
    import inspect

    import datasets as ds

    builder = ds._entry(name).builder  # the registered builder's own signature is the source of truth
    fixed = {"root", "split", "imbalance_factor", "seed", "transform"}
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params if p.name not in fixed
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _check_options(entry: DatasetEntry, where: str) -> None:
    """Unknown ``options`` keys (with close matches) and values of the wrong type, from the builder's signature."""
    import datasets as ds

    allowed = dataset_options(entry.name)
    if allowed is None:
        return
    for key in entry.options:
        if key not in allowed:
            raise ConfigError(unknown_name(f"{where}.options ({entry.name})", "option", key, sorted(allowed)))
    builder = ds._entry(entry.name).builder
    for key, value in entry.options.items():
        _convert(value, _annotation(builder, key), f"{where}.options.{key}")


def _annotation(func: Any, name: str) -> Any:
    """The evaluated annotation of parameter ``name`` of ``func``; ``Any`` when absent or not evaluable."""
    ann = getattr(func, "__annotations__", {}).get(name, Any)
    if isinstance(ann, str):  # `from __future__ import annotations`: evaluate just this one
        try:
            ann = eval(ann, getattr(func, "__globals__", {}))  # noqa: S307 - the builder's own annotation text
        except Exception:  # a forward reference that does not resolve: the builder checks its own values
            return Any
    return ann


def _method_param_levels(cfg: SuiteConfig):
    """``(where, method_params)`` of the suite, every dataset entry and every pair."""
    yield "method_params", cfg.method_params
    for i, entry in enumerate(cfg.datasets):
        yield f"datasets[{i}].method_params", entry.method_params
    for i, pair in enumerate(cfg.pairs):
        yield f"pairs[{i}].method_params", pair.method_params


def validate_names_exist(cfg: SuiteConfig) -> None:
    """Fail before training on an unknown dataset, option, model or method, or a bad method hyper-parameter."""
    import methods

    methods.load_plugins(cfg.plugins)
    _check_dataset_names(cfg)
    _check_model_names(cfg)
    _check_method_names(cfg)


def _check_dataset_names(cfg: SuiteConfig) -> None:
    """Every dataset is registered, takes the imbalance factors given, and knows its ``options``."""
    import datasets as ds

    known_ds = ds.list_datasets()
    for i, entry in enumerate(cfg.datasets):
        if entry.name not in known_ds:
            raise ConfigError(unknown_name(f"datasets[{i}].name", "dataset", entry.name, known_ds, cutoff=0.5))
        if ds.dataset_info(entry.name).default_imbalance_factor is None and \
                any(f is not None for f in entry.imbalance_factors):
            raise ConfigError(f"datasets[{i}].imbalance_factors: {entry.name} has a fixed split (its imbalance is "
                              f"set by the split file); use [null] or leave the key out")
        _check_options(entry, f"datasets[{i}]")


def _check_model_names(cfg: SuiteConfig) -> None:
    """Every teacher and student is a timm model name (the CIFAR zoo is registered into timm)."""
    import timm

    all_models = timm.list_models()
    model_set = set(all_models)
    for i, pair in enumerate(cfg.pairs):
        for role in ("teacher", "student"):
            name = getattr(pair, role)
            if name not in model_set:
                zoo = ", ".join(m for m in all_models if m.startswith("cifar_"))
                raise ConfigError(f"pairs[{i}].{role}: unknown model '{name}'.{did_you_mean(name, all_models)} "
                                  f"CIFAR zoo: {zoo}; or any name from timm.list_models()")


def _check_method_names(cfg: SuiteConfig) -> None:
    """Every method is registered, and every ``method_params`` entry names one and passes its bounds."""
    import methods

    known_methods = methods.list_methods()
    for i, name in enumerate(method_names(cfg)):
        if name not in known_methods:
            raise ConfigError(unknown_name(f"methods[{i}]", "method", name, known_methods, cutoff=0.5))
    for where, level in _method_param_levels(cfg):
        for name, params in level.items():
            if name not in known_methods:
                raise ConfigError(unknown_name(where, "method", name, known_methods, cutoff=0.5))
            try:
                methods.get_method(name).validate_hparams(params, where=f"{where}.{name}")
            except (TypeError, ValueError) as err:
                raise ConfigError(str(err)) from None


def effective_method_params(cfg: SuiteConfig, method: str, entry: DatasetEntry, pair: Pair) -> Dict[str, Any]:
    """The hyper-parameters ``method`` runs with on ``entry`` x ``pair``: its declared defaults, updated by the
    suite's ``method_params[method]``, then the dataset entry's, then the pair's (the pair wins)."""
    import methods

    params = dict(methods.get_method(method).hparams)
    for level in (cfg.method_params, entry.method_params, pair.method_params):
        params.update(level.get(method, {}))
    return params


def check_device(cfg: SuiteConfig, source: str = "device") -> None:
    """``cuda`` / ``cuda:N`` must name a visible GPU (else training would die at the first tensor move)."""
    if not cfg.device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{source} {cfg.device}: no CUDA device is visible to PyTorch "
                          f"(torch.cuda.is_available() is False); use --device cpu or auto")
    if ":" in cfg.device and int(cfg.device.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"{source} {cfg.device}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                          f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")


def check_root(root: Optional[str], where: str) -> None:
    """An explicitly given dataset root must be an existing, non-empty folder (no silent fallback elsewhere)."""
    if root is None:
        return
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError(f"{where} {root}: no such folder; give the folder that holds the dataset's files "
                          f"(see `python -m benchmark prepare`)")
    if not path.is_dir():
        raise ConfigError(f"{where} {root}: is a file, not a folder; give the folder that holds the dataset's files")
    if not any(path.iterdir()):
        raise ConfigError(f"{where} {root}: the folder is empty; put the dataset's files there "
                          f"(see `python -m benchmark prepare`)")


def check_data(cfg: SuiteConfig) -> None:
    """Load every training split once (cheap: cached per process) and check it fits the batch sizes.

    Missing files, bad ``options`` values and ``batch_size`` > the number of training images (zero
    optimiser steps per epoch) all fail here, before a teacher trains.
    """
    import datasets as ds

    for i, entry in enumerate(cfg.datasets):
        check_root(entry.root, f"datasets[{i}].root")
        for imb in entry.imbalance_factors:
            label = entry.name + (f" IF {imb:g}" if imb is not None else "") + \
                "".join(f", {k}={v}" for k, v in sorted(entry.options.items()))
            kw = {} if imb is None else {"imbalance_factor": imb}
            try:
                train = ds.build_dataset(entry.name, root=entry.root, split="train", seed=entry.data_seed, **kw,
                                         **entry.options)
            except (OSError, ValueError, TypeError, KeyError) as err:
                msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
                raise ConfigError(f"datasets[{i}] ({label}): {' '.join(str(msg).split())}") from None
            n = len(train)
            for recipe in ("teacher_train", "student_train"):
                bs = getattr(cfg, recipe).batch_size
                if bs > n:
                    raise ConfigError(f"{recipe}.batch_size: {bs} is larger than the training split of {label} "
                                      f"({n} images), so no full batch fits an epoch; use batch_size <= {n}")


def method_names(cfg: SuiteConfig) -> List[str]:
    """The suite's methods, with ``all`` expanded to every registered method."""
    import methods

    if isinstance(cfg.methods, str):
        if cfg.methods == "all":
            return methods.list_methods()
        return [cfg.methods]
    return list(cfg.methods)
