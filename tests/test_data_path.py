"""The device-resident data path: crop/flip semantics equal torchvision's, determinism per (seed, epoch)."""
import numpy as np
import pytest
import torch
from torchvision import transforms

from benchmark.data import TensorData, crop_flip, epoch_generator


def _coded_images(n=1, c=1, h=8, w=8):
    """Pixel value encodes its position (1-based, so zero padding is distinguishable)."""
    base = torch.arange(1, h * w + 1, dtype=torch.uint8).view(1, 1, h, w)
    return base.repeat(n, c, 1, 1)


def _offset_and_flip(out, h, w, pad):
    """Recover (oy, ox, flipped) of one cropped image whose source pixels encode their position."""
    img = out[0].long()
    for flipped in (False, True):
        cand = img.flip(-1) if flipped else img
        nz = (cand > 0).nonzero()
        if len(nz) == 0:
            continue
        r, col = nz[0].tolist()
        v = cand[r, col].item() - 1
        sy, sx = divmod(v, w)
        oy, ox = sy - r + pad, sx - col + pad
        # verify the whole crop is consistent with (oy, ox, flipped)
        ref = torch.nn.functional.pad(_coded_images(1, 1, h, w)[0, 0], (pad,) * 4)[oy:oy + h, ox:ox + w].long()
        if torch.equal(cand, ref):
            return oy, ox, flipped
    raise AssertionError("crop not explained by any offset/flip")


def test_crop_flip_is_a_valid_padded_crop_and_flip():
    gen = epoch_generator(0, 1)
    imgs = _coded_images(200, 1, 8, 8)
    out = crop_flip(imgs, padding=2, flip=True, gen=gen)
    assert out.shape == imgs.shape and out.dtype == imgs.dtype
    seen = [_offset_and_flip(out[i:i + 1, 0], 8, 8, 2) for i in range(200)]
    oys = {s[0] for s in seen}
    assert oys == set(range(5))  # every offset 0..2p appears
    assert 0.3 < np.mean([s[2] for s in seen]) < 0.7


def test_crop_flip_distribution_matches_torchvision():
    """Offsets uniform on 0..2p and flip p=0.5 for both implementations (chi-square-free tolerance check)."""
    h = w = 8
    pad = 2
    n = 3000
    gen = epoch_generator(1, 1)
    ours = crop_flip(_coded_images(n, 1, h, w), pad, True, gen)
    ours_stats = [_offset_and_flip(ours[i:i + 1, 0], h, w, pad) for i in range(n)]
    tv = transforms.Compose([transforms.RandomCrop(h, padding=pad), transforms.RandomHorizontalFlip()])
    torch.manual_seed(0)
    src = _coded_images(1, 1, h, w)[0]
    tv_stats = [_offset_and_flip(tv(src).unsqueeze(0)[:, 0], h, w, pad) for _ in range(n)]
    for k in range(2):
        ours_hist = np.bincount([s[k] for s in ours_stats], minlength=5) / n
        tv_hist = np.bincount([s[k] for s in tv_stats], minlength=5) / n
        assert np.allclose(ours_hist, 0.2, atol=0.035), ours_hist
        assert np.allclose(tv_hist, 0.2, atol=0.035), tv_hist
    assert abs(np.mean([s[2] for s in ours_stats]) - np.mean([s[2] for s in tv_stats])) < 0.05


def _data(n=100):
    imgs = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    return TensorData(imgs, torch.arange(n) % 10, (0.5,), (0.25,), torch.device("cpu"), padding=2)


def test_train_batches_deterministic_per_seed_and_epoch():
    data = _data()
    a = list(data.train_batches(16, seed=3, epoch=2))
    b = list(data.train_batches(16, seed=3, epoch=2))
    c = list(data.train_batches(16, seed=3, epoch=3))
    assert len(a) == 100 // 16
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))


def test_train_batches_normalised_and_sharded():
    data = _data(96)
    x, y = next(data.train_batches(8, 0, 1, augment="none"))
    assert x.dtype == torch.float32 and x.shape == (8, 1, 8, 8)
    full = torch.cat([y for _, y in data.train_batches(8, 0, 1, augment="none")])
    shards = [torch.cat([y for _, y in data.train_batches(8, 0, 1, "none", rank=r, world_size=2)]) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 48
    assert sorted(torch.cat(shards).tolist()) == sorted(full.tolist())


def test_eval_batches_cover_split_in_order():
    data = _data(50)
    ys = torch.cat([y for _, y in data.eval_batches(16)])
    assert torch.equal(ys, torch.arange(50) % 10)
    parts = [torch.cat([y for _, y in data.eval_batches(16, r, 3)]) for r in range(3)]
    assert torch.equal(torch.cat(parts), ys)
    x, _ = next(data.eval_batches(50))
    expected = (data.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)
