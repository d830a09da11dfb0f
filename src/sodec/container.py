"""The `.sodec` file format: header, two entropy-coded streams, CRC-32 trailer.

This module knows bytes only (no torch), so ``sodec info`` and format checks stay cheap.
The layout is specified byte by byte in ``docs/format.md``; keep the two in step.

Layout (format version 1, integers little-endian, ``varint`` = unsigned LEB128, minimal length)::

    magic        3 bytes   b"SDC"
    version      1 byte    1
    flags        1 byte    bits 0-1 colour mode (0 RGB, 1 grayscale), bits 2-7 zero
    rate_point   1 byte    index of the model's rate point (0 = lowest rate)
    model_hash   4 bytes   first 4 bytes of the model's SHA-256 content hash
    name_len     1 byte    length n of the model name (1..64)
    model_name   n bytes   ASCII [a-z0-9._-]
    width        varint    original image width  (1..MAX_SIDE)
    height       varint    original image height (1..MAX_SIDE)
    z_len        varint    length of the hyper-latent stream
    latent_check 2 bytes   low 16 bits of CRC-32 over the decoded latent symbols
    z_stream     z_len     rANS stream of the hyper-latent ẑ
    y_stream     rest      rANS stream of the latent ŷ (runs up to the trailer)
    crc32        4 bytes   CRC-32 (zlib) of every preceding byte
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from sodec.errors import FormatError, LimitError

MAGIC = b"SDC"
FORMAT_VERSION = 1
MODEL_HASH_BYTES = 4
MAX_NAME_LEN = 64
# Resource limits checked from the header before anything is allocated.  2**28 pixels is a
# 16384 x 16384 image; every decoder honours at least these, so files within them are portable.
MAX_SIDE = 65535
MAX_PIXELS = 1 << 28

_NAME_RE = re.compile(r"[a-z0-9._-]+")  # always fullmatch: "$" would accept a final "\n"
_FIXED_PREFIX = struct.Struct("<3sBBB4sB")  # magic, version, flags, rate, hash, name_len
_CRC = struct.Struct("<I")
_CHECK = struct.Struct("<H")


class ColorMode(IntEnum):
    """How the decoder restores the image: RGB, or grayscale (coded as RGB, written as 8-bit L)."""

    RGB = 0
    GRAY = 1


@dataclass(frozen=True)
class Header:
    """Every field of a `.sodec` header (see the module docstring for the byte layout)."""

    model_name: str
    model_hash: bytes
    rate_point: int
    width: int
    height: int
    color_mode: ColorMode = ColorMode.RGB
    latent_check: int = 0
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not (1 <= len(self.model_name) <= MAX_NAME_LEN and _NAME_RE.fullmatch(self.model_name)):
            raise ValueError(f"model name must be 1-{MAX_NAME_LEN} chars of [a-z0-9._-], got {self.model_name!r}")
        if len(self.model_hash) != MODEL_HASH_BYTES:
            raise ValueError(f"model_hash must be {MODEL_HASH_BYTES} bytes")
        if not 0 <= self.rate_point <= 255:
            raise ValueError("rate_point must be in 0..255")
        if not 0 <= self.latent_check <= 0xFFFF:
            raise ValueError("latent_check must be a 16-bit value")
        check_size(self.width, self.height)


@dataclass(frozen=True)
class SodecFile:
    """A parsed `.sodec` file: its header and the two entropy-coded streams."""

    header: Header
    z_stream: bytes
    y_stream: bytes


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`LimitError` unless ``width`` x ``height`` is within the format's limits."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise LimitError(f"image size {width}x{height} is outside 1..{MAX_SIDE} per side")
    if width * height > max_pixels:
        raise LimitError(f"image size {width}x{height} exceeds the limit of {max_pixels} pixels")


def bits_per_pixel(n_bytes: int, width: int, height: int) -> float:
    """The only bpp sodec reports: real file bytes x 8 / original pixels."""
    return n_bytes * 8 / (width * height)


def header_dict(header: Header, n_bytes: int) -> dict:
    """A header's fields with the file's size and bpp (rounded to 6 decimals), as ``sodec info`` prints them
    and the web demo shows them: JSON-ready (the hash as hex, the colour mode by name)."""
    return {
        "format_version": header.version,
        "model": header.model_name,
        "model_hash": header.model_hash.hex(),
        "rate_point": header.rate_point,
        "width": header.width,
        "height": header.height,
        "color_mode": header.color_mode.name,
        "bytes": n_bytes,
        "bpp": round(bits_per_pixel(n_bytes, header.width, header.height), 6),
    }


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _get_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a minimal LEB128 of at most 5 bytes from ``data[pos:end]``; return (value, new pos)."""
    value = 0
    for i in range(5):
        if pos >= end:
            raise FormatError("truncated .sodec header")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise FormatError("corrupted .sodec header (non-minimal integer)")
            return value, pos
    raise FormatError("corrupted .sodec header (integer too long)")


def pack(file: SodecFile) -> bytes:
    """Serialise a file; the result's length is exactly what bpp is computed from."""
    h = file.header
    name = h.model_name.encode("ascii")
    body = b"".join(
        (
            _FIXED_PREFIX.pack(MAGIC, h.version, int(h.color_mode), h.rate_point, h.model_hash, len(name)),
            name,
            _put_varint(h.width),
            _put_varint(h.height),
            _put_varint(len(file.z_stream)),
            _CHECK.pack(h.latent_check),
            file.z_stream,
            file.y_stream,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def unpack(data: bytes, max_pixels: int = MAX_PIXELS) -> SodecFile:
    """Parse and verify a whole file.

    Raises:
        FormatError: not a `.sodec` file, unsupported version, truncated or corrupted (CRC mismatch).
        LimitError: the declared image size is beyond the limits (checked before any allocation).
    """
    data = bytes(data)
    if len(data) < 3 or data[:3] != MAGIC:
        raise FormatError("not a .sodec file (bad magic bytes)")
    if len(data) < _FIXED_PREFIX.size:
        raise FormatError("truncated .sodec file")
    _, version, flags, rate, model_hash, name_len = _FIXED_PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        hint = "made by a newer sodec; upgrade sodec" if version > FORMAT_VERSION else "unknown version"
        raise FormatError(
            f"unsupported .sodec format version {version} ({hint}); this sodec reads version {FORMAT_VERSION}"
        )
    end = len(data) - _CRC.size
    if end < _FIXED_PREFIX.size:
        raise FormatError("truncated .sodec file")
    if zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
        raise FormatError("corrupted or truncated .sodec file (checksum mismatch)")
    if flags & ~0x03 or flags & 0x03 not in tuple(ColorMode):
        raise FormatError(f"corrupted .sodec header (flags 0x{flags:02x})")
    pos = _FIXED_PREFIX.size
    if not 1 <= name_len <= MAX_NAME_LEN or pos + name_len > end:
        raise FormatError("corrupted .sodec header (model name length)")
    try:
        name = data[pos : pos + name_len].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("corrupted .sodec header (model name)") from None
    if not _NAME_RE.fullmatch(name):
        raise FormatError("corrupted .sodec header (model name)")
    pos += name_len
    width, pos = _get_varint(data, pos, end)
    height, pos = _get_varint(data, pos, end)
    check_size(width, height, max_pixels)
    z_len, pos = _get_varint(data, pos, end)
    if pos + _CHECK.size + z_len > end:
        raise FormatError("truncated .sodec file (stream lengths exceed the file)")
    (latent_check,) = _CHECK.unpack_from(data, pos)
    pos += _CHECK.size
    header = Header(name, model_hash, rate, width, height, ColorMode(flags & 0x03), latent_check, version)
    return SodecFile(header, data[pos : pos + z_len], data[pos + z_len : end])
