"""Upload validation for the web demo: every refusal is one sentence with the HTTP status to answer with.

The HTTP layer calls :func:`probe_image` and :func:`probe_sodec` before queueing a job: they read headers only,
so an oversized or malformed upload is refused at once instead of after a wait in the queue.  The worker then
decodes the image with :func:`open_image`, with the reader of ``sodec compress``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sodec import container
from sodec.container import ColorMode, Header
from sodec.errors import FormatError, ImageInputError, LimitError, SodecError
from sodec.imageio import decode_image_bytes

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1000 * 1000
DEFAULT_MAX_PIXELS = 1920 * 1080


class UploadError(SodecError):
    """An upload the demo refuses; ``status`` is the HTTP status to answer with, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one upload may be: its size in bytes, and its pixels (declared in its header)."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def describe(self) -> str:
        return f"at most {format_bytes(self.max_upload_bytes)} and {self.max_pixels:,} pixels per upload"


def format_bytes(n: int) -> str:
    """``n`` bytes in decimal units, as the page and the messages show them (``20 MB``, ``50 kB``)."""
    if n >= 1000 * 1000:
        return f"{n / 1e6:g} MB"
    if n >= 1000:
        return f"{n / 1e3:g} kB"
    return f"{n} bytes"


def is_sodec(data: bytes) -> bool:
    return data[:3] == container.MAGIC


def probe_image(data: bytes, limits: Limits, name: str = "upload") -> tuple[int, int, str]:
    """Check cheaply (header only) that ``data`` is an image within the limits: ``(width, height, format)``.

    Raises:
        UploadError: 400 empty, 415 not an image (or a `.sodec` file sent to the compressor), 413 too many pixels.
    """
    if not data:
        raise UploadError(400, f"{name}: the upload is empty")
    if is_sodec(data):
        raise UploadError(415, f"{name} is a .sodec file, not a photo: decode it with 'Decode a .sodec file'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height, fmt = im.width, im.height, im.format or "?"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{name}: refused, the image declares too many pixels") from None
    except (OSError, SyntaxError, ValueError):
        raise UploadError(
            415, f"{name} is not an image this server can read (try a JPEG, PNG, WebP, AVIF, TIFF, BMP or GIF)"
        ) from None
    check_pixels(width, height, limits, name)
    return width, height, fmt


def check_pixels(width: int, height: int, limits: Limits, name: str) -> None:
    """Refuse (413) an image larger than the demo's pixel limit or the `.sodec` format's size limits."""
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"{name} is {width}x{height} = {width * height:,} pixels; this demo takes at most "
            f"{limits.max_pixels:,} pixels (e.g. 1920x1080). Resize it, or start the server with a larger "
            "--max-pixels",
        )
    try:
        container.check_size(width, height)
    except LimitError as e:
        raise UploadError(413, f"{name}: {e}") from None


def probe_sodec(data: bytes, limits: Limits, name: str = "upload") -> Header:
    """Parse and verify a `.sodec` upload (CRC included) and check its declared size against the limits.

    Raises:
        UploadError: 400 empty, 415 not a .sodec file, 400 corrupted/truncated/unknown version, 413 too large.
    """
    if not data:
        raise UploadError(400, f"{name}: the upload is empty")
    if not is_sodec(data):
        raise UploadError(415, f"{name} is not a .sodec file (it does not start with the SDC magic bytes)")
    try:
        header = container.unpack(data).header
    except LimitError as e:
        raise UploadError(413, f"{name}: {e}") from None
    except FormatError as e:
        raise UploadError(400, f"{name}: {e}") from None
    check_pixels(header.width, header.height, limits, name)
    return header


def open_image(data: bytes, limits: Limits, name: str = "upload") -> tuple[np.ndarray, ColorMode, list[str]]:
    """Decode an upload as ``sodec compress`` reads a file, after checking it against the demo's limits.

    One reader for both (:func:`sodec.imageio.decode_image_bytes`): EXIF orientation applied, first frame only,
    the colour policy of docs/format.md.

    Returns the ``(H, W, 3)`` uint8 RGB array, the mode to restore and the policy's warnings (alpha dropped,
    16-bit reduced, animation) as messages for the page.

    Raises:
        UploadError: as :func:`probe_image`; 415 when the image cannot be decoded or its mode is refused.
    """
    probe_image(data, limits, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rgb, mode = decode_image_bytes(data, name)
        except ImageInputError as e:
            raise UploadError(415, str(e)) from None
    return rgb, mode, _messages(caught)


def _messages(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """Each distinct warning once, in order, without the deprecation noise of the libraries underneath."""
    return list(dict.fromkeys(str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)))
