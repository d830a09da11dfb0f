"""Golden vectors: files made by a fixed model must keep decoding to the recorded images, forever.

If this fails after a change, the change broke existing `.sodec` files: bump the format version and keep
a decoder for version 1 (docs/format.md, "Compatibility policy") rather than regenerating these files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sodec import api, container
from sodec.models import SodecModel

GOLDEN = Path(__file__).parent / "data" / "golden"
# sha256 of the decoded pixels (raw uint8, row-major), recorded when the vectors were made.
EXPECTED = {
    "rgb": ("RGB", "2ec583a2feeda222bbdfbf6dd26d83c700e489b05fbe2f28e78db14d3741ff70"),
    "gray": ("L", "231b8c921bdbd088ed86dc5449deafe347dff904044370a4ae6cdda5e6064325"),
}


@pytest.fixture(scope="module")
def golden_model() -> SodecModel:
    return api.load_model(GOLDEN / "golden-tiny")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_file_decodes_to_the_recorded_pixels(golden_model, name):
    data = (GOLDEN / f"{name}.sodec").read_bytes()
    header = container.unpack(data).header
    assert (header.model_name, header.width, header.height) == ("golden-tiny", 56, 40)
    image, _ = api.decompress_bytes(data, golden_model)  # the latent check proves the latents are exact
    mode, digest = EXPECTED[name]
    pixels = np.asarray(image)
    assert image.mode == mode
    if hashlib.sha256(pixels.tobytes()).hexdigest() != digest:
        # Only the float synthesis network may differ, and only on another CPU: by rounding, never more.
        with Image.open(GOLDEN / f"{name}.decoded.png") as ref:
            diff = np.abs(pixels.astype(int) - np.asarray(ref).astype(int))
        assert diff.max() <= 1, f"decoded pixels changed by up to {diff.max()} levels"


def test_golden_model_hash_is_stable(golden_model):
    data = (GOLDEN / "rgb.sodec").read_bytes()
    assert container.unpack(data).header.model_hash == bytes.fromhex(golden_model.content_hash()[:8])
