"""Data paths of the harness: device-resident tensors for small datasets, DataLoaders for large ones.

Small datasets (Fashion-MNIST-LT, CIFAR-LT) live on the training device as uint8; shuffling,
random crop with zero padding and horizontal flip are batched tensor ops seeded per
(seed, epoch), so every method sees identical views and a resumed run sees the same ones.
Semantics equal torchvision's ``RandomCrop(size, padding=p)`` + ``RandomHorizontalFlip()``.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["epoch_generator", "crop_flip", "TensorData", "LoaderData", "build_data"]

Batch = Tuple[Tensor, Tensor]
#: ``(x, y)``, or ``(x, y, index)`` with ``with_index=True`` (index: the rows of the training split, int64)
TrainBatch = Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (seed, epoch): the same views for every method and after a resume."""
    gen = torch.Generator(device=device)
    gen.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 12345) % (2 ** 63 - 1))
    return gen


def crop_flip(images: Tensor, padding: int, flip: bool, gen: torch.Generator, crop: bool = True) -> Tensor:
    """Random crop of the input size after zero padding, and random horizontal flip, per image.

    ``images`` is (B, C, H, W) of any dtype; offsets and flips are drawn from ``gen`` on the images'
    device. Equivalent to torchvision's RandomCrop(H, padding) + RandomHorizontalFlip(0.5).
    """
    b, c, h, w = images.shape
    dev = images.device
    if crop and padding > 0:
        hp, wp = h + 2 * padding, w + 2 * padding
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding)).view(b, c, hp * wp)
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=dev)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=dev)
        # flat index of every output pixel in the padded image: one gather for the whole batch
        window = (torch.arange(h, device=dev)[:, None] * wp + torch.arange(w, device=dev)[None, :]).view(1, h * w)
        idx = (oy * wp + ox)[:, None] + window
        images = padded.gather(2, idx[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
    if flip:
        do_flip = torch.rand(b, generator=gen, device=dev) < 0.5
        images = torch.where(do_flip[:, None, None, None], images.flip(3), images)
    return images


class TensorData:
    """A split held on the device as uint8 (N, C, H, W) with int64 targets."""

    def __init__(self, images: Tensor, targets: Tensor, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, padding: int = 4, channels_last: bool = True) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device, non_blocking=True).contiguous()
        self.targets = targets.to(self.device, dtype=torch.long, non_blocking=True)
        c = self.images.shape[1]
        self._scale = (torch.tensor(std, dtype=torch.float32, device=self.device) * 255.0).view(1, c, 1, 1)
        self._shift = (torch.tensor(mean, dtype=torch.float32, device=self.device) * 255.0).view(1, c, 1, 1)
        self.padding = padding
        self.channels_last = channels_last

    def __len__(self) -> int:
        return self.images.shape[0]

    def normalise(self, x: Tensor) -> Tensor:
        x = (x.float() - self._shift) / self._scale
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_batches(self, batch_size: int, seed: int, epoch: int, augment: str = "crop_flip",
                      rank: int = 0, world_size: int = 1, with_index: bool = False) -> Iterator[TrainBatch]:
        """Shuffled, augmented batches for one epoch; the last incomplete batch is dropped.

        With ``world_size > 1`` (``batch_size`` is the per-rank batch) every rank draws the same global
        batch of ``batch_size * world_size`` images and its augmentation, and keeps every
        ``world_size``-th image from ``rank``: the views of a step do not depend on the world size.
        ``with_index`` also yields each image's row in the split (``(x, y, index)``; CRD's memory bank).
        """
        gen = epoch_generator(seed, epoch, self.device)
        perm = torch.randperm(len(self), generator=gen, device=self.device)
        global_batch = batch_size * world_size
        steps = self.steps_per_epoch(batch_size, world_size)
        for i in range(steps):
            idx = perm[i * global_batch:(i + 1) * global_batch]
            x = self.images[idx]
            if augment != "none":
                x = crop_flip(x, self.padding, flip=True, gen=gen, crop=augment == "crop_flip")
            if world_size > 1:
                x, idx = x[rank::world_size], idx[rank::world_size]
            yield (self.normalise(x), self.targets[idx], idx) if with_index else (self.normalise(x), self.targets[idx])

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return (len(self) // world_size) // batch_size

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Un-augmented batches in order (a rank's contiguous shard when distributed)."""
        n = len(self)
        lo, hi = (n * rank) // world_size, (n * (rank + 1)) // world_size
        for i in range(lo, hi, batch_size):
            j = min(i + batch_size, hi)
            yield self.normalise(self.images[i:j]), self.targets[i:j]


class LoaderData:
    """A split read through a DataLoader (large datasets: workers, pinned memory, torchvision transforms)."""

    def __init__(self, dataset, train_transform, eval_transform, device: torch.device, workers: int = 8,
                 channels_last: bool = True) -> None:
        self.dataset = dataset
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.device = torch.device(device)
        self.workers = workers
        self.channels_last = channels_last
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, transform, batch_size: int, sampler, drop_last: bool):
        from torch.utils.data import DataLoader

        self.dataset.transform = transform
        return DataLoader(self.dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _to_device(self, x: Tensor, y: Tensor) -> Batch:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, seed: int, epoch: int, augment: str = "rrc_flip",
                      rank: int = 0, world_size: int = 1, with_index: bool = False) -> Iterator[TrainBatch]:
        """This rank's shard of a seeded permutation, in batches (last incomplete one dropped);
        ``with_index`` also yields each image's row in the split (``(x, y, index)``)."""
        gen = epoch_generator(seed, epoch)
        perm = torch.randperm(len(self), generator=gen)
        usable = (len(perm) // world_size) * world_size
        shard = perm[:usable][rank::world_size]
        transform = self.train_transform if augment != "none" else self.eval_transform
        for i, (x, y) in enumerate(self._loader(transform, batch_size, shard.tolist(), drop_last=True)):
            x, y = self._to_device(x, y)
            if with_index:  # the sampler yields the shard in order: batch i holds its i-th slice
                yield x, y, shard[i * batch_size:(i + 1) * batch_size].to(self.device, non_blocking=True)
            else:
                yield x, y

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return (len(self) // world_size) // batch_size

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        n = len(self)
        lo, hi = (n * rank) // world_size, (n * (rank + 1)) // world_size
        for x, y in self._loader(self.eval_transform, batch_size, list(range(lo, hi)), drop_last=False):
            yield self._to_device(x, y)


def build_data(name: str, split: str, root: Optional[str], imbalance_factor: Optional[float], data_seed: int,
               device: torch.device, channels_last: bool = True, workers: int = 8, on_device: Optional[bool] = None,
               options: Optional[dict] = None):
    """The harness's view of one split: ``TensorData`` when the dataset fits in memory, else ``LoaderData``."""
    import datasets as ds

    kw = {} if imbalance_factor is None or split != "train" else {"imbalance_factor": imbalance_factor}
    dataset = ds.build_dataset(name, root=root, split=split, seed=data_seed, **kw, **(options or {}))
    info = dataset.info
    if on_device is None:
        on_device = info.in_memory
    if on_device:
        images, targets = dataset.as_tensors()
        data = TensorData(images, targets, info.mean, info.std, device, padding=info.crop_padding,
                          channels_last=channels_last)
    else:
        data = LoaderData(dataset, ds.default_transform(name, train=True), ds.default_transform(name, train=False),
                          device, workers=workers, channels_last=channels_last)
    data.class_counts = list(dataset.class_counts)
    data.num_classes = int(dataset.num_classes)
    data.info = info
    return data

