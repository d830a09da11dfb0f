"""Shared fixtures: tiny random-weight models saved as real model folders, small test photos, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sodec.api import example_image
from sodec.models import SodecModel, preset_config

# Cached base hashes (sodec.models.bases.hash_cache_path) go to a folder of this session, not the user's cache.
os.environ.setdefault("SODEC_CACHE", tempfile.mkdtemp(prefix="sodec-cache-"))


def pytest_addoption(parser):
    parser.addoption("--paper", action="store_true", help="run the paper-width CPU smoke (an hour on two cores)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--paper"):
        return
    skip = pytest.mark.skip(reason="paper-width smoke: run with --paper")
    for item in items:
        if "paper" in item.keywords:
            item.add_marker(skip)


def make_tiny_model(seed: int = 0, name: str = "tiny") -> SodecModel:
    torch.manual_seed(seed)
    model = SodecModel(preset_config("tiny", name=name, diffusion=None)).eval()
    model.update()
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A family folder ``tiny/rate-0`` holding a tiny random-weight model."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    make_tiny_model().save_pretrained(folder / "rate-0")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> SodecModel:
    return SodecModel.from_pretrained(tiny_model_dir / "rate-0")


@pytest.fixture(scope="session")
def photo_rgb() -> np.ndarray:
    """A 96x128 crop of the bundled photo, (H, W, 3) uint8."""
    with Image.open(example_image()) as im:
        return np.asarray(im.convert("RGB").crop((300, 100, 428, 196))).copy()


@pytest.fixture
def photo_png(tmp_path, photo_rgb) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(photo_rgb).save(path)
    return path


def run_cli(*args: str, threads: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m sodec.cli ARGS`` in a fresh process."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run(
        [sys.executable, "-m", "sodec.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="session")
def tiny_sodec_dir(tmp_path_factory) -> Path:
    """A tiny full SODEC model family: ``base/`` (random frozen UNet, VAE, ViT) and ``rate-0/``.

    The config names its base as ``../base``, relative to the model folder, like the bundled nano.
    """
    from sodec.models.bases import load_bases, save_bases

    family = tmp_path_factory.mktemp("models") / "tiny-sodec"
    torch.manual_seed(0)
    config = preset_config("tiny", name="tiny-sodec")
    save_bases(load_bases(config.diffusion, random=True), family / "base")
    config.diffusion.base = "../base"
    model = SodecModel(config, folder=family / "rate-0").eval()
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.update()
    model.save_pretrained(family / "rate-0")
    return family


@pytest.fixture
def photo_folder(tmp_path, photo_rgb) -> Path:
    """Four small photos of different sizes and modes, and one corrupt file (folder runs)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo_rgb).save(src / "a.png")
    Image.fromarray(photo_rgb[:40, :50]).save(src / "b.jpg")
    Image.fromarray(photo_rgb[10:74, 20:84]).convert("L").save(src / "c.png")
    Image.fromarray(photo_rgb[:, ::-1]).save(src / "d.webp", lossless=True)
    (src / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a whole PNG")
    return src
