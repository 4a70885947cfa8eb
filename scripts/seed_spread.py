#!/usr/bin/env python
"""Measure how far runs move between seeds and thread counts, to derive a reference's k and floor.

    python scripts/seed_spread.py REF_OUT OTHER_OUT [OTHER_OUT ...] [--k 3] [--metrics overall tail train_loss]
        [--paired first_loss]

REF_OUT: a results folder of the suite trained with several seeds at the reference's thread count (e.g.
``check --suite ci --seeds 0 1 2 3 4 --out REF_OUT``); each OTHER_OUT: the same suite at another thread count
(a stand-in for another CPU). Prints, per metric, every run's |x - mean| in points and in seed-sd units of the
reference seeds (the other thread count's runs, and each reference seed left out of its own statistics), and
the floor that ``|x - mean| <= k * sd + floor`` needs to admit them all, for the given k. For each ``--paired``
metric: every other-thread run's |x - x_seed| against the reference run of the same seed (the floor it needs).
"""
import argparse
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark.check import run_label  # noqa: E402
from benchmark.record import RunRecord  # noqa: E402
from benchmark.verdict import gate_values, split_label  # noqa: E402


def load_runs(out: Path) -> Dict[str, Dict[int, Dict[str, float]]]:
    """setting -> seed -> the numbers a reference judges (final accuracies, train_loss, first_loss), from
    ``out/runs/*.json`` (finished runs only)."""
    runs: Dict[str, Dict[int, Dict[str, float]]] = {}
    for path in sorted(Path(out, "runs").glob("*.json")):
        rec = RunRecord.load(path)
        if rec.ok:
            setting, seed = split_label(run_label(rec))
            runs.setdefault(setting, {})[seed] = gate_values(rec)
    return runs


def deviations(ref: Dict[str, Dict[int, Dict[str, float]]], others: Sequence[Dict[str, Dict[int, Dict[str, float]]]],
               metric: str) -> List[Tuple[str, float, float]]:
    """(what, |x - mean|, sd) for every other-thread run and every leave-one-out reference seed."""
    out = []
    for setting, seeds in sorted(ref.items()):
        vals = {s: f[metric] for s, f in seeds.items() if f.get(metric) is not None}
        if len(vals) < 3:
            continue
        mean, sd = statistics.fmean(vals.values()), statistics.stdev(vals.values())
        for other in others:
            for s, f in sorted(other.get(setting, {}).items()):
                out.append((f"{setting}/s{s} other threads", abs(f[metric] - mean), sd))
        for s, x in vals.items():
            rest = [v for t, v in vals.items() if t != s]
            out.append((f"{setting}/s{s} left out", abs(x - statistics.fmean(rest)), statistics.stdev(rest)))
    return out


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ref", type=Path)
    p.add_argument("others", type=Path, nargs="+")
    p.add_argument("--k", type=float, default=3.0)
    p.add_argument("--metrics", nargs="+", default=["overall", "tail", "train_loss"])
    p.add_argument("--paired", nargs="*", default=["first_loss"], metavar="METRIC")
    args = p.parse_args(argv)
    ref, others = load_runs(args.ref), [load_runs(o) for o in args.others]
    for m in args.metrics:
        for kind in ("other threads", "left out"):
            _report(m, kind, [d for d in deviations(ref, others, m) if d[0].endswith(kind)], args.k)
    for m in args.paired:
        _report_paired(m, ref, others)
    for setting, seeds in sorted(ref.items()):
        row = ", ".join(f"{m} " + "/".join(f"{f[m]:.1f}" for _, f in sorted(seeds.items()) if f.get(m) is not None)
                        for m in args.metrics)
        print(f"  {setting}: {row}")
    return 0


def _report_paired(m: str, ref: Dict[str, Dict[int, Dict[str, float]]],
                   others: Sequence[Dict[str, Dict[int, Dict[str, float]]]]) -> None:
    """A paired metric: the largest |x - x_seed| of another thread count's run against the same seed's."""
    diffs = [(f"{setting}/s{s}", abs(f[m] - ref[setting][s][m])) for other in others
             for setting, seeds in sorted(other.items()) for s, f in sorted(seeds.items())
             if f.get(m) is not None and (ref.get(setting, {}).get(s) or {}).get(m) is not None]
    if diffs:
        worst = max(diffs, key=lambda d: d[1])
        print(f"{m} (paired, other threads vs the same seed): {len(diffs)} runs, largest |x - x_seed| "
              f"{worst[1]:.6f} ({worst[0]}); the floor must be >= that")


def _report(m: str, kind: str, devs: List[Tuple[str, float, float]], k: float) -> None:
    """One line per metric and kind: the worst deviation in sd units, and the floor k needs to admit all."""
    if devs:
        worst_z = max((d / sd for _, d, sd in devs if sd > 0), default=0.0)
        need = max(devs, key=lambda t: t[1] - k * t[2])
        floor = max(0.0, need[1] - k * need[2])
        sds = [sd for _, _, sd in devs]
        print(f"{m} ({kind}): {len(devs)} runs, seed sd {min(sds):.2f}..{max(sds):.2f}, worst |x - mean| / sd "
              f"{worst_z:.2f}; with k {k:g} the floor must be >= {floor:.2f} ({need[0]}: |x - mean| "
              f"{need[1]:.2f}, sd {need[2]:.2f})")


if __name__ == "__main__":
    sys.exit(main())
