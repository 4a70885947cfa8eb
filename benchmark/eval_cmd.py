"""``python -m benchmark eval``: accuracy of any checkpoint on any dataset split, as the leaderboard's group table.

A checkpoint is a state dict the harness saved (``<out>/checkpoints/teachers/<run_id>.pt``,
``<out>/checkpoints/students/<run_id>.pt``), an epoch checkpoint of an unfinished run, or a timm
training checkpoint (``state_dict`` / ``state_dict_ema`` / ``model`` keys, ``module.`` prefixes).
Batches come from :func:`benchmark.data.build_data` and the numbers from :mod:`benchmark.evaluate`,
the harness's own data path and metrics; shot groups come from the TRAIN counts at the chosen
imbalance factor. Importing this module is cheap (torch is imported when a command runs).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import close_matches
from .record import RunRecord

__all__ = ["add_eval_parser", "cmd_eval", "EvalRequest", "request_from_args", "load_weights", "evaluate_checkpoint",
           "format_report"]

SHOT_RULE = "many > 100, medium 20..100, few < 20 training images"
_CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "student")  # timm's order, then ours


def add_eval_parser(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand on the CLI's subparsers (all its options live here)."""
    p = sub.add_parser(
        "eval", help="evaluate a checkpoint on a dataset split and print the per-group accuracy table",
        description="Evaluate a checkpoint (harness teacher/student weights, an epoch checkpoint, or a timm "
                    "checkpoint) on a split and print overall, many/medium/few and head/middle/tail accuracy "
                    "with group sizes, shot groups taken from the TRAIN counts at the chosen imbalance factor. "
                    "Give --checkpoint, --model and --dataset, or --run-id (and --out) to take them from a run record.")
    what = p.add_argument_group("what to evaluate")
    what.add_argument("--checkpoint", type=Path, metavar="PATH",
                      help="weights file (.pt/.pth state dict or checkpoint, .safetensors); with --run-id: default "
                           "the run's kept weights")
    what.add_argument("--model", metavar="ARCH", help="timm model name the weights belong to (see `list models`)")
    what.add_argument("--dataset", metavar="NAME", help="dataset to evaluate on (see `list datasets`)")
    what.add_argument("--run-id", metavar="ID",
                      help="take model, dataset, imbalance factor, data options and weights from this run's record")
    what.add_argument("--out", type=Path, default=Path("results"),
                      help="results folder holding the --run-id record and weights (default: results/)")
    data = p.add_argument_group("data")
    data.add_argument("--split", default="test",
                      help="split to evaluate: test (default), val (ImageNet-LT, Places-LT) or train (the long-tailed "
                           "training subset)")
    data.add_argument("--imbalance-factor", type=float, metavar="F",
                      help="imbalance factor whose TRAIN class counts define the shot groups (default: the dataset's; "
                           "ImageNet-LT / Places-LT have none)")
    data.add_argument("--root", metavar="DIR", help="dataset folder (default: the dataset's own, see docs/data.md)")
    data.add_argument("--data-seed", type=int, metavar="S",
                      help="seed of the long-tailed training subset (default 0); matters for --split train only")
    data.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                      help="a build option as in a suite's `options:` (repeatable), e.g. n_max=600")
    run = p.add_argument_group("execution and output")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="auto (default): CUDA if present, else CPU")
    run.add_argument("--batch-size", type=int, metavar="N",
                     help="evaluation batch size (default: 512, or the run's eval_batch_size)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="DataLoader workers for ImageNet-LT / Places-LT (default: min(8, CPU cores))")
    run.add_argument("--no-amp", action="store_true",
                     help="full precision on CUDA (default: bf16 autocast on CUDA, as the harness evaluates)")
    run.add_argument("--per-class", action="store_true",
                     help="also print every class's training count, test count and accuracy")
    run.add_argument("--json", type=Path, metavar="FILE",
                     help="also write the numbers (groups, per-class accuracy, settings) to this JSON file")
    return p


@dataclass
class EvalRequest:
    """Everything one evaluation needs, resolved from the command line or a run record."""

    checkpoint: Path
    model: str
    dataset: str
    split: str = "test"
    imbalance_factor: Optional[float] = None
    root: Optional[str] = None
    data_seed: int = 0
    data_options: Dict[str, Any] = field(default_factory=dict)
    class_counts: Optional[List[int]] = None  # TRAIN counts of a run record; None: counted from the train split
    batch_size: int = 512
    workers: Optional[int] = None
    amp: bool = True
    channels_last: bool = True
    label: str = ""  # what the table's row names: the run id or the checkpoint file


def _parse_options(items: Optional[List[str]]) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--dataset-option takes KEY=VALUE (e.g. n_max=600), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _weights_of_run(store: Any, rec: RunRecord) -> Path:
    run_id = rec.run_id
    if rec.is_teacher:
        return store.teacher_weights(run_id)
    fn = getattr(store, "student_weights", None)
    return fn(run_id) if fn is not None else store.checkpoints / "students" / f"{run_id}.pt"


def _from_record(args: argparse.Namespace) -> EvalRequest:
    """The request of ``eval --run-id``: model, dataset, data options and weights from the run's record."""
    from .results import RunStore

    _reject_record_options(args)
    store = RunStore(args.out)
    rec = _load_record(store, args.run_id)
    weights = _kept_weights(args, store, rec)
    roots = {d.get("name"): d.get("root") for d in (rec.config or {}).get("datasets", [])}
    recipe = rec.recipe or {}
    return EvalRequest(checkpoint=Path(weights), model=rec.arch, dataset=rec.dataset, split=args.split,
                       imbalance_factor=rec.imbalance_factor, root=args.root or roots.get(rec.dataset),
                       data_seed=int(rec.data_seed or 0), data_options=dict(rec.data_options or {}),
                       class_counts=[int(c) for c in rec.class_counts] if rec.class_counts else None,
                       batch_size=args.batch_size or int(recipe.get("eval_batch_size", 512)), workers=args.workers,
                       amp=not args.no_amp, channels_last=bool(recipe.get("channels_last", True)),
                       label=args.run_id)


def _reject_record_options(args: argparse.Namespace) -> None:
    """``--run-id`` takes model and data from the record: a ValueError names the options that would be ignored."""
    given = [opt for opt, value in (("--model", args.model), ("--dataset", args.dataset),
                                    ("--imbalance-factor", args.imbalance_factor), ("--data-seed", args.data_seed),
                                    ("--dataset-option", args.dataset_option)) if value is not None]
    if given:
        raise ValueError(f"--run-id takes the model, dataset, imbalance factor and data options from the run's record; "
                         f"drop {', '.join(given)} (or drop --run-id and give --checkpoint, --model, --dataset)")


def _load_record(store: Any, run_id: str) -> RunRecord:
    """The record of ``run_id`` in ``store``; FileNotFoundError names close run ids when there is none."""
    rec = store.load(run_id)
    if rec is None:
        ids = sorted(p.stem for p in store.runs.glob("*.json")) if store.runs.is_dir() else []
        close = close_matches(run_id, ids, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise FileNotFoundError(f"no record of run {run_id!r} in {store.runs}; {hint}run ids are the file names "
                                f"there (pass --out DIR for another results folder)")
    return rec


def _kept_weights(args: argparse.Namespace, store: Any, rec: RunRecord) -> Path:
    """``--checkpoint``, else the weights the run kept; FileNotFoundError when that file is absent."""
    weights = args.checkpoint or _weights_of_run(store, rec)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"run {args.run_id} has no kept weights at {weights} (they were dropped, or the run "
                                f"predates kept student weights, or it did not finish); pass --checkpoint FILE")
    return Path(weights)


def request_from_args(args: argparse.Namespace) -> EvalRequest:
    """The request of an ``eval`` command line: from ``--run-id``'s record, or from the explicit options."""
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.run_id:
        return _from_record(args)
    absent = [opt for opt, value in (("--checkpoint", args.checkpoint), ("--model", args.model),
                                     ("--dataset", args.dataset)) if not value]
    if absent:
        raise ValueError(f"eval needs --checkpoint, --model and --dataset (missing: {', '.join(absent)}), or --run-id "
                         f"ID to take them from a run record")
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} not found; pass the path of a weights file")
    return EvalRequest(checkpoint=args.checkpoint, model=args.model, dataset=args.dataset, split=args.split,
                       imbalance_factor=args.imbalance_factor, root=args.root,
                       data_seed=0 if args.data_seed is None else args.data_seed,
                       data_options=_parse_options(args.dataset_option), batch_size=args.batch_size or 512,
                       workers=args.workers, amp=not args.no_amp, label=args.checkpoint.name)


def _read_state_dict(path: Path) -> Dict[str, Any]:
    """The weights in ``path``: a plain state dict, or the one under a checkpoint's usual keys, prefixes removed."""
    import torch
    from timm.models import clean_state_dict

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):  # timm checkpoints store their args
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, pickled code objects
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"{path}: cannot read weights ({type(err).__name__}: {first[:160]})") from None
    if isinstance(obj, dict):
        key = next((k for k in _CHECKPOINT_KEYS if isinstance(obj.get(k), dict)), None)
        if key is not None:
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: holds no state dict (expected tensors by name, or a checkpoint with one of the keys "
                         f"{', '.join(_CHECKPOINT_KEYS)})")
    return clean_state_dict(obj)


def load_weights(model: Any, path: Path) -> None:
    """Load ``path`` into ``model``; a file that does not fit fails in one line naming the keys and shapes."""
    state = _read_state_dict(Path(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} (first: {', '.join(v[:3])})" for what, v in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatches (file vs model)", shapes)) if v]
        raise ValueError(f"{path} does not fit {type(model).__name__}: {'; '.join(parts)}; pass the --model it was "
                         f"trained as and the --dataset it was trained on (number of classes and input channels)")
    model.load_state_dict(state)


def evaluate_checkpoint(req: EvalRequest, device: Any) -> Dict[str, Any]:
    """Per-class accuracy of the checkpoint on the split and its summary, as in a run record's ``final``."""
    import datasets as ds
    from datasets.base import check_split, resolve_imbalance_factor

    from .data import build_data
    from .device import amp_dtype, memory_format
    from .evaluate import per_class_counts, summarize
    from .models import create_model

    info = ds.dataset_info(req.dataset)
    check_split(info, req.split)
    imbalance_factor = resolve_imbalance_factor(info, req.imbalance_factor)
    counts = req.class_counts
    if counts is None:
        counts = ds.build_dataset(req.dataset, root=req.root, split="train", seed=req.data_seed,
                                  imbalance_factor=imbalance_factor, **req.data_options).class_counts
    if len(counts) != info.num_classes:
        raise ValueError(f"{req.dataset}: {len(counts)} training class counts for {info.num_classes} classes")
    model = create_model(req.model, num_classes=info.num_classes, in_chans=info.in_chans)
    load_weights(model, req.checkpoint)
    model.to(device=device, memory_format=memory_format(req.channels_last)).eval()
    workers = req.workers if req.workers is not None else min(8, os.cpu_count() or 1)
    data = build_data(req.dataset, req.split, req.root, imbalance_factor, req.data_seed, device,
                      channels_last=req.channels_last, workers=workers, options=req.data_options)
    t0 = time.perf_counter()
    correct, total = per_class_counts(model, data.eval_batches(req.batch_size), info.num_classes,
                                      amp_dtype(device, req.amp))
    correct, total = correct.cpu().tolist(), total.cpu().tolist()
    per_class = [100.0 * c / t if t else 0.0 for c, t in zip(correct, total)]
    return {"per_class_acc": per_class, "per_class_test_count": total, "class_counts": list(counts),
            **summarize(per_class, counts, per_class_total=total), "imbalance_factor": imbalance_factor,
            "images": int(sum(total)), "seconds": time.perf_counter() - t0}


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}"


def format_report(req: EvalRequest, result: Dict[str, Any], device: Any, per_class: bool = False) -> str:
    """The header lines and the leaderboard-style table (optionally followed by per-class rows) as text."""
    from tabulate import tabulate

    from .evaluate import METRICS, SHOT_GROUPS  # here, not above: importing this module stays cheap

    sizes = result["group_sizes"]
    imb = result["imbalance_factor"]
    counts = result["class_counts"]
    lines = [f"{req.model} ({req.checkpoint}) on {req.dataset} {req.split}: {result['images']:,} images, {device}, "
             f"{result['seconds']:.1f} s",
             "Accuracy in %. Shot groups from the TRAIN counts" + (f" at imbalance factor {imb:g}" if imb else "")
             + f" ({sum(counts):,} images, {max(counts)} down to {min(counts)} per class): {SHOT_RULE}; head / middle "
               "/ tail rank the classes by training count: the first C // 3 head, the last C // 3 tail, the rest "
               "middle.", ""]
    headers = ["model", "checkpoint", *[f"{m} ({sizes[m]} cls)" if m in sizes else m for m in METRICS]]
    row = [req.model, req.label or req.checkpoint.name, *[_pct(result[m]) for m in METRICS]]
    lines.append(tabulate([row], headers=headers, tablefmt="github", disable_numparse=True))
    empty = [g for g in SHOT_GROUPS if sizes[g] == 0]
    if empty:
        lines += ["", f"No class falls in {' / '.join(empty)} at these training counts (strict 100/20 rule): "
                      "those columns are empty; use head / middle / tail."]
    if req.split == "train":
        lines += ["", "Note: accuracy on the training split itself (not a held-out estimate)."]
    if per_class:
        from datasets.longtail import frequency_rank

        order = frequency_rank(counts)  # the order the head / middle / tail groups are cut from
        table = [[c, counts[c], result["per_class_test_count"][c], _pct(result["per_class_acc"][c])] for c in order]
        lines += ["", tabulate(table, headers=["class", "train images", f"{req.split} images", "accuracy"],
                               tablefmt="github", disable_numparse=True)]
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    """Resolve the request, evaluate, print the table (and write ``--json``); 0 on success."""
    from .device import resolve_device

    req = request_from_args(args)
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        raise ValueError(str(err)) from None
    result = evaluate_checkpoint(req, device)
    print(format_report(req, result, device, per_class=args.per_class))
    if args.json:
        doc = {"model": req.model, "checkpoint": str(req.checkpoint), "run_id": args.run_id, "dataset": req.dataset,
               "split": req.split, "root": req.root, "data_seed": req.data_seed, "data_options": req.data_options,
               "device": str(device), **result}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0
