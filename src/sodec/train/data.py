"""Image-folder data: random crops (with flips and downscaling, never upscaling) and validation crops.

Every sample is a pure function of (seed, its position in the training stream), so a resumed run sees the
same batches as an uninterrupted one, and the worker count never changes what is drawn.  Several processes
(``accelerate launch``) read interleaved positions of the same stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from sodec.errors import SodecError

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".ppm", ".bmp", ".tif", ".tiff")


def list_photos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SodecError(f"{folder}: no such data folder (build the nano set with `sodec data data/nano`)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise SodecError(f"{folder}: no photos ({', '.join(PHOTO_SUFFIXES)})")
    return files


def load_photo(path: Path, max_side: int | None = None) -> Tensor:
    """RGB uint8 ``(3,H,W)``, EXIF-oriented, downscaled (LANCZOS) so its longer side ≤ ``max_side``; never upscaled."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if max_side is not None and max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


class RandomCrops(Dataset):
    """Item ``i`` of an endless stream: a ``crop``-square float RGB crop ``(3,crop,crop)`` in [0,1].

    Photos are visited in a fresh seeded order each epoch; each crop's window is ``crop / s`` pixels wide for
    a random ``s`` in [``min_scale``, 1] (limited so the window fits), resized down to ``crop``; photos
    smaller than ``crop`` are left out (they would need upscaling).
    """

    def __init__(
        self,
        folder: str | Path,
        crop: int,
        max_side: int | None = None,
        min_scale: float = 1.0,
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        self.crop, self.min_scale, self.flip, self.seed = crop, min_scale, flip, seed
        photos = [load_photo(p, max_side) for p in list_photos(folder)]
        self.photos = [p for p in photos if min(p.shape[1:]) >= crop]
        if not self.photos:
            raise SodecError(f"{folder}: no photo is at least {crop}x{crop} pixels")

    def __len__(self) -> int:  # the stream is endless; samplers index it directly
        return 2**62

    def _photo_index(self, i: int) -> int:
        n = len(self.photos)
        epoch, k = divmod(i, n)
        order = list(range(n))
        random.Random(f"{self.seed}/epoch/{epoch}").shuffle(order)
        return order[k]

    def __getitem__(self, i: int) -> Tensor:
        rng = random.Random(f"{self.seed}/item/{i}")
        photo = self.photos[self._photo_index(i)]
        h, w = photo.shape[1:]
        largest = min(h, w) / self.crop  # 1/s limit so the window fits
        inv_scale = rng.uniform(1.0, min(1.0 / self.min_scale, largest))
        size = min(round(self.crop * inv_scale), h, w)
        top, left = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        x = photo[:, top : top + size, left : left + size].float().div_(255)
        if size != self.crop:
            x = F.interpolate(x[None], size=(self.crop, self.crop), mode="bilinear", antialias=True)[0].clamp_(0, 1)
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x


class StreamSampler(Sampler[int]):
    """Positions ``start + rank, start + rank + world, …`` of the training stream (endless)."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[int]:
        i = self.start + self.rank
        while True:
            yield i
            i += self.world

    def __len__(self) -> int:
        return 2**62


def validation_crops(folder: str | Path, count: int, size: tuple[int, int], max_side: int | None = None) -> list:
    """Up to ``count`` ``(name, (1,3,h,w))`` centre crops of ``size`` (H, W), shrunk to fit, sides multiples of 64."""
    out = []
    for path in list_photos(folder)[:count]:
        photo = load_photo(path, max_side)
        h = min(size[0], photo.shape[1]) // 64 * 64
        w = min(size[1], photo.shape[2]) // 64 * 64
        if h == 0 or w == 0:
            continue
        top, left = (photo.shape[1] - h) // 2, (photo.shape[2] - w) // 2
        out.append((path.stem, photo[None, :, top : top + h, left : left + w].float() / 255))
    return out
