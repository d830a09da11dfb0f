"""Reading and writing images, with one explicit policy per colour mode (see docs/format.md).

| input (Pillow mode)            | coded as | decoded to | note                                   |
|--------------------------------|----------|------------|----------------------------------------|
| RGB                            | RGB      | RGB        |                                        |
| L (8-bit gray), 1 (bilevel)    | RGB      | L          | gray replicated into R=G=B             |
| I;16*, I (16/32-bit gray)      | RGB      | L          | reduced to 8 bits (warning)            |
| LA, La                         | RGB      | L          | alpha dropped (warning)                |
| RGBA, RGBa                     | RGB      | RGB        | alpha dropped (warning)                |
| P (palette)                    | RGB      | RGB        | expanded; palette transparency dropped |
| CMYK, YCbCr, LAB, HSV          | RGB      | RGB        | converted by Pillow                    |
| F (float)                      | refused  |            | no defined display range               |

EXIF orientation is applied before coding (the decoded PNG is upright and carries no EXIF).  Only the
first frame of an animated image is coded (warning).  ICC profiles and other metadata are not kept.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sodec.container import MAX_PIXELS, ColorMode, check_size
from sodec.errors import ImageInputError, LimitError

# Pillow's own decompression-bomb guard, set deliberately to the .sodec format's pixel limit (its default,
# 89 M pixels with only a warning, is neither): load_image turns the warning above it into an error.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# zlib level of decoded PNGs: level 1 writes a 768x512 photo in ~50 ms instead of ~180 ms (level 6) for
# files ~16 % larger; decoding speed is what this codec is for (recompress if size matters).
PNG_COMPRESS_LEVEL = 1

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm")

_GRAY_MODES = {"L", "1", "I;16", "I;16B", "I;16L", "I;16N", "I", "LA", "La"}

# The process umask, read once at import (os.umask can only be read by setting it): outputs get the usual
# 0o666 & ~umask, not the 0o600 of the temporary file they are written to.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, ColorMode]:
    """Read an image file and apply the colour-mode policy.

    Returns an ``(H, W, 3)`` uint8 RGB array and the mode the decoder should restore.  The policy's
    warnings (alpha dropped, 16-bit reduced, animation) are :func:`warnings.warn` calls.

    Raises:
        ImageInputError: not an image Pillow can read, an empty file, an unsupported mode, or too many pixels.
    """
    path = Path(path)
    return to_rgb_array(_open_upright(path, str(path)), path.name)


def decode_image_bytes(data: bytes, name: str = "image") -> tuple[np.ndarray, ColorMode]:
    """:func:`load_image` for the bytes of an image file (an upload, say); ``name`` labels messages.

    The same policy, warnings and errors as :func:`load_image`: one function decides how every input image
    is read, whether it comes from a file or from memory.
    """
    return to_rgb_array(_open_upright(io.BytesIO(data), name), name)


def _open_upright(source: Path | io.BytesIO, label: str) -> Image.Image:
    """Open, check the size (before decoding), load the first frame and apply the EXIF orientation.

    ``label`` (the path, or the name of in-memory data) starts every error message; warnings name the file.
    """
    name = source.name if isinstance(source, Path) else label
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                check_size(*im.size)
                if getattr(im, "n_frames", 1) > 1:
                    warnings.warn(f"{name}: animated image, only the first frame is coded", stacklevel=3)
                im.load()
                return ImageOps.exif_transpose(im)
    except LimitError as e:
        raise ImageInputError(f"{label}: refused, {e}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(f"{label}: refused, {e}") from None
    except FileNotFoundError:
        raise ImageInputError(f"{label}: no such file") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow signals unreadable data with these
        if isinstance(source, io.BytesIO):
            empty = source.getbuffer().nbytes == 0
        else:
            empty = source.is_file() and source.stat().st_size == 0
        if empty:
            raise ImageInputError(f"{label}: empty file, not an image") from None
        raise ImageInputError(f"{label}: not a readable image ({e.__class__.__name__}: {e})") from None


def to_rgb_array(im: Image.Image, label: str = "image") -> tuple[np.ndarray, ColorMode]:
    """Apply the colour policy to a Pillow image: ``(H, W, 3)`` uint8 and the mode to restore."""
    mode = im.mode
    if mode == "F":
        raise ImageInputError(f"{label}: 32-bit float images (mode F) are not supported")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in im.info):
        warnings.warn(f"{label}: alpha channel dropped (sodec codes colour only)", stacklevel=2)
    if mode in _GRAY_MODES:
        if mode.startswith("I"):
            warnings.warn(f"{label}: {mode} image reduced to 8-bit gray", stacklevel=2)
            arr = np.asarray(im, dtype=np.int64)
            # 16-bit data in I;16 or I: keep the top 8 of 16 bits.
            gray = np.clip(arr >> 8, 0, 255).astype(np.uint8)
        else:
            gray = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), ColorMode.GRAY
    return np.asarray(im.convert("RGB"), dtype=np.uint8), ColorMode.RGB


def from_rgb_array(rgb: np.ndarray, mode: ColorMode) -> Image.Image:
    """The Pillow image to write for a decoded ``(H, W, 3)`` uint8 array."""
    im = Image.fromarray(rgb, "RGB")
    return im.convert("L") if mode == ColorMode.GRAY else im


def atomic_write(path: str | os.PathLike, data: bytes | None = None, image: Image.Image | None = None) -> None:
    """Write bytes or a PNG to ``path`` through a temporary file in the same folder and a rename.

    The temporary file is flushed to disk (``fsync``) before the rename, and the folder after it, so a
    crash, an error or a power cut leaves either the old file or nothing under ``path``, never a partial
    output.  Where the OS cannot open or sync a folder (Windows), the folder sync is skipped.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
            else:
                image.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself is on disk


# errno values of a folder that cannot be synced: not supported there, not a failed write
_NO_DIR_SYNC = {errno.EINVAL, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR,
                getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL)}


def _fsync_dir(folder: Path) -> None:
    """``fsync`` a folder so that a rename in it survives a power cut; skipped where folders cannot be
    opened (Windows) or synced (some network file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_SYNC:
            raise
    finally:
        os.close(fd)
