"""Device choice and backend flags, and the settings a device actually applies to a recipe.

Kept apart from the trainer and the CLI so that :mod:`benchmark.distributed`, the trainer, ``check`` and the
executors share one definition without importing each other.
"""
import dataclasses
from typing import Any, Dict, Optional

import torch

__all__ = ["resolve_device", "configure_backends", "amp_dtype", "memory_format", "effective_recipe"]


def resolve_device(pref: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a clear one-line error."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    return dev


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic kernels when the suite asks for them; TF32 and cuDNN autotuning on CUDA otherwise."""
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def amp_dtype(device: torch.device, amp: bool) -> Optional[torch.dtype]:
    """bf16 autocast on CUDA when the recipe asks for it; full precision elsewhere."""
    return torch.bfloat16 if (device.type == "cuda" and amp) else None


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def effective_recipe(recipe: Any, device: torch.device) -> Dict[str, Any]:
    """The recipe as ``device`` runs it (a CPU run has no bf16 autocast, no fused SGD, no SyncBatchNorm):
    what a run record stores and a run id hashes, so a CPU and a GPU run are never mistaken for one."""
    out = dataclasses.asdict(recipe)
    cuda = device.type == "cuda"
    out["amp"] = bool(recipe.amp and cuda)
    out["sync_bn"] = bool(recipe.sync_bn and cuda)
    return out
