"""Image-folder data: random crops (with flips and downscaling, never upscaling; optional rotations and colour
jitter, :mod:`sodec.train.augment`) and validation crops.

Every sample is a pure function of (seed, its position in the training stream), so a resumed run sees the
same batches as an uninterrupted one, and the worker count never changes what is drawn.  Several processes
(``accelerate launch``) read interleaved positions of the same stream.  :class:`RandomCrops` decodes the
whole folder into memory at start (small sets: nano); :class:`StreamingCrops` only lists it and decodes each
sample when it is drawn (DIV2K + Flickr2K + LSDIR: ``data.streaming``).
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from sodec.errors import SodecError
from sodec.train.augment import Augment, augmented_crop

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
        augment: Augment | None = None,
    ) -> None:
        self.crop, self.min_scale, self.flip, self.seed, self.augment = crop, min_scale, flip, seed, augment
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
        return augmented_crop(
            lambda top, left, side: photo[:, top : top + side, left : left + side],
            h, w, self.crop, rng, self.min_scale, self.flip, self.augment,
        )  # fmt: skip


def list_photo_names(folder: str | Path) -> list[str]:
    """Photos under ``folder`` and its sub-folders (symbolic links followed once), as sorted relative paths;
    hidden files and folders are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SodecError(f"{folder}: no such data folder")
    names: list[str] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, folder)
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in PHOTO_SUFFIXES:
                names.append(name if rel == "." else os.path.join(rel, name))
    if not names:
        raise SodecError(f"{folder}: no photos ({', '.join(PHOTO_SUFFIXES)})")
    names.sort()
    return names


class StreamingCrops(Dataset):
    """:class:`RandomCrops` for folders of any size: item ``i`` of an endless stream, a float RGB crop
    ``(3,crop,crop)`` in [0,1], decoded when drawn (in the DataLoader worker that draws it).

    At start the folder (with its sub-folders) is only listed; the names are kept in one byte buffer (≈ their
    length: 100 k files ≈ 3 MB), so memory does not grow with the photos' size and forked workers share it
    without copying.  Photos are visited in a seeded permutation per epoch; each crop is drawn exactly as
    :class:`RandomCrops` draws it from the same photo (window ``crop / s``, s ∈ [``min_scale``, 1], resized
    down; flips), after the photo is downscaled to ``max_side`` if it is larger.

    Sharding: processes read interleaved positions of the one stream (:class:`StreamSampler`), so within an
    epoch each photo goes to one rank, and each rank decodes only its own 1/world of the photos.

    A photo that cannot be decoded or is smaller than ``crop`` (checked from its header, before decoding) is
    skipped: the item takes the next photo of the epoch's order, and the photo is marked in a table shared with
    the workers so that it is never tried again (:meth:`skipped` counts them).  An item therefore depends only
    on (seed, position) and the folder's content — not on the workers, the processes or where a run resumed.
    """

    UNREADABLE, TOO_SMALL = 1, 2

    def __init__(
        self,
        folder: str | Path,
        crop: int,
        max_side: int | None = None,
        min_scale: float = 1.0,
        flip: bool = True,
        seed: int = 0,
        augment: Augment | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.crop, self.max_side, self.min_scale, self.flip, self.seed = crop, max_side, min_scale, flip, seed
        self.augment = augment
        encoded = [os.fsencode(n) for n in list_photo_names(self.folder)]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._names = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._status = multiprocessing.RawArray("b", len(encoded))  # 0 usable or untried, else why skipped
        self._epoch, self._permutation = -1, np.zeros(0, dtype=np.int64)
        self.last_error = ""

    def __len__(self) -> int:  # the stream is endless; samplers index it directly
        return 2**62

    @property
    def n_photos(self) -> int:
        return len(self._offsets) - 1

    def path(self, j: int) -> Path:
        """The ``j``-th photo (sorted order)."""
        return self.folder / os.fsdecode(self._names[self._offsets[j] : self._offsets[j + 1]].tobytes())

    def skipped(self) -> dict[str, int]:
        """Photos skipped so far by this process and its workers: ``unreadable`` and ``too_small``."""
        status = np.frombuffer(self._status, dtype=np.int8)
        unreadable, too_small = int((status == self.UNREADABLE).sum()), int((status == self.TOO_SMALL).sum())
        return {"unreadable": unreadable, "too_small": too_small}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([0x50DEC, self.seed & (2**64 - 1), epoch])
            self._epoch, self._permutation = epoch, rng.permutation(self.n_photos)
        return self._permutation

    def _open(self, j: int) -> Image.Image | None:
        """Photo ``j`` as RGB (EXIF-oriented, downscaled to ``max_side``), or None (marked) if it is unusable."""
        path = self.path(j)
        try:
            with Image.open(path) as im:
                s = 1.0
                if self.max_side is not None and max(im.size) > self.max_side:
                    s = self.max_side / max(im.size)
                if min(max(1, round(side * s)) for side in im.size) < self.crop:
                    self._status[j] = self.TOO_SMALL
                    return None
                im = ImageOps.exif_transpose(im).convert("RGB")
                if s != 1.0:
                    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
                return im
        except Exception as e:  # any decoder failure (truncated, corrupt, not an image, too many pixels)
            self._status[j] = self.UNREADABLE
            self.last_error = f"{path}: {type(e).__name__}: {e}"
            return None

    def __getitem__(self, i: int) -> Tensor:
        n = self.n_photos
        epoch, k = divmod(i, n)
        order = self._order(epoch)
        rng = random.Random(f"{self.seed}/item/{i}")
        for attempt in range(n):  # the next photo of this epoch's order if one is unusable
            j = int(order[(k + attempt) % n])
            if self._status[j]:
                continue
            im = self._open(j)
            if im is not None:
                return self._crop(im, rng)
        raise SodecError(
            f"{self.folder}: no usable photo (all {n} unreadable or smaller than {self.crop}x{self.crop})"
            + (f"; last error: {self.last_error}" if self.last_error else "")
        )

    def _crop(self, im: Image.Image, rng: random.Random) -> Tensor:
        """The window :class:`RandomCrops` would draw from this photo with ``rng`` (same draws, same order)."""

        def read(top: int, left: int, side: int) -> Tensor:
            window = np.asarray(im.crop((left, top, left + side, top + side)))
            return torch.from_numpy(window.copy()).permute(2, 0, 1)

        w, h = im.size
        return augmented_crop(read, h, w, self.crop, rng, self.min_scale, self.flip, self.augment)


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
