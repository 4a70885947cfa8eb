"""``python -m benchmark`` / ``ltkd-bench``: run, list, report, check, prepare, eval and speed.

Every error a user can cause ends as one line on stderr naming the problem and the fix, exit code 2.
Only ``__main__`` imports this module. The commands import torch-heavy modules (runner, trainer, methods,
datasets) inside their function, on purpose: ``--help``, ``--version`` and argument errors then answer at
once instead of after the 2-3 s torch/timm import.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, NoReturn, Optional

from .config import (ConfigError, DatasetEntry, SuiteConfig, check_data, check_device, check_root, list_suites,
                     load_suite, validate_suite)

DEFAULT_OUT = Path("results")


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    out: List[str] = []
    for v in values:
        out += [p for p in v.replace(",", " ").split() if p]
    return out


def scale_epochs(cfg: SuiteConfig, epochs: int) -> None:
    """Set both recipes to ``epochs``; rescale LR milestones, LR warm-up and every method's declared epoch-valued
    hyper-parameters (``Method.epoch_params``) by one rule (``benchmark.epochs``), so a short run keeps the
    protocol's shape."""
    from .epochs import scale_epochs as scale

    scale(cfg, epochs)


def print_schedule_warnings(cfg: SuiteConfig) -> None:
    """``warning: ...`` on stderr for every epoch-valued method setting that is inert for the whole run."""
    from .epochs import schedule_warnings

    for line in schedule_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)


def build_config(args: argparse.Namespace) -> SuiteConfig:
    """Suite YAML + CLI options + key=value overrides -> validated config.

    Everything that can be checked before training is: the config itself, ``--root``, the device, and
    (unless ``--dry-run`` or ``--executor submitit``, whose data may live on the cluster) every training
    split against the batch sizes.
    """
    _recover_overrides(args)
    remote = getattr(args, "executor", "local") == "submitit"
    if getattr(args, "root", None) and not remote:
        check_root(args.root, "--root")
    cfg = load_suite(args.suite, args.overrides, validate=False)
    _apply_selection(cfg, args)
    validate_suite(cfg)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
        scale_epochs(cfg, args.epochs)
    if not remote:
        check_device(cfg, "--device" if args.device else "device:")
        if not getattr(args, "dry_run", False):
            check_data(cfg)
    return cfg


def _recover_overrides(args: argparse.Namespace) -> None:
    """Move ``key=value`` items that a greedy list option swallowed (``--seeds 0 1 a.b=c``) to the overrides."""
    for opt in ("methods", "datasets", "seeds"):
        values = getattr(args, opt) or []
        args.overrides = list(args.overrides or []) + [v for v in values if "=" in v]
        setattr(args, opt, [v for v in values if "=" not in v] or None)


def _apply_selection(cfg: SuiteConfig, args: argparse.Namespace) -> None:
    """``--methods``, ``--datasets``, ``--seeds``, ``--root`` and ``--device`` replace the suite's values."""
    methods_sel = _split_list(args.methods)
    if methods_sel:
        cfg.methods = methods_sel
    ds_sel = _split_list(args.datasets)
    if ds_sel:
        cfg.datasets = _select_datasets(cfg, ds_sel)
    if args.seeds:
        try:
            cfg.seeds = [int(s) for s in _split_list(args.seeds)]
        except ValueError:
            raise ConfigError(f"--seeds takes integers, got {' '.join(args.seeds)}") from None
    if getattr(args, "root", None):
        for entry in cfg.datasets:
            entry.root = args.root
    if args.device:
        cfg.device = args.device


def _select_datasets(cfg: SuiteConfig, names: List[str]) -> List[DatasetEntry]:
    """The suite's entries of ``names``; a dataset the suite lacks runs at its default imbalance factor."""
    import datasets as ds

    existing = {e.name: e for e in cfg.datasets}
    return [existing.get(n) or DatasetEntry(
        n, imbalance_factors=[ds.dataset_info(n).default_imbalance_factor] if n in ds.list_datasets() else [None])
        for n in names]


_POSITIVE_OPTIONS = ("epochs", "batch_size", "steps", "image_size", "in_chans", "num_classes", "slurm_time",
                     "gpus_per_task", "cpus_per_task", "array_parallelism", "runs_per_task")


def check_out(out: Path, command: str) -> None:
    """``--out`` must be a folder this process can create or write (checked before anything trains)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; give a results folder (created if missing)")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, so the results folder cannot be created there")
    if command != "report" or existing == out:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: {existing} is not writable; choose a folder you can write")
        _probe_write(out, existing)


def _probe_write(out: Path, existing: Path) -> None:
    """Create and drop a file in ``existing``: root passes ``os.access`` on a read-only or virtual file system."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write in {existing} ({err.strerror or err}); choose a folder on a "
                          "writable disk") from None


def check_args(args: argparse.Namespace) -> None:
    """Option values argparse accepts but the commands cannot use: non-positive counts, an unusable ``--out``."""
    for name in _POSITIVE_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"{args.command} --{name.replace('_', '-')}: must be a positive integer, got {value}")
    if getattr(args, "out", None) is not None:
        check_out(args.out, args.command)


class _OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``error: ... (see --help)``), like every other CLI error."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _add_run_options(p: argparse.ArgumentParser, default_suite: str) -> None:
    p.add_argument("--suite", default=default_suite,
                   help=f"suite name in configs/ or a YAML path (default: {default_suite}; see `list`)")
    p.add_argument("--methods", nargs="+", help="only these methods (names or comma lists; default: the suite's)")
    p.add_argument("--datasets", nargs="+", help="only these datasets (default: the suite's)")
    p.add_argument("--seeds", nargs="+", help="training seeds (default: the suite's)")
    p.add_argument("--epochs", type=int, help="epochs for teacher and student; milestones and warm-ups rescale")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the suite's (auto: CUDA if present)")
    p.add_argument("--root", help="dataset root folder for every dataset of the suite")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (the epoch tables are still printed)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override any config field, e.g. student_train.epochs=5 method_params.kd.temperature=2")


def _add_submitit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--executor submitit (Slurm job arrays; see docs/scaling.md)")
    g.add_argument("--slurm-partition", help="Slurm partition (default: the cluster's default)")
    g.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MIN",
                   help="time limit per array task in minutes (default: 1440); a task that hits it is "
                        "checkpointed and requeued")
    g.add_argument("--gpus-per-task", type=int, default=1, metavar="N",
                   help="GPUs per array task (default: 1); N > 1 trains each run of the task with DDP over N GPUs")
    g.add_argument("--cpus-per-task", type=int, default=8, metavar="N",
                   help="CPU cores per process (default: 8; DataLoader workers of ImageNet-LT / Places-LT)")
    g.add_argument("--array-parallelism", type=int, metavar="N",
                   help="at most N array tasks at once (default: Slurm 256; --slurm-local: one per set of "
                        "--gpus-per-task GPUs, more shares the GPUs; 1 on CPU)")
    g.add_argument("--runs-per-task", type=int, default=1, metavar="K",
                   help="pack K runs into each array task, run one after the other (default: 1)")
    g.add_argument("--slurm-extra", action="append", metavar="KEY=VALUE",
                   help="any other sbatch option, repeatable: --slurm-extra account=proj --slurm-extra qos=high")
    g.add_argument("--slurm-local", action="store_true",
                   help="use submitit's local executor on this machine instead of Slurm (one multi-GPU node, "
                        "laptops, tests)")
    g.add_argument("--no-wait", action="store_true",
                   help="submit and return; `python -m benchmark report` rebuilds the leaderboard later")


def _prog() -> str:
    """How the user called us: ``python -m benchmark`` when run as a module, else ``ltkd-bench`` (console script)."""
    return "python -m benchmark" if Path(sys.argv[0]).name == "__main__.py" else "ltkd-bench"


def make_parser() -> argparse.ArgumentParser:
    """The ``ltkd-bench`` argument parser: every command and its options."""
    from . import __version__
    from .eval_cmd import add_eval_parser

    prog = _prog()
    parser = _OneLineParser(
        prog=prog,
        description="ltkd-bench: knowledge distillation on long-tailed image classification. "
                    f"`{prog} run` with no arguments runs the quick suite on Fashion-MNIST-LT.")
    parser.add_argument("--version", action="version", version=f"ltkd-bench {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do (COMMAND --help for its options)")
    _add_run_parser(sub)
    _add_list_and_report_parsers(sub)
    _add_check_parser(sub)
    _add_prepare_parser(sub)
    _add_speed_parser(sub)
    add_eval_parser(sub)
    return parser


def _add_run_parser(sub: "argparse._SubParsersAction") -> None:
    """``run``: the suite, its selections and overrides, the results folder, resume and executor options."""
    p = sub.add_parser("run", help="train teachers and students of a suite, write records and leaderboards",
                       description="Expand the suite's grid, skip runs whose record exists (resume), train the "
                                   "rest and regenerate the leaderboard in --out.")
    _add_run_options(p, "quick")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default: results/)")
    p.add_argument("--executor", choices=["local", "submitit"], default="local",
                   help="local: this process (or torchrun's); submitit: Slurm job arrays")
    p.add_argument("--dry-run", action="store_true",
                   help="list every run (done / to do / failed), its recipe and the data it needs, then exit "
                        "(exit 1 when data is missing)")
    p.add_argument("--retry-failed", action="store_true",
                   help="retrain runs recorded as failed deterministically (non-finite loss, invalid value); "
                        "by default they are not retried")
    p.add_argument("--retrain-stale", action="store_true",
                   help="retrain runs whose record came from other code (another code fingerprint)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="train the runs of a cell one after the other instead of in lockstep (debugging; same "
                        "numbers, slower)")
    p.add_argument("--no-keep-students", action="store_true",
                   help="do not keep each student's final weights in <out>/checkpoints/students/ (huge grids)")
    _add_no_reference(p)
    _add_submitit_options(p)


def _add_list_and_report_parsers(sub: "argparse._SubParsersAction") -> None:
    """``list`` (suites, methods, datasets, models) and ``report`` (tables and plots from the records)."""
    p = sub.add_parser("list", help="list suites, methods, datasets and models")
    p.add_argument("what", nargs="?", choices=["all", "suites", "methods", "datasets", "models"], default="all",
                   help="what to list (default: all)")

    p = sub.add_parser("report", help="regenerate leaderboard.md/.csv/.html and plots from the run records")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default: results/)")
    _add_no_reference(p)


def _add_no_reference(p: argparse.ArgumentParser) -> None:
    """``--no-reference``: neither reuse the committed reference teacher nor rank beside the reference rows."""
    p.add_argument("--no-reference", action="store_true",
                   help="leave the suite's committed reference (results/reference/<suite>/) out: train its teacher "
                        "here and show only this folder's runs (default: reuse its teacher when the sha256 "
                        "checks out, rank beside its rows of the same settings)")


def _add_check_parser(sub: "argparse._SubParsersAction") -> None:
    """``check``: run a suite and compare with its reference numbers (the CI gate)."""
    p = sub.add_parser("check", help="run a suite and compare with its committed reference accuracies",
                       description="Exit 1 when any run, or any setting's mean over the seeds, is outside the "
                                   "reference's seed spread (|x - mean| <= k * sd + floor, both ways); exit 2 when "
                                   "the reference or a record cannot be trusted.")
    _add_run_options(p, "ci")
    p.add_argument("--out", type=Path, help="results folder (default: a fresh temporary folder)")
    p.add_argument("--reference", type=Path, help="reference JSON (default: the suite's `reference:`)")
    p.add_argument("--update-reference", action="store_true", help="write the measured numbers as the reference")


def _add_prepare_parser(sub: "argparse._SubParsersAction") -> None:
    """``prepare``: download where allowed and check a dataset folder."""
    p = sub.add_parser("prepare", help="download (where allowed) and check a dataset folder, saying exactly what is "
                                       "missing or corrupt",
                       description="Check a dataset's files (presence, counts, checksums; every image of ImageNet-LT / "
                                   "Places-LT exists and decodes). --download fetches Fashion-MNIST and CIFAR with "
                                   "torchvision's downloader and checksums first. Exit 0: ready, 1: problems found, "
                                   "2: cannot download (the message says where to get the data). See docs/data.md.")
    p.add_argument("--dataset", required=True, help="fmnist-lt, cifar10-lt, cifar100-lt, imagenet-lt, places-lt")
    p.add_argument("--root", help="the dataset folder (default: the dataset's own under $LTKD_DATA or ./data, the "
                                  "folder the suites read)")
    p.add_argument("--download", action="store_true",
                   help="first fetch the files into the folder (fmnist-lt, cifar10-lt, cifar100-lt; skipped when present)")
    p.add_argument("--no-decode", action="store_true",
                   help="ImageNet-LT / Places-LT: only check that images exist, do not decode each one")
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads decoding images (default: min(8, CPU cores))")
    p.add_argument("--max-listed", type=int, default=5, metavar="N",
                   help="file names listed per problem (default: 5; the count is always given)")


def _add_speed_parser(sub: "argparse._SubParsersAction") -> None:
    """``speed``: images/s of the harness's KD step against a usual eager pipeline and pure compute."""
    p = sub.add_parser("speed", help="images/s of ltkd-bench's KD step vs a usual eager pipeline vs pure compute")
    p.add_argument("--teacher", default="cifar_cnn_small", help="teacher model (default: cifar_cnn_small)")
    p.add_argument("--student", default="cifar_cnn_tiny", help="student model (default: cifar_cnn_tiny)")
    p.add_argument("--image-size", type=int, default=28, help="side of the synthetic square images (default: 28)")
    p.add_argument("--in-chans", type=int, default=1, help="input channels (default: 1)")
    p.add_argument("--num-classes", type=int, default=10, help="classes (default: 10)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per path")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default): CUDA if present, else CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the ltkd-bench step (paths a and c)")
    p.add_argument("--grid", action="store_true",
                   help="instead: time a cell of every method trained in lockstep vs one at a time, for the quick "
                        "pair and resnet32x4->resnet8x4 (--steps per round; default 6)")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")


def cmd_run(args: argparse.Namespace) -> int:
    from . import distributed as D
    from .console import top_rows
    from .device import configure_backends
    from .executors import create_executor
    from .results import regenerate
    from .runner import RunOptions, expand_grid, summarize_outcomes

    cfg = build_config(args)
    D.init_from_env(cfg.device)  # under torchrun: one process group, this rank's device
    try:
        device = D.local_device(cfg.device)
        specs = expand_grid(cfg, device)
        if D.is_main():
            print_schedule_warnings(cfg)  # before training, and in the dry run
        if args.dry_run:
            return dry_run(cfg, specs, args.out, device)
        D.check_batch_sizes(cfg)
        configure_backends(device, cfg.deterministic)
        executor = create_executor(args.executor, **(slurm_options(args) if args.executor == "submitit" else {}))
        main = D.is_main()
        opts = RunOptions(args.out, device, progress=not args.no_progress, together=not args.one_at_a_time,
                          retry_failed=args.retry_failed, retrain_stale=args.retrain_stale,
                          keep_students=not args.no_keep_students, log=harness_log() if main else D.rank_log,
                          reference=not args.no_reference)
        n_t = sum(s.role == "teacher" for s in specs)
        procs = f" x {D.world_size()} processes (DDP)" if D.world_size() > 1 else ""
        if main:
            print(f"suite '{cfg.name}': {len(specs)} runs ({n_t} teachers, {len(specs) - n_t} students) on "
                  f"{device}{procs}; results in {args.out}/")
        outcomes = executor.run(cfg, specs, opts)
        if main:
            text = regenerate(args.out, reference=not args.no_reference, log=print)  # also when all were recorded
            for o in outcomes:
                if o.note:
                    print(f"note: {o.run_id}: {o.note}")
            summary, rc = summarize_outcomes(outcomes)
            print(summary + (f". Leaderboard: {args.out / 'leaderboard.md'} (page: {args.out / 'leaderboard.html'})"
                             if text is not None else ""))
            print("\n".join(top_rows(args.out)))  # benchmark.console
            _print_verdict(cfg, [o.record for o in outcomes if o.record is not None], args.out)
        D.barrier()
        return rc if main else 0
    finally:
        D.cleanup()


def _print_verdict(cfg: SuiteConfig, records: list, out: Path) -> None:
    """Compare this grid's verified runs with the suite's committed reference numbers: counts by kind, then
    each OFF run in full (every run's line is in the per-run logs' records; a refused record is named)."""
    from .check import load_reference, reference_path, run_label, verdicts
    from .console import verdict_summary
    from .integrity import verify_records
    from .results import RunStore

    path = reference_path(cfg)
    if not path.exists() or not records:
        return
    records, refused, _ = verify_records(records, out)
    for line in refused:
        print(f"warning: {line}")
    try:
        judged = verdicts(records, load_reference(path))
    except ConfigError as err:
        print(f"reproduction: not compared ({err})")
        return
    ids = {run_label(r): r.run_id for r in records}
    for v in judged:  # every run's full verdict line goes to its own log
        if v.label in ids:
            RunStore(out).append_log(ids[v.label], f"reproduction: {v.text.strip()}")
    print(f"reproduction against {path.name} (committed reference numbers of suite '{cfg.name}'):")
    print("\n".join(verdict_summary(judged)))


def _missing_data(cfg: SuiteConfig) -> dict:
    """{dataset name: why} for every dataset of the suite whose training split cannot be read."""
    import datasets as ds

    missing = {}
    for entry in cfg.datasets:
        for imb in entry.imbalance_factors:
            kw = {} if imb is None else {"imbalance_factor": imb}
            try:
                ds.build_dataset(entry.name, root=entry.root, split="train", seed=entry.data_seed, **kw,
                                 **entry.options)
            except (FileNotFoundError, ValueError, RuntimeError) as err:
                missing[entry.name] = str(err).splitlines()[0]
    return missing


def dry_run(cfg: SuiteConfig, specs: list, out: Path, device) -> int:
    """Each run's status in ``out`` (done / to do / failed), its recipe and the data it needs; exit 1 when
    some data is missing."""
    from .epochs import epoch_values
    from .results import RunStore

    store = RunStore(out)
    missing = _missing_data(cfg)
    status = {s.run_id: rec.status if (rec := store.load(s.run_id)) is not None else "to do" for s in specs}
    for s in specs:
        r = dict(s.recipe)
        who = f"teacher {s.arch}" if s.role == "teacher" else f"{s.teacher_arch}->{s.arch} {s.method}"
        scaled = epoch_values(s.method, dict(s.method_params)) if s.role == "student" else ""
        who += f" ({scaled})" if scaled else ""
        data = s.dataset + (f" IF {s.imbalance_factor:g}" if s.imbalance_factor else "")
        print(f"{status[s.run_id].replace('ok', 'done'):6s} {s.run_id}  {who}, {data}, {r['epochs']} ep x batch "
              f"{r['batch_size']}, lr {s.student_lr or r['lr']:g} {r['schedule']}"
              + ("  [data MISSING]" if s.dataset in missing else ""))
    for name, why in missing.items():
        print(f"missing data for {name}: {why}", file=sys.stderr)
    n = {k: sum(v == k for v in status.values()) for k in ("ok", "failed", "to do")}
    print(f"{len(specs)} runs on {device}: {n['ok']} done, {n['to do']} to do, {n['failed']} failed")
    return 1 if missing else 0


def slurm_options(args: argparse.Namespace) -> dict:
    """The ``--slurm-*`` options as the submitit executor's keyword arguments."""
    from .executors.slurm import SlurmOptions

    return {"partition": args.slurm_partition, "time": args.slurm_time, "gpus_per_task": args.gpus_per_task,
            "cpus_per_task": args.cpus_per_task, "array_parallelism": args.array_parallelism,
            "runs_per_task": args.runs_per_task, "extra": SlurmOptions.parse_extra(args.slurm_extra or []),
            "local": args.slurm_local, "wait": not args.no_wait}


def cmd_list(args: argparse.Namespace) -> int:
    import datasets as ds
    import methods

    from .models import list_zoo

    what = args.what
    if what in ("all", "suites"):
        print("suites (configs/):")
        for name in list_suites():
            cfg = load_suite(name, validate_names=False)
            print(f"  {name:14s} {cfg.description}")
    if what in ("all", "methods"):
        print("methods:")
        for name in methods.list_methods():
            cls = methods.get_method(name)
            hp = ", ".join(f"{k}={v}" for k, v in cls.hparams.items())
            print(f"  {name:18s} {cls.summary}" + (f"  [{hp}]" if hp else ""))
    if what in ("all", "datasets"):
        print("datasets:")
        for name in ds.list_datasets():
            info = ds.dataset_info(name)
            print(f"  {name:12s} {info.num_classes} classes, {info.in_chans}x{info.image_size}x{info.image_size}"
                  + (f", default imbalance factor {info.default_imbalance_factor:g}"
                     if info.default_imbalance_factor else ""))
    if what in ("all", "models"):
        print("models (CIFAR zoo registered into timm; any timm model name works too):")
        print("  " + ", ".join(list_zoo()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .results import regenerate

    text = regenerate(args.out, reference=not args.no_reference, log=lambda line: print(line, file=sys.stderr))
    if text is None:
        print(f"no run records in {args.out}/runs: run `python -m benchmark run` first", file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from . import distributed as D
    from .check import CheckOptions, run_check
    from .device import configure_backends

    cfg = build_config(args)
    D.init_from_env(cfg.device)  # under torchrun: rank 0 compares, every rank trains
    try:
        D.check_batch_sizes(cfg)
        device = D.local_device(cfg.device)
        if D.is_main():
            print_schedule_warnings(cfg)
        configure_backends(device, cfg.deterministic)
        opts = CheckOptions(out=args.out, reference=args.reference, update_reference=args.update_reference,
                            progress=not args.no_progress)
        return run_check(cfg, opts, device, log=harness_log() if D.is_main() else D.rank_log)
    finally:
        D.cleanup()


def cmd_prepare(args: argparse.Namespace) -> int:
    import datasets as ds

    if args.download:
        try:
            ds.download_dataset(args.dataset, args.root)
        except ds.DownloadUnavailable as err:  # ImageNet-LT / Places-LT: where to get them, in one line
            print(f"error: {err}", file=sys.stderr)
            return 2
        except RuntimeError as err:  # the download or its checksum failed
            print(f"error: {err}", file=sys.stderr)
            return 1
    report = ds.verify_dataset(args.dataset, args.root, decode=not args.no_decode, workers=args.workers,
                               max_listed=args.max_listed)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval_cmd import cmd_eval as run_eval

    return run_eval(args)


def cmd_speed(args: argparse.Namespace) -> int:
    from .speed import main as speed_main

    return speed_main(args)


COMMANDS = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "check": cmd_check,
            "prepare": cmd_prepare, "speed": cmd_speed, "eval": cmd_eval}


class _CurrentStdout(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is at emit time (pytest's capture, a redirect)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def harness_log():
    """``logging.getLogger("ltkd_bench").info``, shown on stdout as bare lines: what the harness reports.
    Per-run log files (``<out>/logs/<run_id>.log``) are written by the run store beside the records."""
    logger = logging.getLogger("ltkd_bench")
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger.info


def _disk_error(err: BaseException) -> Optional[str]:
    """'No space left on device' (or quota, read-only file system) found in ``err``'s chain, as text; else None."""
    import errno

    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return f"{err.strerror}" + (f" writing {err.filename}" if err.filename else "")
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["run"]  # `python -m benchmark` alone runs the quick suite
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error, already printed on one line (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    from .train import RunInterrupted

    try:
        check_args(args)
        return COMMANDS[args.command](args)
    except (ConfigError, KeyError, FileNotFoundError, ImportError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(f"\ninterrupted: {err} (finished runs are skipped)", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as err:  # a full disk mid-run: one line, not a traceback (writes are atomic)
        disk = _disk_error(err)
        if disk is None:
            raise
        print(f"error: {disk}; free space (or choose another --out) and rerun the same command to resume "
              "(records and checkpoints already written are intact)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished runs are skipped; the current run "
              "restarts from its last epoch checkpoint)", file=sys.stderr)
        return 130
