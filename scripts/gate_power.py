#!/usr/bin/env python
"""The CI gate's power: apply each mutation of scripts/gate_mutations.json to a temporary copy of the
repository, run ``python -m benchmark check --suite ci --no-progress`` there, and record caught / missed;
the unmodified tree too, at 1 and 2 threads (another thread count sums in another order: a stand-in for
another CPU), where the gate must pass.

    OMP_NUM_THREADS=2 python scripts/gate_power.py                      # everything (~40 min on 2 cores)
    python scripts/gate_power.py --only balanced_data constant_lr --no-baseline
    python scripts/gate_power.py --list                                 # the mutations, checked against the tree

Results go to ``--out`` (JSON, rewritten after every gate run) and a table on stdout. Exit 0 when every
baseline passed and every mutation was caught.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = Path(__file__).with_name("gate_mutations.json")
GATE = ["-m", "benchmark", "check", "--suite", "ci", "--no-progress"]
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", "results", ".tox"}


@dataclass(frozen=True)
class Mutation:
    """One regression: in ``file``, ``old`` (exactly once) becomes ``new``; ``breaks`` says what that breaks."""

    name: str
    file: str
    old: str
    new: str
    breaks: str


def load_mutations(path: Path = MUTATIONS) -> List[Mutation]:
    """The mutation list, every entry complete and every name unique (a ValueError names the bad entry)."""
    entries = json.loads(Path(path).read_text())["mutations"]
    out: List[Mutation] = []
    for i, e in enumerate(entries):
        missing = [k for k in ("name", "file", "old", "new", "breaks") if not isinstance(e.get(k), str) or not e[k]]
        if missing:
            raise ValueError(f"{path}: mutation {i} lacks {', '.join(missing)}")
        if e["old"] == e["new"]:
            raise ValueError(f"{path}: mutation '{e['name']}' changes nothing (old == new)")
        out.append(Mutation(e["name"], e["file"], e["old"], e["new"], e["breaks"]))
    names = [m.name for m in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: duplicate mutation names {', '.join(dupes)}")
    return out


def problem(m: Mutation, tree: Path = ROOT) -> Optional[str]:
    """Why ``m`` cannot be applied to ``tree`` (its file is missing, or its old text is not there exactly
    once), or None when it can."""
    path = Path(tree) / m.file
    if not path.is_file():
        return f"{m.name}: {m.file} does not exist; update scripts/gate_mutations.json"
    count = path.read_text().count(m.old)
    if count != 1:
        return (f"{m.name}: the old text occurs {count} times in {m.file}, not exactly once; update "
                f"scripts/gate_mutations.json to the current code")
    return None


def apply(m: Mutation, tree: Path) -> None:
    """Patch ``tree`` in place; refuse (ValueError) unless the old text occurs exactly once."""
    why = problem(m, tree)
    if why:
        raise ValueError(why)
    path = Path(tree) / m.file
    path.write_text(path.read_text().replace(m.old, m.new))


def source_files(root: Path = ROOT) -> List[str]:
    """The repository's files as git sees them (tracked and untracked-not-ignored); every file outside caches
    and results when ``root`` is not a git checkout (a snapshot)."""
    if (root / ".git").exists():
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                             check=True, capture_output=True).stdout.decode()
        return [f for f in out.split("\0") if f and (root / f).is_file()]
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not (_SKIP_DIRS & set(p.relative_to(root).parts))
            and not any(part.endswith(".egg-info") for part in p.relative_to(root).parts)]


def copy_tree(dest: Path, root: Path = ROOT) -> None:
    for rel in source_files(root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)


def run_gate(tree: Path, threads: int, timeout: float) -> Dict[str, object]:
    """``check --suite ci`` in ``tree`` with ``threads`` threads: its exit code, seconds and failure lines."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(tree))
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, *GATE], cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        rc, text = None, f"timed out after {timeout:.0f} s"
    lines = text.splitlines()
    fails = [ln.strip() for ln in lines if ln.strip().startswith(("FAIL", "check FAILED", "check passed", "error"))]
    means = [ln.strip() for ln in lines if "/mean" in ln]  # every setting's mean over seeds: how far it moved
    return {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "report": fails or lines[-5:], "means": means,
            "off_metrics": off_metrics(fails)}


_METRIC_OFF = re.compile(r"(?:^|[:;] )(?P<metric>[a-z_]+) -?[\d.]+ \([^()]*OFF\)")


def off_metrics(lines: Sequence[str]) -> Dict[str, int]:
    """How many failing verdict lines each metric is OFF on: which metric caught a mutation."""
    counts: Dict[str, int] = {}
    for line in lines:
        for metric in dict.fromkeys(m.group("metric") for m in _METRIC_OFF.finditer(line)):
            counts[metric] = counts.get(metric, 0) + 1
    return counts


def _one(name: str, mutation: Optional[Mutation], threads: int, timeout: float, root: Path) -> Dict[str, object]:
    """Copy the tree, apply ``mutation`` (None: the baseline), run the gate, and say what happened."""
    with tempfile.TemporaryDirectory(prefix=f"ltkd-gate-{name}-") as tmp:
        copy_tree(Path(tmp), root)
        if mutation is not None:
            apply(mutation, Path(tmp))
        res = run_gate(Path(tmp), threads, timeout)
    if mutation is None:
        outcome = "passed" if res["rc"] == 0 else "FAILED (a false alarm)"
    else:
        outcome = {0: "MISSED", 1: "caught"}.get(res["rc"], f"ERROR (rc {res['rc']}, not a verdict)")
    return {"name": name, "threads": threads, "outcome": outcome, "breaks": mutation.breaks if mutation else
            "unmodified code", **res}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these mutations")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmodified runs")
    p.add_argument("--baseline-threads", nargs="+", type=int, default=[1, 2], metavar="N")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of the mutated runs (default 1: the reference's 2 threads would be the easier case)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per gate run (default 1200)")
    p.add_argument("--out", type=Path, default=Path("gate_power.json"), help="results JSON (default ./gate_power.json)")
    p.add_argument("--list", action="store_true", help="list the mutations, check them against the tree, exit")
    args = p.parse_args(argv)
    mutations = load_mutations()
    problems = [w for w in (problem(m) for m in mutations) if w]
    if args.list or problems:
        for m in mutations:
            print(f"{m.name:28} {m.file:24} {m.breaks}")
        print("\n".join(problems) or f"{len(mutations)} mutations, each applies exactly once")
        return 1 if problems else 0
    chosen = _select(mutations, args.only)
    jobs = [] if args.no_baseline else [(f"baseline_{t}threads", None, t) for t in args.baseline_threads]
    jobs += [(m.name, m, args.threads) for m in chosen]
    results: List[Dict[str, object]] = []
    for name, m, threads in jobs:
        results.append(_one(name, m, threads, args.timeout, ROOT))
        r = results[-1]
        by = ", ".join(f"{k} {v}" for k, v in r["off_metrics"].items())
        print(f"{r['name']:28} {r['threads']} threads  {r['outcome']:28} {r['seconds']:7.1f} s  {by}", flush=True)
        args.out.write_text(json.dumps({"mutations": [asdict(m) for m in chosen], "results": results}, indent=1))
    return _summary(results)


def _select(mutations: List[Mutation], only: Optional[Sequence[str]]) -> List[Mutation]:
    if not only:
        return mutations
    names = {m.name for m in mutations}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"error: unknown mutation(s) {', '.join(unknown)}; see `python scripts/gate_power.py --list`")
    by_name = {m.name: m for m in mutations}
    return [by_name[n] for n in dict.fromkeys(only)]  # in the order given


def _summary(results: List[Dict[str, object]]) -> int:
    muts = [r for r in results if not str(r["name"]).startswith("baseline_")]
    base = [r for r in results if str(r["name"]).startswith("baseline_")]
    caught = [r["name"] for r in muts if r["outcome"] == "caught"]
    missed = [r["name"] for r in muts if r["outcome"] == "MISSED"]
    errors = [r["name"] for r in muts if r["outcome"].startswith("ERROR")]
    print(f"gate power: caught {len(caught)} of {len(muts)}" + (f"; missed {', '.join(missed)}" if missed else "")
          + (f"; errors (the gate crashed, see --out) {', '.join(errors)}" if errors else ""))
    for r in base:
        print(f"baseline at {r['threads']} threads: {r['outcome']}")
    return 0 if len(caught) == len(muts) and all(r["outcome"] == "passed" for r in base) else 1


if __name__ == "__main__":
    sys.exit(main())
