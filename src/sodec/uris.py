"""Locations: local paths and URIs (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``), one interface.

A *location* is a :class:`~pathlib.Path` for a local file or folder, or a ``str`` URI opened through
:mod:`pyarrow.fs` (installed with the ``ray`` extra).  :func:`location` turns what a user typed into one, and
refuses a scheme pyarrow cannot open with one :class:`~sodec.errors.SodecError`.  Every other function here
takes either kind, so the rules of :mod:`sodec.batch` (pairing, the existing-output policy, clean-up) are
written once for both.

Stores are reached the way their own tools reach them: credentials and endpoints come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, instance roles, ``GOOGLE_APPLICATION_CREDENTIALS``, …), read
by pyarrow on each machine.  What "atomic" means on each store is said at :func:`upload`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sodec.errors import SodecError

Location = Path | str  # Path: local; str: a URI

# pyarrow.fs.FileSystem.from_uri's schemes that name real stores (not "mock")
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
OBJECT_STORES = ("s3", "gcs", "abfs")  # pyarrow type names of stores whose writes need no rename
TEMP_SUFFIX = ".tmp"  # a file being written is ".NAME.RANDOM.tmp" next to NAME (sodec.imageio.atomic_write too)
_CHUNK = 1 << 20


def is_uri(loc: str | os.PathLike) -> bool:
    """A ``scheme://`` location (anything else is a local path)."""
    return "://" in str(loc)


def location(loc: str | os.PathLike) -> Location:
    """A :class:`Path`, or a checked URI string without a trailing ``/`` (raises :class:`SodecError` for a
    scheme pyarrow cannot open, and for query parameters, which would not survive joining file names)."""
    if not is_uri(loc):
        return Path(loc)
    uri = str(loc)
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise SodecError(f"{uri}: unsupported scheme {scheme!r} (sodec reads and writes "
                         f"{', '.join(s + '://' for s in SCHEMES)} through pyarrow.fs)")
    if "?" in uri:
        raise SodecError(f"{uri}: URI options are not supported; configure the store through its environment "
                         "variables (AWS_ENDPOINT_URL, AWS_REGION, ...)")
    return uri.rstrip("/") if uri.rstrip("/").split("://", 1)[1] else uri


_FILESYSTEMS: dict[str, Any] = {}


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path in it)`` of a URI.  A file system is opened once per scheme and host in
    each process: opening an S3 or GCS one resolves credentials (and maybe the bucket's region), a cost per
    process, not per file."""
    scheme, rest = uri.split("://", 1)
    host = rest.split("/", 1)[0]
    key = f"{scheme}://{host}"
    if key not in _FILESYSTEMS:
        try:
            from pyarrow import fs as pafs
        except ImportError:
            raise SodecError(f"{uri}: URIs need pyarrow, which the ray extra installs: "
                             "pip install -e '.[ray]' (from a sodec checkout)") from None
        try:
            _FILESYSTEMS[key] = pafs.FileSystem.from_uri(uri)[0]
        except ValueError as e:  # pyarrow.lib.ArrowInvalid: a URI it cannot parse or a scheme it lacks
            raise SodecError(f"{uri}: cannot open: {e}") from None
    path = rest  # object stores: "bucket/key"; file:///abs: "/abs"
    if scheme in ("hdfs", "viewfs"):  # hdfs://host:port/path: the path on that host
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return _FILESYSTEMS[key], path.rstrip("/") or "/"


# ------------------------------------------------------------------------------------------------ names


def name(loc: Location) -> str:
    """The last component: ``a.png`` of ``s3://bucket/in/a.png`` or of ``in/a.png``."""
    return loc.name if isinstance(loc, Path) else PurePosixPath(loc.split("://", 1)[1]).name


def join(folder: Location, child: str) -> Location:
    return folder / child if isinstance(folder, Path) else f"{folder.rstrip('/')}/{child}"


def parent(loc: Location) -> Location:
    return loc.parent if isinstance(loc, Path) else loc.rsplit("/", 1)[0]


def with_suffix(loc: Location, suffix: str) -> Location:
    """``loc`` with its last suffix replaced (``a.png`` → ``a.sodec``)."""
    if isinstance(loc, Path):
        return loc.with_suffix(suffix)
    return join(parent(loc), PurePosixPath(name(loc)).stem + suffix)


# ------------------------------------------------------------------------------------------ file system


def kind(loc: Location) -> str | None:
    """``"file"``, ``"folder"`` (a directory, or an object-store prefix holding objects) or ``None``."""
    if isinstance(loc, Path):
        return "folder" if loc.is_dir() else "file" if loc.is_file() else None
    from pyarrow import fs as pafs

    fs, path = filesystem(loc)
    t = fs.get_file_info(path).type
    return "folder" if t == pafs.FileType.Directory else "file" if t == pafs.FileType.File else None


def list_files(folder: Location) -> list[str]:
    """Names of the files directly in a folder (hidden ones included), sorted; ``[]`` if it is gone."""
    if isinstance(folder, Path):
        try:
            return sorted(e.name for e in os.scandir(folder) if e.is_file())
        except FileNotFoundError:
            return []
    from pyarrow import fs as pafs

    fs, path = filesystem(folder)
    entries = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(e.base_name for e in entries if e.type == pafs.FileType.File)


def make_folder(loc: Location) -> None:
    """Create a folder and its parents (on an object store: a prefix; the bucket must exist)."""
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)
    else:
        fs, path = filesystem(loc)
        fs.create_dir(path, recursive=True)


def open_input(loc: Location) -> IO[bytes]:
    """A seekable binary file object for reading (close it; ``with`` works)."""
    if isinstance(loc, Path):
        return open(loc, "rb")
    fs, path = filesystem(loc)
    return fs.open_input_file(path)


def read_bytes(loc: Location) -> bytes:
    with open_input(loc) as f:
        return f.read()


def download(loc: Location, local: Path) -> None:
    """Copy a location's bytes into the local file ``local``."""
    with open_input(loc) as f, open(local, "wb") as out:
        shutil.copyfileobj(f, out, _CHUNK)


def upload(local: Path, uri: str) -> None:
    """Put a finished local file at ``uri`` so that no reader ever sees part of it under that name.

    * Object stores (S3, GCS, Azure): an object becomes visible under its key only when its upload
      completes (one PUT, or a multipart upload's final "complete" request), so the file is written under
      its final key.  A writer killed mid-upload leaves no object there, and an object already there keeps
      its old bytes until the new upload completes (tests/test_remote_storage.py).  S3 keeps the parts of an
      unfinished multipart upload, invisible and billed, until a bucket lifecycle rule aborts them.
      pyarrow's streams cannot be aborted: closing one, even while an error unwinds it, completes the
      upload with what it holds.  So the file's bytes go to the stream in one ``write``, and an error can
      never complete a shortened object.
    * File systems with a rename (HDFS, ``file://``): written as ``.NAME.RANDOM.tmp`` in the same folder,
      then moved onto ``NAME``.  A writer killed before the move leaves that file, which the end of the run
      removes (:func:`sodec.batch.remove_stale_temps`).
    """
    fs, path = filesystem(uri)
    if fs.type_name in OBJECT_STORES:
        data = local.read_bytes()  # read first: a failing read must not happen with the stream open
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    folder, _, leaf = path.rpartition("/")
    tmp = f"{folder}/.{leaf}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    try:
        with open(local, "rb") as f, fs.open_output_stream(tmp) as out:
            shutil.copyfileobj(f, out, _CHUNK)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def delete(loc: Location) -> bool:
    """Delete a file; ``False`` if it could not be (gone already, no permission)."""
    try:
        if isinstance(loc, Path):
            loc.unlink()
        else:
            fs, path = filesystem(loc)
            fs.delete_file(path)
        return True
    except OSError:
        return False
