"""`sodec.imageio.atomic_write`: a file under its final name is complete, even after a power cut.

A power cut cannot be simulated here; what can be checked is the order of the calls that make the promise
hold: the temporary file is synced (with all its bytes) before the rename, and its folder after it.
"""

from __future__ import annotations

import errno
import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

from sodec.imageio import atomic_write


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
