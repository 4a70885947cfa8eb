"""Published numbers beside ours: ``configs/published.yaml`` loaded, validated, and matched to leaderboard rows.

Each entry is one number from a paper or a repository's table, with the setting it was measured in
(dataset, imbalance factor, teacher, student, method, student epochs) and its reporting rule. A
leaderboard row whose setting matches an entry gets a ``paper`` value: our number minus the published
one, taken on the same rule (``epoch: best`` -> our ``best`` evaluated epoch, ``final`` -> our final
epoch), so like is compared with like. Unknown names fail with the file and line of the entry.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from .config import CONFIG_DIR, ConfigError, SuiteLoader, from_dict, yaml_load
from .errors import did_you_mean, unknown_name
from .evaluate import METRICS

__all__ = ["Published", "PUBLISHED_FILE", "EPOCH_RULES", "load_published", "entries", "matches", "paper_cell",
           "csv_fields", "section_notes", "PAPER_PARAGRAPH"]

PUBLISHED_FILE = CONFIG_DIR / "published.yaml"
EPOCH_RULES = {"best": "best", "final": "final"}  # entry rule -> the record part (``rec[part]``) it is compared with
ROLES = ("student", "teacher")
_ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")

PAPER_PARAGRAPH = (
    "**paper**: our value minus a published one (`configs/published.yaml`), where the row's setting matches "
    "the published one (dataset without extra options, imbalance factor, teacher, student, method and, where "
    "the entry gives it, student epochs). Like is compared with like: a number published as the best epoch is "
    "compared with our `best` (best evaluated epoch, mean over our seeds), a final-epoch one with our final "
    "value. The list under each table names every published number used, its source and its reporting rule.")


@dataclass
class Published:
    """One published number and the setting and rule it was measured under."""

    paper: str
    table: str
    source: str  # where the number is written: repository + file + table, or the paper's table
    dataset: str
    imbalance_factor: float
    teacher: str
    student: str
    method: str
    value: float
    epoch: str  # best | final: which of our values it is compared with
    rule: str  # the reporting rule in words, e.g. "best epoch, mean of 5 runs"
    primary: bool  # False: taken from a secondary source (a summary, another paper's table)
    arxiv: Optional[str] = None
    metric: str = "overall"
    role: str = "student"
    epochs: Optional[int] = None  # student epochs of the published protocol (None: not checked)
    runs: Optional[int] = None  # runs averaged (None: not stated by the source)
    note: str = ""
    line: int = 0  # line of the entry in its file (set by the loader)

    @property
    def key(self) -> Tuple[Any, ...]:
        """What two entries must not share: one published number per setting, metric and rule."""
        return (self.dataset, float(self.imbalance_factor), self.teacher, self.student, self.method, self.role,
                self.metric, self.epochs)


# ----------------------------------------------------------------------------- loading and validation

def load_published(path: Optional[Path] = None, validate_names: bool = True) -> List[Published]:
    """Every entry of ``path`` (default ``configs/published.yaml``), checked; errors name the file and line."""
    path = Path(path or PUBLISHED_FILE)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the published numbers ({err})") from None
    raw = yaml_load(text, str(path))  # syntax errors and duplicate keys: file:line:col
    items, lines = _entry_nodes(raw, text, path)
    out = []
    for i, (item, line) in enumerate(zip(items, lines)):
        where = f"{path}:{line}: entries[{i}]"
        if not isinstance(item, dict) or "line" in item:
            raise ConfigError(f"{where}: expected a mapping of paper:, dataset:, method:, value:, ... (no line:), "
                              f"got {item!r}")
        try:
            entry = from_dict(Published, item, f"entries[{i}]")
        except ConfigError as err:
            raise ConfigError(f"{path}:{line}: {err}") from None
        entry.line = line
        _check_values(entry, where)
        if validate_names:
            _check_names(entry, where)
        out.append(entry)
    _check_unique(out, path)
    return out


def _entry_nodes(raw: Any, text: str, path: Path) -> Tuple[List[Any], List[int]]:
    """The ``entries`` list and the 1-based line where each item starts (from the same YAML's node tree)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise ConfigError(f"{path}: expected a top-level mapping with an `entries:` list")
    for key in raw:
        if key not in ("sources", "entries"):
            raise ConfigError(unknown_name(str(path), "top-level key", key, ("sources", "entries")))
    root = yaml.compose(text, Loader=SuiteLoader)  # noqa: S506 - composes nodes only, constructs nothing
    node = next(v for k, v in root.value if k.value == "entries")
    return raw["entries"], [item.start_mark.line + 1 for item in node.value]


def _check_values(entry: Published, where: str) -> None:
    """Values that need no registry: the rule, the metric, the range of the number, the arXiv id."""
    if entry.epoch not in EPOCH_RULES:
        raise ConfigError(unknown_name(f"{where}.epoch", "reporting rule", entry.epoch, EPOCH_RULES))
    if entry.metric not in METRICS:
        raise ConfigError(unknown_name(f"{where}.metric", "metric", entry.metric, METRICS))
    if entry.role not in ROLES:
        raise ConfigError(unknown_name(f"{where}.role", "role", entry.role, ROLES))
    if entry.role == "teacher" and entry.teacher != entry.student:
        raise ConfigError(f"{where}: a teacher's own number needs teacher == student (got {entry.teacher} and "
                          f"{entry.student})")
    if not 0 <= entry.value <= 100:
        raise ConfigError(f"{where}.value: {entry.value!r} is not an accuracy in % (0..100)")
    if entry.imbalance_factor < 1:
        raise ConfigError(f"{where}.imbalance_factor: {entry.imbalance_factor:g} < 1 (1 = balanced)")
    if entry.arxiv is not None and not _ARXIV.match(entry.arxiv):
        raise ConfigError(f"{where}.arxiv: '{entry.arxiv}' is not an arXiv id like 2203.08679 (quote it)")
    for key in ("epochs", "runs"):
        if getattr(entry, key) is not None and getattr(entry, key) < 1:
            raise ConfigError(f"{where}.{key}: must be >= 1, got {getattr(entry, key)!r}")


def _check_names(entry: Published, where: str) -> None:
    """Dataset, models and method must be registered here (a typo would silently never match a row)."""
    import timm

    import datasets as ds
    import methods

    if entry.dataset not in ds.list_datasets():
        raise ConfigError(unknown_name(f"{where}.dataset", "dataset", entry.dataset, ds.list_datasets(), cutoff=0.5))
    models = timm.list_models()
    for role in ("teacher", "student"):
        name = getattr(entry, role)
        if name not in models:
            zoo = [m for m in models if m.startswith("cifar_")]  # CIFAR tables: suggest from the zoo first
            hint = did_you_mean(name, zoo) or did_you_mean(name, models)
            raise ConfigError(f"{where}.{role}: unknown model '{name}'.{hint} CIFAR zoo: {', '.join(zoo)}; or any "
                              f"name from timm.list_models()")
    if entry.method not in methods.list_methods():
        raise ConfigError(unknown_name(f"{where}.method", "method", entry.method, methods.list_methods(),
                                       cutoff=0.5))


def _check_unique(items: Sequence[Published], path: Path) -> None:
    """Two entries for one setting, metric and epochs would make the ``paper`` column ambiguous."""
    seen: Dict[Tuple[Any, ...], int] = {}
    for entry in items:
        if entry.key in seen:
            raise ConfigError(f"{path}:{entry.line}: the same setting, metric and epochs as line {seen[entry.key]} "
                              f"({entry.method}, {entry.teacher} -> {entry.student}); keep one of them")
        seen[entry.key] = entry.line


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int) -> Tuple[Published, ...]:
    return tuple(load_published(Path(path)))


def entries(path: Optional[Path] = None) -> Tuple[Published, ...]:
    """The validated entries of ``path`` (default :data:`PUBLISHED_FILE`), read once per file version."""
    path = Path(path or PUBLISHED_FILE)
    return _cached(str(path), path.stat().st_mtime_ns)


# ----------------------------------------------------------------------------- matching leaderboard rows

def _setting(row: Any) -> Optional[Dict[str, Any]]:
    """What an entry is matched on, from a leaderboard row's first record; None for a dataset with options."""
    rec = row.records[0]
    if rec.data_options:
        return None  # e.g. n_max=600: not the published dataset
    imb = rec.imbalance_factor
    return {"dataset": rec.dataset, "imbalance_factor": None if imb is None else float(imb),
            "teacher": row.teacher, "student": row.student, "method": row.method, "role": row.role,
            "epochs": row.epochs}


def matches(row: Any, items: Sequence[Published]) -> List[Published]:
    """The entries whose setting is the row's (entries without ``epochs`` match any planned epochs)."""
    got = _setting(row)
    if got is None:
        return []
    out = []
    for e in items:
        same = (e.dataset, float(e.imbalance_factor), e.teacher, e.student, e.method, e.role) == \
            (got["dataset"], got["imbalance_factor"], got["teacher"], got["student"], got["method"], got["role"])
        if same and (e.epochs is None or e.epochs == got["epochs"]):
            out.append(e)
    return out


def ours(row: Any, entry: Published) -> float:
    """Our value on the entry's rule: the mean over seeds of the row's ``best`` or ``final`` metric."""
    return row.metric(entry.metric, EPOCH_RULES[entry.epoch])[0]


def difference(row: Any, entry: Published) -> Optional[float]:
    """Ours minus published, in points; None when our value is undefined (e.g. an empty group)."""
    value = ours(row, entry)
    return None if value is None or math.isnan(value) else value - entry.value


def paper_cell(row: Any, items: Optional[Sequence[Published]] = None) -> str:
    """The Markdown ``paper`` cell: ``+0.41 vs 73.33 (best)`` per matching entry, ``—`` when none matches."""
    found = matches(row, entries() if items is None else items)
    texts = []
    for e in found:
        diff = difference(row, e)
        metric = "" if e.metric == "overall" else f"{e.metric} "
        texts.append(f"{metric}{'—' if diff is None else f'{diff:+.2f}'} vs {e.value:.2f} ({e.epoch})")
    return "; ".join(texts) if texts else "—"


def csv_fields(row: Any, items: Optional[Sequence[Published]] = None) -> Dict[str, Any]:
    """CSV columns: ``paper_value``, ``paper_diff``, ``paper_epoch``, ``paper_rule``, ``paper_source`` (overall;
    other metrics as ``paper_<metric>_...``), None where no entry matches."""
    out: Dict[str, Any] = {f"paper_{k}": None for k in ("value", "diff", "epoch", "rule", "source")}
    for e in matches(row, entries() if items is None else items):
        prefix = "paper_" if e.metric == "overall" else f"paper_{e.metric}_"
        out.update({f"{prefix}value": e.value, f"{prefix}diff": difference(row, e), f"{prefix}epoch": e.epoch,
                    f"{prefix}rule": e.rule, f"{prefix}source": _source_text(e)})
    return out


def _source_text(e: Published) -> str:
    """One line naming where the number comes from, and whether that source is primary."""
    arxiv = f" (arXiv {e.arxiv})" if e.arxiv else ""
    kind = "" if e.primary else "; secondary source"
    return f"{e.paper}{arxiv}, {e.table}; {e.source}{kind}"


def section_notes(part: Sequence[Any], items: Optional[Sequence[Published]] = None) -> List[str]:
    """Lines under a table: every published number its ``paper`` column used, with source and rule."""
    items = entries() if items is None else items
    lines = []
    for row in part:
        for e in matches(row, items):
            ours_part = "`best overall`" if e.epoch == "best" and e.metric == "overall" else \
                f"our {e.epoch}-epoch {e.metric}"
            lines.append(f"- {row.name} ({e.teacher} → {e.student}), {e.metric} {e.value:.2f}: {_source_text(e)}. "
                         f"Rule: {e.rule}; compared with {ours_part} (mean of {row.seeds} seed"
                         f"{'s' if row.seeds != 1 else ''}).")
    if not lines:
        return []
    return ["", PAPER_PARAGRAPH, "", *lines]
