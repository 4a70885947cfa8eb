"""Plots of a results folder, one set per leaderboard table, each as PNG and SVG (generated from records).

* ``*_tail_vs_overall``: one point per settings-exact row, error bars over seeds, the teacher a black star;
* ``*_groups``: head / middle / tail (and many / medium / few where non-empty) accuracy, grouped bars per row;
* ``*_per_class``: per-class accuracy against training count (log x) for a few rows (teacher, ce, kd and
  the best by tail accuracy), binned above 30 classes so 100 or 1000 classes stay readable; the
  few / medium / many boundaries (20 and 100 training images) drawn.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .evaluate import SHOT_GROUPS, THIRDS
from .fileio import FILE_MODE, atomic_write
from .settings import format_value

if TYPE_CHECKING:  # pragma: no cover
    from .leaderboard import Row

__all__ = ["write_plots", "row_styles", "DEFAULT_PER_CLASS_METHODS", "FILE_MODE"]

DEFAULT_PER_CLASS_METHODS = ("teacher", "ce", "kd")
SHOT_BOUNDARIES = (20, 100)  # few < 20 <= medium <= 100 < many (training images)
BIN_ABOVE = 30  # more classes than this: per-class points are binned by training count
# distinct hues in an order where neighbours (related methods sort next to each other) differ strongly
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#a6761d",
           "#393b79", "#ad494a", "#637939", "#7b4173", "#e6550d", "#3182bd", "#31a354")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h", "<", ">", "p", "d")
GROUP_COLOURS = {"head": "#0072B2", "middle": "#E69F00", "tail": "#009E73",
                 "many": "#0072B2", "medium": "#E69F00", "few": "#009E73"}
# where a point's label may go, in points from it (dx, dy, alignment), nearest ring first; far ones get a leader line
_LABEL_OFFSETS = ((7, 4, "left", "bottom"), (7, -4, "left", "top"), (-7, 4, "right", "bottom"),
                  (-7, -4, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top"),
                  (10, 0, "left", "center"), (-10, 0, "right", "center"))
_LABEL_CANDIDATES = tuple((dx * dist, dy * dist, ha, va, dist > 1)
                          for dist in (1, 2, 3.2) for dx, dy, ha, va in _LABEL_OFFSETS)


def _series_names(part: Sequence["Row"]) -> Dict[str, str]:
    """Per row label, the name shown in plots: the method, plus the settings label where it repeats."""
    count: Dict[str, int] = {}
    for r in part:
        count[r.display_name] = count.get(r.display_name, 0) + 1
    return {r.label: r.display_name if count[r.display_name] == 1 else f"{r.display_name} [{r.label}]" for r in part}


def row_styles(part: Sequence["Row"]) -> Dict[str, Dict[str, Any]]:
    """Colour and marker per row label: teacher black star, ce grey, the others distinct hue + marker."""
    styles: Dict[str, Dict[str, Any]] = {}
    others = sorted((r for r in part if not r.is_teacher and r.method != "ce"), key=lambda r: (r.method, r.label))
    for r in part:
        if r.is_teacher:
            styles[r.label] = {"color": "black", "marker": "*"}
        elif r.method == "ce":
            styles[r.label] = {"color": "#7f7f7f", "marker": "o"}
    for i, r in enumerate(others):
        styles[r.label] = {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}
    return styles


def _arch_epochs(rows: Sequence["Row"]) -> str:
    """``cifar_cnn_tiny (6 epochs)`` for each (trained architecture, planned epochs) among ``rows``."""
    pairs = sorted({(r.student, r.epochs) for r in rows}, key=repr)
    return ", ".join(f"{a} ({format_value(e)} epoch{'' if e == 1 else 's'})" if e is not None else str(a)
                     for a, e in pairs)


def _absent_teacher(part: Sequence["Row"], students: Sequence["Row"]) -> str:
    """``teacher cifar_cnn_small (10 epochs)`` for a table without a teacher row, from its students' settings."""
    t_epochs = {(r.settings.get("teacher_recipe") or {}).get("epochs") for r in students}
    t_epochs.discard(None)
    return f"teacher {part[0].teacher}" + (f" ({', '.join(map(format_value, sorted(t_epochs)))} epochs)"
                                           if t_epochs else "")


def _subtitle(part: Sequence["Row"]) -> str:
    """``student cifar_cnn_tiny (6 epochs) · teacher cifar_cnn_small (10 epochs) · 1 seed``."""
    students = [r for r in part if not r.is_teacher]
    teachers = [r for r in part if r.is_teacher]
    bits = []
    if students:
        bits.append("student " + _arch_epochs(students))
    if teachers:
        bits.append("teacher " + _arch_epochs(teachers))
    elif part:
        bits.append(_absent_teacher(part, students))
    seeds = sorted({r.seeds for r in part})
    bits.append(f"{'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''}")
    return " · ".join(bits)


def _heading(part: Sequence["Row"]) -> str:
    dataset, imb, _ = part[0].section
    return dataset + (f", IF {imb:g}" if imb is not None and imb == imb else "")


def _stem(part: Sequence["Row"]) -> str:
    dataset, imb, teacher = part[0].section
    raw = f"{dataset}" + (f"_if{imb:g}" if imb is not None and imb == imb else "") + f"_{teacher}"
    return "_".join(filter(None, "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in raw).split("_")))


def _save(fig, path: Path) -> List[Path]:
    """Write ``path`` (.png) and the .svg beside it atomically (``benchmark.fileio``, mode 0644); returns both."""
    written = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        target = path.with_suffix(f".{ext}")
        atomic_write(target, functools.partial(fig.savefig, format=ext, dpi=120, metadata=meta))
        written.append(target)
    return written


def _save_and_close(fig, path: Path) -> List[Path]:
    """:func:`_save`, then free the figure (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _overlap(a, b) -> float:
    """Area shared by two matplotlib ``Bbox`` es (display units)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(ax, points: Sequence[Tuple[float, float]], texts: Sequence[str], colours: Sequence[str],
                  bold: Sequence[bool]) -> None:
    """Label each point where its text overlaps no other label, point or the axes edge (greedy)."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()  # limits and layout are fixed already: no full draw needed
    disp = ax.transData.transform(np.asarray(points, dtype=float))
    point_boxes = [Bbox.from_bounds(x - 5, y - 5, 10, 10) for x, y in disp]
    axes_box = ax.get_window_extent(renderer)
    placed: List[Any] = []
    for i, (xy, text) in enumerate(zip(points, texts)):
        style = {"fontsize": 8, "color": colours[i], "fontweight": "bold" if bold[i] else "normal"}
        others = [p for j, p in enumerate(point_boxes) if j != i]
        placed.append(_place_label(ax, renderer, xy, text, style, placed, others, axes_box))


def _place_label(ax, renderer, xy: Tuple[float, float], text: str, style: Dict[str, Any], placed: Sequence[Any],
                 points: Sequence[Any], axes_box) -> Any:
    """Annotate ``xy`` at the first candidate spot that costs nothing, else the cheapest; returns the label's box."""
    best = None
    for dx, dy, ha, va, far in _LABEL_CANDIDATES:
        arrow = {"arrowstyle": "-", "color": style["color"], "lw": 0.6, "alpha": 0.6} if far else None
        ann = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, **style,
                          arrowprops=arrow)
        bb = ann.get_window_extent(renderer)
        cost = _label_cost(bb, placed, points, axes_box)
        if best is None or cost < best[0]:
            if best is not None:
                best[1].remove()
            best = (cost, ann, bb)
        else:
            ann.remove()
        if cost == 0:
            break
    return best[2]


def _label_cost(bb, placed: Sequence[Any], points: Sequence[Any], axes_box) -> float:
    """Overlap of a label's box with the labels placed so far and the other points, plus 1e6 when it leaves the axes."""
    cost = sum(_overlap(bb, o) for o in placed) + sum(_overlap(bb, p) for p in points)
    inside = bb.x0 >= axes_box.x0 and bb.x1 <= axes_box.x1 and bb.y0 >= axes_box.y0 and bb.y1 <= axes_box.y1
    return cost + (0 if inside else 1e6)


def plot_tail_vs_overall(part: Sequence["Row"], path: Path) -> List[Path]:
    """Tail accuracy against overall accuracy, one point per row, error bars = std over seeds."""
    import matplotlib.pyplot as plt

    names, styles = _series_names(part), row_styles(part)
    rows = [r for r in part if not math.isnan(r.metric("tail")[0]) and not math.isnan(r.metric("overall")[0])]
    fig, ax = plt.subplots(figsize=(8.5, 6))
    xs, ys = _draw_points(ax, rows, styles)
    _diagonal_and_limits(ax, xs, ys)
    ax.set_xlabel("overall accuracy (%)")
    ax.set_ylabel("tail accuracy (%): tail third of the classes by training count")
    ax.set_title(f"{_heading(part)}: tail vs overall accuracy (final epoch)\n{_subtitle(part)}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if any(r.seeds > 1 for r in rows):
        ax.text(0.01, 0.99, "error bars: ±1 std over seeds", transform=ax.transAxes, ha="left", va="top",
                fontsize=7, color="#777777")
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.09, top=0.9)  # fixed size: no tight_layout pass
    _place_labels(ax, list(zip(xs, ys)), [names[r.label] for r in rows], [styles[r.label]["color"] for r in rows],
                  [r.is_teacher for r in rows])
    return _save_and_close(fig, path)


def _draw_points(ax, rows: Sequence["Row"], styles: Dict[str, Dict[str, Any]]) -> Tuple[List[float], List[float]]:
    """One (overall, tail) point per row with ±std error bars (the teacher a large star); returns xs, ys."""
    xs, ys = [], []
    for r in rows:
        (x, sx), (y, sy) = r.metric("overall"), r.metric("tail")
        st = styles[r.label]
        ax.errorbar(x, y, xerr=None if math.isnan(sx) else sx, yerr=None if math.isnan(sy) else sy,
                    fmt=st["marker"], color=st["color"], ms=16 if r.is_teacher else 8, capsize=3, elinewidth=1,
                    markeredgecolor="white" if not r.is_teacher else "black", zorder=4 if r.is_teacher else 3)
        xs.append(x)
        ys.append(y)
    return xs, ys


def _diagonal_and_limits(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    """The tail = overall diagonal, and axis limits padded around the points (0..100 without points)."""
    lo = min(list(xs) + list(ys)) if xs else 0.0
    hi = max(list(xs) + list(ys)) if xs else 100.0
    pad = max(3.0, 0.15 * (hi - lo))
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", lw=0.8, color="#999999", zorder=1)
    ax.text(0.99, 0.01, "dashed: tail = overall", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color="#777777")
    ax.set_xlim(min(xs, default=0) - pad, max(xs, default=100) + pad)
    ax.set_ylim(min(ys, default=0) - pad, max(ys, default=100) + pad)


def plot_groups(part: Sequence["Row"], path: Path) -> List[Path]:
    """Grouped bars per row: head / middle / tail, and many / medium / few where a group has classes."""
    import matplotlib.pyplot as plt

    sizes = part[0].group_sizes()
    panels = _group_panels(sizes)
    width = max(7.0, 0.75 * len(part) + 3.5)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.4 * len(panels) + 1.2), sharex=True, squeeze=False)
    x = np.arange(len(part))
    for ax, groups in zip(axes[:, 0], panels):
        _draw_group_panel(ax, part, groups, sizes, x)
    _label_columns(axes[-1, 0], part, x)
    axes[0, 0].set_title(f"{_heading(part)}: accuracy by class group (final epoch, mean over seeds)\n"
                         f"{_subtitle(part)}", fontsize=10)
    fig.tight_layout()
    return _save_and_close(fig, path)


def _group_panels(sizes: Dict[str, int]) -> List[Tuple[str, ...]]:
    """Head / middle / tail, then many / medium / few, each with only its groups that hold classes (none: no panel)."""
    panels = [g for g in (THIRDS, SHOT_GROUPS) if any(sizes.get(x, 0) for x in g)]
    return [tuple(x for x in g if sizes.get(x, 0)) for g in panels]


def _draw_group_panel(ax, part: Sequence["Row"], groups: Sequence[str], sizes: Dict[str, int], x: np.ndarray) -> None:
    """One panel: a bar per (row, group), the value on each bar, the teacher's column shaded."""
    w = 0.8 / len(groups)
    for k, g in enumerate(groups):
        _draw_group_bars(ax, part, g, sizes.get(g, 0), x - 0.4 + w * (k + 0.5), w)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), framealpha=0.9)
    for i, r in enumerate(part):  # shade the teacher's column: it is not a student
        if r.is_teacher:
            ax.axvspan(i - 0.5, i + 0.5, color="#eeeeee", zorder=0)


def _draw_group_bars(ax, part: Sequence["Row"], group: str, n_classes: int, xs: np.ndarray, w: float) -> None:
    """The bars of one group (mean over seeds, ±std when any) at ``xs``, each with its value written above it."""
    stats = [r.metric(group) for r in part]
    means = [s[0] for s in stats]
    errs = [0 if math.isnan(s[1]) else s[1] for s in stats]
    ax.bar(xs, means, w, yerr=errs if any(errs) else None, capsize=2, color=GROUP_COLOURS[group],
           label=f"{group} ({n_classes} cls)", edgecolor="white", linewidth=0.5)
    for xi, m, e in zip(xs, means, errs):  # the value on each bar (a 0 would otherwise look missing)
        if not math.isnan(m):
            ax.text(xi, m + e + 1, f"{m:.0f}", ha="center", va="bottom", fontsize=6.5, color="#333333")


def _label_columns(bottom, part: Sequence["Row"], x: np.ndarray) -> None:
    """Row names under the bottom panel's columns, the teacher's in bold."""
    names = _series_names(part)
    bottom.set_xticks(x)
    bottom.set_xticklabels([names[r.label] for r in part], rotation=35, ha="right", fontsize=9)
    for tick, r in zip(bottom.get_xticklabels(), part):
        if r.is_teacher:
            tick.set_fontweight("bold")


def per_class_rows(part: Sequence["Row"], methods: Optional[Sequence[str]] = None) -> List["Row"]:
    """The rows the per-class plot shows: ``methods`` ("teacher" = teacher rows; default teacher, ce, kd)
    plus the student row with the best tail accuracy."""
    wanted = set(DEFAULT_PER_CLASS_METHODS if methods is None else methods)
    chosen = [r for r in part if (r.is_teacher and "teacher" in wanted) or (not r.is_teacher and r.method in wanted)]
    best = best_tail_row(part)
    if methods is None and best is not None and all(best is not r for r in chosen):
        chosen.append(best)
    return chosen


def best_tail_row(part: Sequence["Row"]) -> Optional["Row"]:
    """The student row with the highest mean tail accuracy (ties: higher overall); None without students."""
    students = [r for r in part if not r.is_teacher and not math.isnan(r.metric("tail")[0])]
    return max(students, key=lambda r: (r.metric("tail")[0], r.metric("overall")[0])) if students else None


def _bins(counts: np.ndarray, n_bins: int = 12) -> List[np.ndarray]:
    """Class indices per log-spaced bin of training count (empty bins dropped)."""
    lo, hi = float(counts.min()), float(counts.max())
    if hi <= lo:
        return [np.arange(len(counts))]
    edges = np.geomspace(lo, hi * (1 + 1e-9), n_bins + 1)
    which = np.clip(np.searchsorted(edges, counts, side="right") - 1, 0, n_bins - 1)
    return [np.flatnonzero(which == b) for b in range(n_bins) if (which == b).any()]


def plot_per_class(part: Sequence["Row"], path: Path, methods: Optional[Sequence[str]] = None) -> List[Path]:
    """Per-class test accuracy against the class's training count (log x), shot boundaries drawn."""
    import matplotlib.pyplot as plt

    rows = per_class_rows(part, methods)
    best = best_tail_row(part)
    names, styles = _series_names(part), row_styles(part)
    all_counts = np.concatenate([np.asarray(r.class_counts, dtype=float) for r in rows or part[:1]])
    binned = len(part[0].class_counts) > BIN_ABOVE
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for r in rows:
        label = names[r.label] + (" (best tail)" if r is best and methods is None else "")
        _draw_class_curve(ax, r, styles[r.label], label, binned)
    _training_count_axis(ax, all_counts)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    n_classes = len(part[0].class_counts)
    how = ("faint points: classes; line: mean per log-spaced bin of training count "
           f"({len(_bins(np.asarray(part[0].class_counts, dtype=float)))} bins)" if binned else "one point per class")
    ax.set_title(f"{_heading(part)}: per-class accuracy vs training count ({n_classes} classes)\n"
                 f"{_subtitle(part)}", fontsize=10, pad=16)
    ax.text(0.01, 0.01, how, transform=ax.transAxes, ha="left", va="bottom", fontsize=7, color="#777777")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.86)
    return _save_and_close(fig, path)


def _draw_class_curve(ax, r: "Row", st: Dict[str, Any], label: str, binned: bool) -> None:
    """One row's per-class accuracy against its own training counts: every class joined, or (``binned``) faint
    class points under the mean of each log-spaced bin."""
    acc, _ = r.per_class()
    counts = np.asarray(r.class_counts, dtype=float)  # each row's own training profile
    lw = 2.2 if r.is_teacher else 1.6
    if binned:
        bins = _bins(counts)
        ax.scatter(counts, acc, s=7, color=st["color"], alpha=0.18, linewidths=0, zorder=2)
        bx = [float(np.exp(np.log(counts[b]).mean())) for b in bins]
        by = [float(acc[b].mean()) for b in bins]
        ax.plot(bx, by, marker=st["marker"], color=st["color"], lw=lw, ms=9 if r.is_teacher else 6,
                label=label, zorder=3, markeredgecolor="white")
    else:
        order = np.argsort(counts, kind="stable")
        ax.plot(counts[order], acc[order], marker=st["marker"], color=st["color"], lw=lw,
                ms=11 if r.is_teacher else 7, label=label, zorder=3, markeredgecolor="white")


def _training_count_axis(ax, all_counts: np.ndarray) -> None:
    """Log x axis of training counts (plain numbers), y 0..100, the few / medium / many boundaries and names."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    xmin = min(float(all_counts.min()), SHOT_BOUNDARIES[0]) / 1.5
    xmax = max(float(all_counts.max()), SHOT_BOUNDARIES[1]) * 1.5
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # "100", not mathtext 10^2 (slow)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(-3, 103)
    for b in SHOT_BOUNDARIES:
        ax.axvline(b, color="#555555", ls="--", lw=0.9, zorder=1)
    trans = ax.get_xaxis_transform()
    for text, lo, hi in (("few", xmin, SHOT_BOUNDARIES[0]), ("medium", *SHOT_BOUNDARIES),
                         ("many", SHOT_BOUNDARIES[1], xmax)):
        ax.text(math.sqrt(lo * hi), 1.01, text, transform=trans, ha="center", va="bottom", fontsize=8,
                color="#555555")


def write_plots(parts: Sequence[Sequence["Row"]], out: Path,
                per_class_methods: Optional[Sequence[str]] = None) -> List[Path]:
    """The three plots (PNG + SVG) of every table into ``out/plots``; other PNG/SVG files there are removed
    (the folder is rebuilt from the records, so a plot of deleted records does not linger)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(out) / "plots"
    written: List[Path] = []
    with plt.rc_context({"svg.hashsalt": "ltkd-bench", "svg.fonttype": "none"}):
        for part in parts:
            if not part:
                continue
            stem = _stem(part)
            written += plot_tail_vs_overall(part, folder / f"{stem}_tail_vs_overall.png")
            written += plot_groups(part, folder / f"{stem}_groups.png")
            written += plot_per_class(part, folder / f"{stem}_per_class.png", per_class_methods)
    keep = set(written)
    for stale in list(folder.glob("*.png")) + list(folder.glob("*.svg")):
        if stale not in keep:
            stale.unlink(missing_ok=True)
    return written
