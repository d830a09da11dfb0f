"""Fuzzing the decoder: damaged, truncated, extended and spliced `.sodec` files.

Property: decoding either gives an image of the size the header declares, or raises a SodecError (the
documented one-line errors) — never another exception, never a hang, never a file left behind.
`benchmarks/fuzz.py` runs the same property for 10,000 cases (docs/robustness.md).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sodec import api, container
from sodec.errors import SodecError

_MODEL = make_tiny_model()
_RNG = np.random.default_rng(0)
VALID = [
    api.compress_image(_MODEL, _RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    for h, w in ((48, 64), (17, 33), (70, 130))
]


def _fix_crc(data: bytes) -> bytes:
    """Recompute the trailer so that a mutation of the streams reaches the entropy decoder."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4])) if len(data) >= 4 else data


@st.composite
def damaged_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "insert", "delete", "splice", "overwrite"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=32))
    elif kind == "delete":
        i = draw(st.integers(0, len(data) - 1))
        del data[i : i + draw(st.integers(1, 32))]
    elif kind == "splice":
        other = draw(st.sampled_from(VALID))
        data = data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))) :]
    else:  # overwrite a run of stream bytes
        i = draw(st.integers(26, max(26, len(data) - 5)))
        blob = draw(st.binary(min_size=1, max_size=16))
        data[i : i + len(blob)] = blob
    data = bytes(data)
    # Half the cases get a valid CRC, so that the damage reaches the header parser and the rANS decoder.
    return _fix_crc(data) if draw(st.booleans()) else data


def check_one(data: bytes, folder: Path) -> str:
    """Decode ``data`` to a file in ``folder``; return "ok" or the error class.  Asserts the property."""
    src, out = folder / "in.sodec", folder / "out.png"
    src.write_bytes(data)
    try:
        result = api.decompress_file(src, out, _MODEL, force=True)
    except SodecError as e:
        leftovers = sorted(p.name for p in folder.iterdir())
        assert leftovers == ["in.sodec"], leftovers  # nothing half-written
        assert src.read_bytes() == data  # input untouched
        return type(e).__name__
    header = container.unpack(data).header
    assert (result.width, result.height) == (header.width, header.height)
    out.unlink()
    return "ok"


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged_files())
def test_damaged_files_fail_cleanly(tmp_path, data):
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    for p in folder.iterdir():
        p.unlink()
    check_one(data, folder)


@pytest.mark.parametrize("data", VALID)
def test_the_undamaged_files_decode(tmp_path, data):
    assert check_one(data, tmp_path) == "ok"
