"""`sodec.imageio.atomic_write`: a file under its final name is complete, even after a power cut.

A power cut cannot be simulated here; what can be checked is the order of the calls that make the promise
hold: the temporary file is synced (with all its bytes) before the rename, and its folder after it.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings

import numpy as np
import pytest
from PIL import Image

from sodec.container import ColorMode
from sodec.errors import ImageInputError
from sodec.imageio import atomic_write, decode_image_bytes, load_image


@pytest.fixture
def calls(monkeypatch):
    """Record ``os.fsync`` (what it synced) and ``os.replace`` calls, in order; both still do their work."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
        events.append((f"fsync {kind}", st.st_ino, None if kind == "folder" else st.st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino, None))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_bytes_are_synced_before_the_rename_and_the_folder_after(tmp_path, calls):
    target = tmp_path / "a.sodec"
    atomic_write(target, data=b"0123456789")
    assert target.read_bytes() == b"0123456789"
    ino = target.stat().st_ino
    assert calls == [("fsync file", ino, 10), ("replace", ino, None), ("fsync folder", tmp_path.stat().st_ino, None)]
    assert [p.name for p in tmp_path.iterdir()] == ["a.sodec"]  # no temporary file left


def test_png_is_synced_whole(tmp_path, calls):
    target = tmp_path / "a.png"
    image = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3))
    atomic_write(target, image=image)
    size = target.stat().st_size
    assert [c[0] for c in calls] == ["fsync file", "replace", "fsync folder"] and calls[0][2] == size
    with Image.open(io.BytesIO(target.read_bytes())) as im:
        np.testing.assert_array_equal(np.asarray(im), np.asarray(image))


def test_folder_sync_is_skipped_where_folders_cannot_be_opened(tmp_path, calls, monkeypatch):
    real_open = os.open

    def no_folders(path, flags, *args, **kw):  # as on Windows: opening a folder is refused
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", no_folders)
    atomic_write(tmp_path / "a.sodec", data=b"abc")
    assert (tmp_path / "a.sodec").read_bytes() == b"abc"
    assert [c[0] for c in calls] == ["fsync file", "replace"]


def test_folder_sync_is_skipped_where_the_file_system_refuses_it(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write(tmp_path / "a.sodec", data=b"abc")
    assert (tmp_path / "a.sodec").read_bytes() == b"abc"


def test_a_failed_sync_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.sodec"
    target.write_bytes(b"old")

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(target, data=b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.sodec"]


def _gif(path, frames: int) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=50)


@pytest.mark.parametrize("kind", ["exif-rotated", "palette-transparency", "animated", "gray"])
def test_bytes_are_read_with_the_same_policy_as_files(tmp_path, kind):
    """``decode_image_bytes`` (uploads) and ``load_image`` (files) give the same array, mode and warnings."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "in.png"
    if kind == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        path = tmp_path / "in.jpg"
        Image.fromarray(rgb).save(path, exif=exif)
    elif kind == "palette-transparency":
        Image.fromarray(rgb).convert("P").save(path, transparency=0)
    elif kind == "animated":
        path = tmp_path / "in.gif"
        _gif(path, 2)
    else:
        Image.fromarray(rgb).convert("L").save(path)
    with warnings.catch_warnings(record=True) as from_file:
        warnings.simplefilter("always")
        a, mode_a = load_image(path)
    with warnings.catch_warnings(record=True) as from_bytes:
        warnings.simplefilter("always")
        b, mode_b = decode_image_bytes(path.read_bytes(), path.name)
    assert np.array_equal(a, b) and mode_a == mode_b
    expected = {
        "palette-transparency": ["in.png: alpha channel dropped (sodec codes colour only)"],
        "animated": ["in.gif: animated image, only the first frame is coded"],
    }.get(kind, [])
    assert [str(w.message) for w in from_file] == [str(w.message) for w in from_bytes] == expected
    if kind == "exif-rotated":
        assert a.shape == (30, 20, 3)  # stored 30x20 landscape, shown portrait
    assert mode_a == (ColorMode.GRAY if kind == "gray" else ColorMode.RGB)


@pytest.mark.parametrize(("data", "match"), [(b"", "upload.png: empty file"), (b"GIF89a broken", "not a readable")])
def test_bad_bytes_are_one_image_input_error(data, match):
    with pytest.raises(ImageInputError, match=match):
        decode_image_bytes(data, "upload.png")
