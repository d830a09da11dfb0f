"""The .sodec container: exact layout, round trip, and every way a file can be bad."""

from __future__ import annotations

import struct
import zlib

import pytest

from sodec import container
from sodec.container import ColorMode, Header, SodecFile
from sodec.errors import FormatError, LimitError


def _file(**kw) -> SodecFile:
    fields = dict(
        model_name="nano",
        model_hash=bytes.fromhex("0a1b2c3d"),
        rate_point=2,
        width=768,
        height=512,
        color_mode=ColorMode.GRAY,
        latent_check=0xBEEF,
    )
    fields.update(kw)
    return SodecFile(Header(**fields), b"zz-stream", b"y-stream-bytes")


def test_layout_is_byte_exact():
    data = container.pack(_file())
    body = (
        b"SDC"
        + bytes([1, 1, 2])
        + bytes.fromhex("0a1b2c3d")
        + bytes([4])
        + b"nano"
        + bytes([0x80, 0x06])
        + bytes([0x80, 0x04])  # 768, 512 as LEB128
        + bytes([9])
        + struct.pack("<H", 0xBEEF)
        + b"zz-stream"
        + b"y-stream-bytes"
    )
    assert data == body + struct.pack("<I", zlib.crc32(body))
    # Overhead with a 4-letter model name and a 768x512 image: 26 bytes.
    assert len(data) - len(b"zz-stream") - len(b"y-stream-bytes") == 26


@pytest.mark.parametrize("w,h", [(1, 1), (127, 128), (16384, 3), (65535, 1)])
def test_round_trip(w, h):
    f = _file(width=w, height=h, color_mode=ColorMode.RGB, rate_point=0, latent_check=0)
    assert container.unpack(container.pack(f)) == f


def test_empty_streams_round_trip():
    f = SodecFile(_file().header, b"", b"")
    assert container.unpack(container.pack(f)) == f


@pytest.mark.parametrize("data", [b"", b"S", b"SDC", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"SDX" + b"\0" * 30])
def test_not_a_sodec_file(data):
    with pytest.raises(FormatError):
        container.unpack(data)


def test_every_truncation_is_detected():
    data = container.pack(_file())
    for n in range(len(data)):
        with pytest.raises(FormatError):
            container.unpack(data[:n])


def test_every_single_bit_flip_is_detected():
    data = container.pack(_file())
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                container.unpack(bytes(bad))


def test_appended_bytes_are_detected():
    with pytest.raises(FormatError):
        container.unpack(container.pack(_file()) + b"\0")


def _with_valid_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_unknown_version_names_it():
    data = bytearray(container.pack(_file()))
    data[3] = 7
    with pytest.raises(FormatError, match="version 7.*newer"):
        container.unpack(_with_valid_crc(bytes(data[:-4])))


def _raw_header(width: int, height: int, z_len: int) -> bytes:
    """A version-1 header for model "nano" written field by field (no validation on the way)."""
    sizes = container._put_varint(width) + container._put_varint(height) + container._put_varint(z_len)
    return b"SDC" + bytes([1, 0, 0]) + b"\0\0\0\0" + bytes([4]) + b"nano" + sizes + b"\0\0"


def test_huge_declared_size_is_refused_before_allocation():
    # Well-formed headers (valid CRC) claiming a 1,000,000 x 1,000,000 and a 60,000 x 60,000 image.
    with pytest.raises(LimitError, match="1000000x1000000"):
        container.unpack(_with_valid_crc(_raw_header(1_000_000, 1_000_000, 0)))
    with pytest.raises(LimitError, match="pixels"):
        container.unpack(_with_valid_crc(_raw_header(60000, 60000, 0)))


def test_stream_length_beyond_file_is_refused():
    with pytest.raises(FormatError, match="stream lengths"):
        container.unpack(_with_valid_crc(_raw_header(8, 8, 1000) + b"abc"))


@pytest.mark.parametrize(
    "patch",
    [
        lambda b: b[:4] + bytes([0x80]) + b[5:],  # reserved flag bit
        lambda b: b[:4] + bytes([0x03]) + b[5:],  # colour mode 3 does not exist
        lambda b: b[:10] + bytes([0]) + b[11:],  # empty model name
        lambda b: b[:11] + b"NANO" + b[15:],  # upper case is not a valid model name
        lambda b: b[:11] + b"nan\n" + b[15:],  # nor is a final newline (a "$" regex would let it through)
    ],
)
def test_corrupted_fields_with_valid_crc(patch):
    data = container.pack(_file())
    with pytest.raises(FormatError):
        container.unpack(_with_valid_crc(patch(data[:-4])))


def test_non_minimal_varint_is_refused():
    assert container._put_varint(0) == b"\0" and container._put_varint(300) == b"\xac\x02"
    with pytest.raises(FormatError, match="non-minimal"):
        container._get_varint(b"\x81\x00", 0, 2)


def test_header_validation():
    with pytest.raises(ValueError):
        _file(model_name="Bad Name")
    for name in ("nano\n", "\nnano", "na\nno"):  # docs/format.md: [a-z0-9._-] only, so never packed
        with pytest.raises(ValueError, match="model name"):
            _file(model_name=name)
    with pytest.raises(ValueError):
        _file(rate_point=256)
    with pytest.raises(LimitError):
        _file(width=0)


def test_bpp_counts_the_whole_file_over_the_original_pixels():
    """The bpp ``sodec info`` reports counts every byte of the file (header and CRC included) over the image's
    own pixels, not the padded latent grid's (100x37 is coded as 128x64)."""
    f = _file(width=100, height=37)
    data = container.pack(f)
    assert len(data) == 26 - 2 + 14 + 9 == 47  # the overhead of test_layout_is_byte_exact, 1-byte sizes, streams
    info = container.header_dict(container.unpack(data).header, len(data))
    assert info["bytes"] == 47 and info["bpp"] == 0.101622  # 376 bits / 3700 pixels
    assert container.bits_per_pixel(47, 100, 37) != container.bits_per_pixel(47, 128, 64)
    assert container.bits_per_pixel(1000, 100, 80) == 1.0 and container.bits_per_pixel(1, 1, 1) == 8.0
