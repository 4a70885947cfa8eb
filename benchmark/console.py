"""What a person reads on the console: one aligned table per cell (a block of rows per epoch, one row per
method, no run ids), then at the end the leaderboard's top rows and a verdict summary.

Run ids and per-run lines go to the per-run logs (``<out>/logs/<run_id>.log``), written by the runner.
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["short_names", "CellTable", "top_rows", "verdict_summary", "KIND_ORDER"]

KIND_ORDER = ("exact", "within", "off", "failed", "unjudged", "new")  # verdict kinds, in summary order
_COLS = (("epoch", 7), ("method", 0), ("loss", 8), ("train %", 8), ("test %", 8), ("img/s", 7))


def short_names(keys: Sequence[str], methods: Sequence[str]) -> Dict[str, str]:
    """Run key -> the method's name; a method present twice in a cell gets the run id's hash suffix too."""
    counts = Counter(methods)
    return {k: m if counts[m] == 1 else f"{m}#{k.rsplit('_', 1)[-1][:4]}" for k, m in zip(keys, methods)}


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


class CellTable:
    """Prints a cell's epochs as one aligned table: the header once, then a block of rows per epoch."""

    def __init__(self, names: Mapping[str, str], epochs: int, log: Callable[[str], None]) -> None:
        self.names, self.epochs, self.log = dict(names), epochs, log
        self.width = max([len("method"), *(len(n) for n in self.names.values())])
        self._header_done = False

    def _line(self, cells: Sequence[str]) -> str:
        widths = [w or self.width for _, w in _COLS]
        return "  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    def lines(self, epoch: int, rows: Sequence[Tuple[str, Mapping[str, Any]]], images_per_s: float) -> List[str]:
        """The lines of one epoch (the header before the first block)."""
        out = [] if self._header_done else [self._line([c for c, _ in _COLS])]
        self._header_done = True
        for i, (key, row) in enumerate(rows):
            out.append(self._line([f"{epoch}/{self.epochs}" if i == 0 else "", self.names.get(key, key),
                                   _num(row.get("loss"), ".4f"), _num(row.get("train_acc"), ".1f"),
                                   _num(row.get("test_acc"), ".2f"), _num(images_per_s, ".0f")]))
        return out

    def __call__(self, epoch: int, rows: Sequence[Tuple[str, Mapping[str, Any]]], images_per_s: float) -> None:
        for line in self.lines(epoch, rows, images_per_s):
            self.log(line)


def top_rows(out: Path, n: int = 5) -> List[str]:
    """The ``n`` best rows by overall accuracy of each table in ``out/leaderboard.csv`` (empty if none)."""
    path = Path(out) / "leaderboard.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    tables: Dict[Tuple[str, str, str], List[Dict[str, str]]] = {}
    for r in rows:
        tables.setdefault((r.get("dataset", ""), r.get("imbalance_factor", ""), r.get("teacher", "")), []).append(r)
    lines: List[str] = []
    for (dataset, imb, teacher), part in tables.items():
        part.sort(key=lambda r: -_float(r.get("overall_mean")))
        width = max(len(_name(r)) for r in part)
        lines.append(f"top {min(n, len(part))} of {len(part)}: {dataset}" + (f" IF {_float(imb):g}" if imb else "")
                     + f", teacher {teacher} (overall / tail %)")
        lines += [f"  {_name(r).ljust(width)}  {_cell(r, 'overall')}  {_cell(r, 'tail')}" for r in part[:n]]
    return lines


def _float(text: Optional[str]) -> float:
    try:
        return float(text) if text not in (None, "") else -math.inf
    except ValueError:
        return -math.inf


def _name(r: Mapping[str, str]) -> str:
    return (r.get("method") or "?") + (" (ref)" if r.get("source") == "reference" else "") + (
        " (unverified)" if r.get("verified") == "False" else "")


def _cell(r: Mapping[str, str], metric: str) -> str:
    v = _float(r.get(f"{metric}_mean"))
    return f"{v:6.2f}" if math.isfinite(v) else "     -"


def verdict_summary(verdicts: Sequence[Any]) -> List[str]:
    """Counts by kind on one line, then each OFF run's verdict in full (``Verdict.kind`` / ``.text``)."""
    counts = Counter(v.kind for v in verdicts)
    kinds = [k for k in KIND_ORDER if counts[k]] + sorted(k for k in counts if k not in KIND_ORDER)
    lines = [f"reproduction: {len(verdicts)} runs: " + ", ".join(f"{counts[k]} {k}" for k in kinds)]
    lines += [f"  {v.text.strip()}" for v in verdicts if v.kind == "off"]
    return lines
