"""Run store and reporting: atomic JSON run records -> leaderboard.md / .csv and per-class plots.

Tables and plots are generated only from the records in ``<out>/runs/``. Each record is written with
a temp file + rename, and regeneration holds a file lock, so two processes sharing a results folder
never corrupt or lose a record or a table.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

__all__ = ["RunStore", "atomic_write_text", "leaderboard_frame", "write_leaderboard", "write_plots", "regenerate"]

METRICS = ("overall", "many", "medium", "few", "head", "middle", "tail")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; a no-op where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RunStore:
    """``<out>/runs/<run_id>.json`` records and ``<out>/checkpoints/`` of one results folder."""

    def __init__(self, out: os.PathLike | str) -> None:
        self.out = Path(out)
        self.runs = self.out / "runs"
        self.checkpoints = self.out / "checkpoints"

    def record_path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.checkpoints / f"{run_id}.pt"

    def lock_path(self, run_id: str) -> Path:
        return self.checkpoints / "locks" / f"{run_id}.lock"

    def teacher_weights(self, run_id: str) -> Path:
        return self.checkpoints / "teachers" / f"{run_id}.pt"

    def exists(self, run_id: str) -> bool:
        """A finished run (its record exists and says ok)."""
        rec = self.load(run_id)
        return rec is not None and rec.get("status") == "ok"

    #: Keys (and types) every run record has, and those an ``ok`` record adds; anything else in ``runs/`` is skipped.
    RECORD_KEYS = {"run_id": str, "status": str, "role": str, "dataset": str, "method": str, "seed": int}
    OK_KEYS = {"final": dict, "best": dict, "class_counts": list}
    RESULT_KEYS = ("epoch", "overall", "per_class_acc", "group_sizes")

    @classmethod
    def record_problem(cls, rec: Any, path: Path) -> Optional[str]:
        """Why ``rec`` (parsed from ``path``) is not a run record of this schema, or None when it is one."""
        if not isinstance(rec, dict):
            return f"a JSON {type(rec).__name__}, not a run record (an object)"
        keys = {**cls.RECORD_KEYS, **(cls.OK_KEYS if rec.get("status") == "ok" else {})}
        missing = [k for k in keys if k not in rec] + ([] if ("arch" in rec or "student_arch" in rec) else ["arch"])
        if missing:
            return f"missing {', '.join(missing)} (not a run record of this schema)"
        wrong = [k for k, tp in keys.items() if not isinstance(rec[k], tp) or (tp is int and isinstance(rec[k], bool))]
        if wrong:
            return f"{', '.join(wrong)} of the wrong type"
        if rec["run_id"] != path.stem:
            return f"its run_id '{rec['run_id']}' does not match the file name"
        for part in ("final", "best") if rec["status"] == "ok" else ():
            absent = [k for k in cls.RESULT_KEYS if k not in rec[part]]
            if absent:
                return f"'{part}' lacks {', '.join(absent)}"
        return None

    def _read(self, path: Path) -> Optional[Dict[str, Any]]:
        """The record in ``path``, or None with ONE warning naming the file and why (never an exception)."""
        try:
            rec = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:  # unreadable, binary, truncated or not JSON
            why = f"not valid JSON ({type(err).__name__}: {' '.join(str(err).split())})"
        else:
            why = self.record_problem(rec, path)
            if why is None:
                return rec
        warnings.warn(f"{path}: skipped, {why}; the run is redone if a suite needs it (delete or move the file "
                      f"to silence this)", RuntimeWarning)  # one place: shown once per file
        return None

    def load(self, run_id: str) -> Optional[Dict[str, Any]]:
        """The record of ``run_id``; None when absent or unusable (then the run is redone and the file replaced)."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        return self._read(path)

    def write(self, record: Dict[str, Any]) -> Path:
        path = self.record_path(record["run_id"])
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False, default=_json_default) + "\n")
        return path

    def records(self) -> List[Dict[str, Any]]:
        """Every valid record in ``runs/``; a truncated, binary or foreign file is skipped with one warning."""
        out = []
        for path in sorted(self.runs.glob("*.json")):
            rec = self._read(path)
            if rec is not None:
                out.append(rec)
        return out


def _arch(rec: Dict[str, Any]) -> str:
    """The network a record trained (``arch``; ``student_arch`` in records written before it was named so)."""
    return rec.get("arch") or rec["student_arch"]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------- tables

def dataset_label(rec: Dict[str, Any]) -> str:
    """The dataset's name plus any non-default build options (``fmnist-lt (n_max=600)``)."""
    opts = rec.get("data_options") or {}
    return rec["dataset"] + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) + ")" if opts else "")


def leaderboard_frame(records: List[Dict[str, Any]], epoch: str = "final"):
    """One row per (dataset, IF, pair, method): mean and std over seeds of every metric."""
    import pandas as pd

    rows = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        res = rec[epoch]
        row = {"dataset": dataset_label(rec), "imbalance_factor": rec.get("imbalance_factor"),
               "teacher": rec.get("teacher_arch") if rec["role"] == "student" else rec["student_arch"],
               "student": rec["student_arch"], "role": rec["role"],
               "method": rec["method"] if rec["role"] == "student" else "teacher (ce)",
               "seed": rec["seed"], "epoch": res["epoch"]}
        for m in METRICS:
            row[m] = res.get(m)
        for g, n in res["group_sizes"].items():
            row[f"n_{g}"] = n
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    keys = ["dataset", "imbalance_factor", "teacher", "student", "role", "method"]
    agg = {m: ["mean", "std"] for m in METRICS}
    agg.update({"seed": "count", "epoch": "max"})
    agg.update({c: "first" for c in df.columns if c.startswith("n_")})
    out = df.groupby(keys, dropna=False, sort=False).agg(agg)
    out.columns = [f"{a}_{b}" if b not in ("first", "count", "max") else a for a, b in out.columns]
    out = out.rename(columns={"seed": "seeds"}).reset_index()
    return out


def _fmt(mean: Any, std: Any) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def write_leaderboard(records: List[Dict[str, Any]], out: Path) -> Optional[str]:
    """``leaderboard.md`` (tabulate, GitHub Markdown) and ``leaderboard.csv`` (pandas) from records."""
    from tabulate import tabulate

    final = leaderboard_frame(records, "final")
    if final.empty:
        return None
    best = leaderboard_frame(records, "best")
    atomic_write_text(out / "leaderboard.csv", final.to_csv(index=False))
    lines = ["# ltkd-bench leaderboard", "",
             "Generated by `python -m benchmark report` from the run records in `runs/`; do not edit by hand.",
             "Accuracy in % on the balanced test split, final epoch (no model selection on test), mean ± std over "
             "seeds. Shot groups from TRAIN counts: many > 100, medium 20..100, few < 20 images; head / middle / "
             "tail are thirds of the classes by training frequency. `best` is the best evaluated epoch "
             "(selected on test; reported for comparison with papers that do so).", ""]
    sections = final.groupby(["dataset", "imbalance_factor", "teacher"], dropna=False, sort=False)
    for (dataset, imb, teacher), part in sections:
        first = part.iloc[0]
        sizes = {g: int(first[f"n_{g}"]) for g in ("many", "medium", "few", "head", "middle", "tail")}
        students = sorted(set(part.loc[part.role == "student", "student"]))
        title = f"## {dataset}" + (f", imbalance factor {imb:g}" if imb == imb and imb is not None else "")
        title += f" — teacher {teacher}" + (f" → student {', '.join(students)}" if students else "")
        lines += [title, ""]
        empty = [g for g in ("many", "medium", "few") if sizes[g] == 0]
        lines.append("Classes per group: " + ", ".join(f"{g} {n}" for g, n in sizes.items()) + ".")
        if empty:
            lines.append(f"No class falls in {' / '.join(empty)} on this dataset (strict 100/20 rule): those "
                         "columns are empty; use head / middle / tail.")
        lines.append("")
        headers = ["method", "student", *[f"{m} ({sizes[m]} cls)" if m in sizes else m for m in METRICS],
                   "best overall", "seeds"]
        table = []
        order = part.sort_values(["role", "overall_mean"], ascending=[False, False])
        for _, r in order.iterrows():
            b = best[(best.dataset == r.dataset) & (best.teacher == r.teacher) & (best.student == r.student)
                     & (best.method == r.method)
                     & ((best.imbalance_factor == r.imbalance_factor) | best.imbalance_factor.isna())]
            best_txt = _fmt(b.iloc[0]["overall_mean"], b.iloc[0]["overall_std"]) if len(b) else "—"
            table.append([f"**{r.method}**" if r.role == "teacher" else r.method, r.student,
                          *[_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS], best_txt, int(r.seeds)])
        lines.append(tabulate(table, headers=headers, tablefmt="github", disable_numparse=True))
        lines.append("")
    legend = _method_legend({r["method"] for r in records if r.get("role") == "student"})
    if legend:
        lines += ["Methods:", "", *legend, ""]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        lines += ["Failed runs (not in the tables):", ""]
        lines += [f"- `{r['run_id']}`: {r.get('reason')}" for r in failed]
        lines.append("")
    text = "\n".join(lines)
    atomic_write_text(out / "leaderboard.md", text)
    return text


def _method_legend(names) -> List[str]:
    try:
        import methods
    except ImportError:  # pragma: no cover
        return []
    out = []
    for name in sorted(names):
        try:
            cls = methods.get_method(name)
        except KeyError:
            continue
        if cls.summary:
            out.append(f"- `{name}`: {cls.summary}")
    return out


def write_plots(records: List[Dict[str, Any]], out: Path) -> List[Path]:
    """A PNG per (dataset, IF, teacher): per-class accuracy against training-class size, every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for rec in records:
        if rec.get("status") == "ok":
            groups.setdefault((dataset_label(rec), rec.get("imbalance_factor"), rec.get("teacher_arch") or
                               rec["student_arch"]), []).append(rec)
    written = []
    for (dataset, imb, teacher), recs in groups.items():
        by_method: Dict[str, List[Dict[str, Any]]] = {}
        for rec in recs:
            label = rec["method"] if rec["role"] == "student" else f"teacher {rec['student_arch']}"
            by_method.setdefault(label, []).append(rec)
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours: one per method on a full grid
        for label, rs in sorted(by_method.items()):
            counts = rs[0]["class_counts"]
            accs = [sum(r["final"]["per_class_acc"][c] for r in rs) / len(rs) for c in range(len(counts))]
            order = sorted(range(len(counts)), key=lambda c: -counts[c])
            style = {"color": "black", "linewidth": 2.5} if label.startswith("teacher") else {}
            ax.plot([counts[c] for c in order], [accs[c] for c in order], marker=".", label=label, **style)
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class (log scale)")
        ax.set_ylabel("test accuracy of the class (%)")
        ax.set_title(f"{dataset}" + (f" IF {imb:g}" if imb is not None else "") + f", teacher {teacher}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset).strip("_")
        name = f"{stem}_if{imb:g}_{teacher}.png" if imb is not None else f"{stem}_{teacher}.png"
        path = out / "plots" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)
    return written


def regenerate(out: os.PathLike | str) -> Optional[str]:
    """Rebuild tables and plots from every record in ``out`` (under a lock: concurrent runs are safe)."""
    out = Path(out)
    store = RunStore(out)
    with file_lock(out / ".lock"):
        records = store.records()
        text = write_leaderboard(records, out)
        if text is not None:
            write_plots(records, out)
    return text
