"""Standard-protocol torchvision transforms derived from a ``DatasetInfo``."""
from __future__ import annotations

from typing import Callable

from .base import DatasetInfo

__all__ = ["transform_for"]


def transform_for(info: DatasetInfo, train: bool) -> Callable:
    """Small images: RandomCrop(pad)+flip / identity; large: RandomResizedCrop+flip / Resize(256/224)+CenterCrop."""
    from torchvision import transforms as T

    tail = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if info.image_size >= 128:
        resize = int(round(info.image_size * 256 / 224))
        aug = ([T.RandomResizedCrop(info.image_size), T.RandomHorizontalFlip()] if train
               else [T.Resize(resize), T.CenterCrop(info.image_size)])
    else:
        aug = ([T.RandomCrop(info.image_size, padding=info.crop_padding), T.RandomHorizontalFlip()] if train else [])
    return T.Compose(aug + tail)
