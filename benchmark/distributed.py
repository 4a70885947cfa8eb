"""One run across N processes: ``torchrun --nproc_per_node=N -m benchmark run ...`` (DDP).

torchrun (or a submitit task with several GPUs, see :mod:`benchmark.executors`) sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` turns them into a
process group (NCCL when the run trains on CUDA, gloo on CPU) and pins the process to GPU ``LOCAL_RANK``.

The protocol does not change with N: the global batch stays the recipe's ``batch_size`` (each rank takes
``batch_size // N`` images of the same seeded permutation), gradients are averaged by DDP, and epoch
statistics and test counts are all-reduced, so a record does not depend on how many processes trained it.
Rank 0 alone prints, writes records, teacher weights, checkpoints and leaderboards; every decision that
reads the results folder (skip a finished run, train a missing teacher) is taken by rank 0 and broadcast,
and ranks meet at a barrier after each write, so they can neither diverge nor deadlock.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

from .device import resolve_device

__all__ = ["env_world_size", "init_from_env", "local_device", "rank", "world_size", "is_main", "barrier",
           "broadcast", "all_gather_object", "cleanup", "rank_log", "check_batch_sizes", "average_bn_stats"]


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _initialised() else 0


def world_size() -> int:
    return dist.get_world_size() if _initialised() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the one process that prints and writes."""
    return rank() == 0


def _wants_cuda(device_pref: str) -> bool:
    return resolve_device(device_pref).type == "cuda"


def init_from_env(device_pref: str = "auto") -> Tuple[int, int, int]:
    """Initialise the default process group from torchrun's environment; ``(rank, world, local_rank)``.

    A no-op returning ``(0, 1, 0)`` when ``WORLD_SIZE`` is absent or 1, or when a group already exists
    (then its rank and size are returned). On CUDA the backend is NCCL and the current device becomes
    ``cuda:LOCAL_RANK``; on CPU (``--device cpu`` or no GPU) it is gloo.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if _initialised():
        return dist.get_rank(), dist.get_world_size(), local_rank
    world = env_world_size()
    if world <= 1:
        return 0, 1, 0
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: start multi-process runs with "
                               "`torchrun --nproc_per_node=N -m benchmark run ...`")
    cuda = _wants_cuda(device_pref)
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                               "visible: use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if cuda:
        dist.init_process_group(backend=backend, device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local_rank


def local_device(device_pref: str = "auto") -> torch.device:
    """The device this process trains on: ``resolve_device`` and, on CUDA, ``cuda:LOCAL_RANK``."""
    dev = resolve_device(device_pref)
    if dev.type != "cuda":
        return dev
    if world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` in place across ranks (a no-op in a single process); returns it."""
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if world_size() <= 1:
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s value of a picklable ``obj`` on every rank (identity in a single process)."""
    if world_size() <= 1:
        return obj
    box = [obj]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    dist.broadcast_object_list(box, src=src, device=device)
    return box[0]


def cleanup() -> None:
    """Destroy the process group, if any (call once, at the end of the command; no barrier, so it is safe
    on an error path where another rank may be stuck)."""
    if _initialised():
        dist.destroy_process_group()


def rank_log(msg: str) -> None:
    """The ``log`` of non-main ranks: silent, except failures, which go to stderr with the rank."""
    if "FAILED" in msg or "Traceback" in msg or "Error" in msg:
        print(f"[rank {rank()}] {msg}", file=sys.stderr, flush=True)


def check_batch_sizes(cfg: Any, world: Optional[int] = None) -> None:
    """Each recipe's global ``batch_size`` must split evenly over the ranks (fail before any training)."""
    from .config import ConfigError

    world = world_size() if world is None else world
    if world <= 1:
        return
    for name in ("teacher_train", "student_train"):
        b = getattr(cfg, name).batch_size
        if b % world:
            raise ConfigError(f"{name}.batch_size {b} is the global batch and must be divisible by the {world} "
                              f"processes (per-process batch = batch_size / processes); change --nproc_per_node "
                              f"or set {name}.batch_size=<a multiple of {world}>")


def average_bn_stats(module: torch.nn.Module) -> None:
    """Average BatchNorm running statistics over the ranks (in place; a no-op in a single process).

    DDP keeps each rank's running mean/var from its own shard of the batch; evaluating or saving rank 0's
    alone would ignore half the data and leave ranks with different models. After this every rank holds
    the same statistics, the mean over the global batch (as a single process would have them).
    """
    world = world_size()
    if world <= 1:
        return
    for name, buf in module.named_buffers():
        if name.endswith(("running_mean", "running_var")) and buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world)
