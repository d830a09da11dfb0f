"""Streaming data (``data.streaming``): a folder of a few thousand small photos is listed, never decoded at start;
crops are pure functions of (seed, position), so resuming and the worker count change nothing; unreadable and
too-small photos are skipped and counted."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from sodec.train.config import from_dict
from sodec.train.data import RandomCrops, StreamingCrops, StreamSampler
from sodec.train.loop import train

N_PHOTOS = 3000


def photo(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random colour field (small JPEGs, fast to write)."""
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    """3000 photos of 64-80 pixels, a third of them in a sub-folder, plus a hidden file that is left out."""
    root = tmp_path_factory.mktemp("stream") / "big"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N_PHOTOS):
        folder = root / "sub" if i % 3 == 0 else root
        photo(rng, int(rng.integers(64, 81)), int(rng.integers(64, 81))).save(folder / f"{i:05d}.jpg", quality=80)
    (root / ".hidden.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    """40 good photos, 3 smaller than the 64-pixel crop, 2 unreadable (truncated, not an image)."""
    root = tmp_path_factory.mktemp("stream") / "bad"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(40):
        photo(rng, 72, 72).save(root / f"good{i:02d}.png")
    for i in range(3):
        photo(rng, 40, 200).save(root / f"small{i}.png")
    photo(rng, 72, 72).save(root / "truncated.jpg")
    data = (root / "truncated.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "text.png").write_text("not an image")
    return root


def test_listing_decodes_nothing_and_costs_only_the_names(big_folder, monkeypatch):
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("decoded at start"))
    data = StreamingCrops(big_folder, crop=64)
    assert data.n_photos == N_PHOTOS and not opened
    listed = [data.path(j).relative_to(big_folder).as_posix() for j in range(data.n_photos)]
    assert listed == sorted(listed) and listed[0] == "00001.jpg" and "sub/00000.jpg" in listed
    held = data._names.nbytes + data._offsets.nbytes + len(data._status)
    assert held < 40 * N_PHOTOS  # the names, 8 bytes of offset and 1 status byte per photo


def test_items_are_pure_functions_of_seed_and_position(big_folder):
    a, b = StreamingCrops(big_folder, 64, min_scale=0.5, seed=3), StreamingCrops(big_folder, 64, min_scale=0.5, seed=3)
    assert torch.equal(a[12345], b[12345]) and a[7].shape == (3, 64, 64)
    assert not torch.equal(a[7], StreamingCrops(big_folder, 64, min_scale=0.5, seed=4)[7])
    # one epoch visits every photo once: positions 0..n-1 map to a permutation
    order = a._order(0)
    assert sorted(order.tolist()) == list(range(N_PHOTOS)) and not np.array_equal(order, a._order(1))


def loader(data, start: int, workers: int, rank: int = 0, world: int = 1) -> DataLoader:
    return DataLoader(data, batch_size=8, sampler=StreamSampler(start, rank, world), num_workers=workers)


def batches(data, start: int, count: int, workers: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    it = iter(loader(data, start, workers, rank, world))
    return [next(it) for _ in range(count)]


def test_a_resumed_stream_is_the_uninterrupted_one_whatever_the_workers(big_folder):
    data = StreamingCrops(big_folder, 64, min_scale=0.5, seed=0)
    whole = batches(data, 0, 6, workers=0)
    first, rest = batches(data, 0, 3, workers=2), batches(data, 3 * 8, 3, workers=2)  # "resumed" at step 3
    assert all(torch.equal(x, y) for x, y in zip(whole, first + rest))


def test_ranks_read_disjoint_photos_within_an_epoch(big_folder):
    data = StreamingCrops(big_folder, 64)
    order = data._order(0)
    positions = {rank: list(range(rank, N_PHOTOS, 2)) for rank in (0, 1)}  # StreamSampler(rank, world=2)
    photos = {rank: {int(order[i]) for i in pos} for rank, pos in positions.items()}
    assert not photos[0] & photos[1] and len(photos[0] | photos[1]) == N_PHOTOS
    it = iter(StreamSampler(start=0, rank=1, world=2))
    assert [next(it) for _ in range(3)] == positions[1][:3]


def test_unreadable_and_small_photos_are_skipped_and_counted(bad_folder):
    data = StreamingCrops(bad_folder, 64, seed=0)
    assert data.n_photos == 45
    seen = [x for batch in batches(data, 0, 45 // 8 + 1, workers=2) for x in batch]  # a whole epoch, 2 workers
    assert all(x.shape == (3, 64, 64) for x in seen)
    assert data.skipped() == {"unreadable": 2, "too_small": 3}  # marked in the workers, counted here
    again = StreamingCrops(bad_folder, 64, seed=0)  # the skip does not depend on what was tried before
    assert all(torch.equal(again[i], seen[i]) for i in (0, 17, 44))
    assert "truncated.jpg" in again.last_error or "text.png" in again.last_error


def test_streaming_crops_are_the_in_memory_crops_of_the_same_photo(tmp_path, photo_rgb):
    Image.fromarray(photo_rgb).save(tmp_path / "one.png")  # one photo: both datasets visit it every time
    memory = RandomCrops(tmp_path, 64, min_scale=0.5, seed=5)
    stream = StreamingCrops(tmp_path, 64, min_scale=0.5, seed=5)
    assert all(torch.equal(memory[i], stream[i]) for i in range(8))


def test_training_on_a_streaming_folder_resumes_exactly_and_logs_skips(tmp_path, bad_folder):
    def config(run: str, workers: int) -> dict:
        return {
            "stage": "rd", "out": str(tmp_path / run), "steps": 4, "log_every": 1, "checkpoint_every": 2,
            "model": {"preset": "tiny"}, "val": {"every": 0},
            "data": {"train": str(bad_folder), "val": None, "crop": 64, "batch_size": 4, "streaming": True,
                     "workers": workers},
            "loss": {"lmbda": 0.5},
        }  # fmt: skip

    torch.manual_seed(0)
    train(from_dict(config("whole", 0)), False)
    torch.manual_seed(0)
    train(from_dict(config("split", 2)), False, stop_at=2)
    train(from_dict(config("split", 2)), False)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-0000004" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-0000004" / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with (tmp_path / "whole" / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert "skipped" in rows[0] and int(rows[-1]["skipped"]) >= 1  # 16 of 45 photos drawn: some were bad
