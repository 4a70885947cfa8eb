"""``python -m benchmark``: run, list, report, check, prepare (and speed).

Every error a user can cause ends as one line on stderr naming the problem and the fix, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, NoReturn, Optional

from .config import ConfigError, DatasetEntry, SuiteConfig, list_suites, load_suite

DEFAULT_OUT = Path("results")


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    out: List[str] = []
    for v in values:
        out += [p for p in v.replace(",", " ").split() if p]
    return out


def scale_epochs(cfg: SuiteConfig, epochs: int) -> None:
    """Set both recipes to ``epochs``; rescale LR milestones, LR warm-up and method ``warmup`` hyper-parameters
    by the same factor, so a short run keeps the protocol's shape."""
    import methods

    from .config import method_names

    student_factor = epochs / cfg.student_train.epochs
    for recipe in (cfg.teacher_train, cfg.student_train):
        factor = epochs / recipe.epochs
        recipe.milestones = [max(1, round(m * factor)) for m in recipe.milestones]
        recipe.warmup_epochs = round(recipe.warmup_epochs * factor)
        recipe.epochs = epochs
    for name in method_names(cfg):
        defaults = methods.get_method(name).hparams
        if "warmup" in defaults:
            params = cfg.method_params.setdefault(name, {})
            params["warmup"] = type(defaults["warmup"])(round(params.get("warmup", defaults["warmup"]) * student_factor))
            for level in [e.method_params for e in cfg.datasets] + [p.method_params for p in cfg.pairs]:
                if "warmup" in level.get(name, {}):  # a per-dataset / per-pair warm-up scales the same way
                    level[name]["warmup"] = type(defaults["warmup"])(round(level[name]["warmup"] * student_factor))


def build_config(args: argparse.Namespace) -> SuiteConfig:
    """Suite YAML + CLI options + key=value overrides -> validated config.

    Everything that can be checked before training is: the config itself, ``--root``, the device, and
    (unless ``--dry-run`` or ``--executor submitit``, whose data may live on the cluster) every training
    split against the batch sizes.
    """
    for opt in ("methods", "datasets", "seeds"):  # `--seeds 0 1 a.b=c`: the greedy list swallowed an override
        values = getattr(args, opt) or []
        args.overrides = list(args.overrides or []) + [v for v in values if "=" in v]
        setattr(args, opt, [v for v in values if "=" not in v] or None)
    remote = getattr(args, "executor", "local") == "submitit"
    if getattr(args, "root", None) and not remote:
        from .config import check_root

        check_root(args.root, "--root")
    cfg = load_suite(args.suite, args.overrides, validate=False)
    methods_sel = _split_list(args.methods)
    if methods_sel:
        cfg.methods = methods_sel
    ds_sel = _split_list(args.datasets)
    if ds_sel:
        import datasets as ds

        existing = {e.name: e for e in cfg.datasets}
        cfg.datasets = [existing.get(n) or DatasetEntry(
            n, imbalance_factors=[ds.dataset_info(n).default_imbalance_factor] if n in ds.list_datasets() else [None])
            for n in ds_sel]
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
    from .config import check_data, check_device, validate_suite

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
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (epoch lines are still printed)")
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


def make_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m benchmark",
        description="ltkd-bench: knowledge distillation on long-tailed image classification. "
                    "`python -m benchmark run` with no arguments runs the quick suite on Fashion-MNIST-LT.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train teachers and students of a suite, write records and leaderboards",
                       description="Expand the suite's grid, skip runs whose record exists (resume), train the "
                                   "rest and regenerate the leaderboard in --out.")
    _add_run_options(p, "quick")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default: results/)")
    p.add_argument("--executor", choices=["local", "submitit"], default="local",
                   help="local: this process (or torchrun's); submitit: Slurm job arrays")
    p.add_argument("--dry-run", action="store_true", help="print the run specs and exit")
    _add_submitit_options(p)

    p = sub.add_parser("list", help="list suites, methods, datasets and models")
    p.add_argument("what", nargs="?", choices=["all", "suites", "methods", "datasets", "models"], default="all")

    p = sub.add_parser("report", help="regenerate leaderboard.md/.csv and plots from the run records")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default: results/)")

    p = sub.add_parser("check", help="run a suite and compare with its committed reference accuracies",
                       description="Exit 1 when any accuracy falls below the reference minus its tolerance.")
    _add_run_options(p, "ci")
    p.add_argument("--out", type=Path, help="results folder (default: a fresh temporary folder)")
    p.add_argument("--reference", type=Path, help="reference JSON (default: the suite's `reference:`)")
    p.add_argument("--update-reference", action="store_true", help="write the measured numbers as the reference")

    p = sub.add_parser("prepare", help="check a dataset folder and say exactly what is missing")
    p.add_argument("--dataset", required=True, help="fmnist-lt, cifar10-lt, cifar100-lt, imagenet-lt, places-lt")
    p.add_argument("--root", help="the dataset folder")

    p = sub.add_parser("speed", help="images/s of ltkd-bench's KD step vs a usual eager pipeline vs pure compute")
    p.add_argument("--teacher", default="cifar_cnn_small")
    p.add_argument("--student", default="cifar_cnn_tiny")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="timed steps per path")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the ltkd-bench step (paths a and c)")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import expand_grid, run_suite

    cfg = build_config(args)
    specs = expand_grid(cfg)
    if args.dry_run:
        for s in specs:
            print(s.run_id)
        return 0
    if args.executor == "submitit":
        from .executors import submit_suite

        return submit_suite(cfg, args.out, args)
    from . import distributed as D

    D.init_from_env(cfg.device)  # under torchrun: one process group, this rank's device
    try:
        D.check_batch_sizes(cfg)
        device = D.local_device(cfg.device)
        _configure(cfg, device)
        main = D.is_main()
        n_t = sum(s.role == "teacher" for s in specs)
        procs = f" x {D.world_size()} processes (DDP)" if D.world_size() > 1 else ""
        if main:
            print(f"suite '{cfg.name}': {len(specs)} runs ({n_t} teachers, {len(specs) - n_t} students) on "
                  f"{device}{procs}; results in {args.out}/")
        counts = run_suite(cfg, args.out, device, progress=not args.no_progress, log=print if main else D.rank_log)
        if main:
            print(f"done: {counts['ran']} ran, {counts['skipped']} skipped (already recorded), {counts['failed']} "
                  f"failed. Leaderboard: {args.out / 'leaderboard.md'}")
        D.barrier()
        return 1 if counts["failed"] else 0
    finally:
        D.cleanup()


def _configure(cfg: SuiteConfig, device) -> None:
    import torch

    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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

    text = regenerate(args.out)
    if text is None:
        print(f"no run records in {args.out}/runs: run `python -m benchmark run` first", file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from . import distributed as D
    from .check import run_check

    cfg = build_config(args)
    D.init_from_env(cfg.device)  # under torchrun: rank 0 compares, every rank trains
    try:
        D.check_batch_sizes(cfg)
        return run_check(args, cfg)
    finally:
        D.cleanup()


def cmd_prepare(args: argparse.Namespace) -> int:
    import datasets as ds

    report = ds.verify_dataset(args.dataset, args.root)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_speed(args: argparse.Namespace) -> int:
    from .speed import main as speed_main

    return speed_main(args)


COMMANDS = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "check": cmd_check,
            "prepare": cmd_prepare, "speed": cmd_speed}


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
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished runs are skipped; the current run "
              "restarts from its last epoch checkpoint)", file=sys.stderr)
        return 130
