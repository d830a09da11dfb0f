"""Building the nano photo set: convert the curated photos, split them and publish the folder.

:func:`build_dataset` fetches the sources (:mod:`sodec.train.downloads`), writes each curated photo
(:mod:`sodec.train.catalogue`) as an upright RGB PNG (longer side <= ``max_side``, never upscaled) into a staging
folder, splits them (:func:`split_photos`) into ``train/``, ``val/`` (final report only) and ``dev/`` (held-out
monitor), writes ``manifest.json`` (provenance and licences, :mod:`sodec.train.copyright`), and publishes the
result into ``OUT_DIR`` (:func:`_publish`: resumable, so a run killed part-way leaves a folder the next run
completes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageOps

from sodec.errors import SodecError
from sodec.fileutil import sha256_file
from sodec.train.catalogue import DEFAULT_SOURCES, EXCLUDED_NAMES, Photo, Source, parse_sources
from sodec.train.copyright import Dep5Paragraph, dep5_license, parse_dep5
from sodec.train.downloads import Fetched, Progress, default_cache, fetch_package

MANIFEST_FORMAT = "sodec-data/1"
DEFAULT_VAL_FRACTION = 0.15
#: photos in dev/, the held-out monitor for learning curves and design probes (val/ is kept for the final report)
DEFAULT_DEV_COUNT = 4
#: the output splits (folders of OUT_DIR); dev/ is written only when dev_count > 0
SPLITS = ("train", "val", "dev")
DEFAULT_MAX_SIDE = 1536
#: smallest shorter side (pixels, before resizing) of any photo used
MIN_SIDE = 256
#: a validation photo must hold a 768x512 crop (either orientation) after resizing: the codec is evaluated on those
VAL_MIN_SIDE = 512
VAL_MIN_LONG_SIDE = 768
#: zlib level of the written PNGs (6: Pillow's default; smaller files, read as fast as level 1)
PNG_COMPRESS_LEVEL = 6


# --------------------------------------------------------------------------------------------------------------
# Pure functions: sizes, resizing, the split, Debian copyright files
# --------------------------------------------------------------------------------------------------------------


def output_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(w, h)`` scaled so the longer side is at most ``max_side``, keeping the aspect ratio; never larger."""
    w, h = size
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if max(w, h) <= max_side:
        return (w, h)
    scale = max_side / max(w, h)
    if w >= h:
        return (max_side, max(1, round(h * scale)))
    return (max(1, round(w * scale)), max_side)


def resize_never_upscale(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale with LANCZOS so the longer side is <= ``max_side``; an image already small enough is returned as is."""
    size = output_size(img.size, max_side)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS)


def val_eligible(size: tuple[int, int], min_side: int = VAL_MIN_SIDE, min_long_side: int = VAL_MIN_LONG_SIDE) -> bool:
    """Whether a photo of this (output) size can hold a 768x512 evaluation crop."""
    return min(size) >= min_side and max(size) >= min_long_side


def _rank(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest()


def split_photos(
    sizes: Mapping[str, tuple[int, int]],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    dev_count: int = DEFAULT_DEV_COUNT,
    min_side: int = VAL_MIN_SIDE,
    min_long_side: int = VAL_MIN_LONG_SIDE,
) -> dict[str, str]:
    """Assign each photo (name -> output size) to ``"train"``, ``"val"`` or ``"dev"``.

    The photos that pass :func:`val_eligible` are ranked by a seeded SHA-256 of their names.  The first
    ``round(val_fraction * n)`` of them (at least 1 when ``val_fraction > 0`` and there are 2 or more photos; never
    all of them) go to validation; the next ``dev_count`` go to the dev split (the held-out monitor), as many as
    there are, but never so many that train would be left empty.  Validation is chosen first, so it does not
    depend on ``dev_count``.  The result depends only on the names, sizes, seed and the two counts, not on the
    order of ``sizes``.
    """
    if not 0 <= val_fraction < 1:
        raise SodecError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if dev_count < 0:
        raise SodecError(f"--dev-count must be >= 0, got {dev_count}")
    n = len(sizes)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, max(0, n - 1))
    eligible = sorted(
        (k for k, s in sizes.items() if val_eligible(s, min_side, min_long_side)), key=lambda k: (_rank(k, seed), k)
    )
    val = eligible[:n_val]
    n_dev = max(0, min(dev_count, len(eligible) - len(val), n - len(val) - 1))
    dev = eligible[len(val) : len(val) + n_dev]
    split = dict.fromkeys(val, "val") | dict.fromkeys(dev, "dev")
    return {k: split.get(k, "train") for k in sorted(sizes)}


def split_with_train_only(
    sizes: Mapping[str, tuple[int, int]],
    train_only: Collection[str],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    dev_count: int = DEFAULT_DEV_COUNT,
) -> dict[str, str]:
    """:func:`split_photos` over the photos not in ``train_only``; every ``train_only`` photo goes to ``"train"``.

    The held-out splits are therefore exactly those of the same build without the train-only photos: adding a
    train-only source can never move a ``val/`` or ``dev/`` photo, nor change how many there are.
    """
    held = {k: v for k, v in sizes.items() if k not in train_only}
    split = split_photos(held, val_fraction, seed, dev_count) if held else {}
    return {k: split.get(k, "train") for k in sorted(sizes)}


def safe_stem(stem: str) -> str:
    """A file-name-safe stem: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") or "photo"


def oriented(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation and convert to 8-bit RGB (alpha and palette transparency are dropped)."""
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


# --------------------------------------------------------------------------------------------------------------
# Building the data set
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One photo written to the data set (a ``files`` item of manifest.json)."""

    file: str
    split: str
    source: str
    package: str
    version: str | None
    path: str
    license: str | None
    license_file: str | None
    copyright_file: str | None
    credit: str | None  #: the copyright holder or author, as the package states it
    original_size: tuple[int, int]
    output_size: tuple[int, int]
    sha256: str


@dataclass
class ExcludedEntry:
    """A candidate file not used, and why (an ``excluded`` item of manifest.json)."""

    source: str
    package: str
    path: str
    reason: str


@dataclass
class Manifest:
    """What :func:`build_dataset` wrote: parameters, packages, files and exclusions (``manifest.json``)."""

    params: dict
    packages: list[dict]
    files: list[Entry]
    excluded: list[ExcludedEntry]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{source: {"train": n, "val": n, "dev": n, "total": n}}`` in source order, plus a ``"total"`` row."""
        empty = {**dict.fromkeys(SPLITS, 0), "total": 0}
        rows: dict[str, dict[str, int]] = {}
        for p in self.packages:
            rows.setdefault(p["source"], dict(empty))
        for e in self.files:
            for key in (e.source, "total"):
                row = rows.setdefault(key, dict(empty))
                row[e.split] += 1
                row["total"] += 1
        total = rows.pop("total", dict(empty))
        return {**rows, "total": total}

    def to_dict(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "params": self.params,
            "counts": self.counts(),
            "packages": self.packages,
            "files": [asdict(e) for e in self.files],
            "excluded": [asdict(e) for e in self.excluded],
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read a ``manifest.json`` written by :func:`build_dataset`."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        files = [Entry(**{**e, "original_size": tuple(e["original_size"]), "output_size": tuple(e["output_size"])})
                 for e in d["files"]]  # fmt: skip
        return cls(d["params"], d["packages"], files, [ExcludedEntry(**e) for e in d["excluded"]])

    def summary(self) -> str:
        """A small text table: photos per source and split."""
        counts = self.counts()
        width = max(len(k) for k in counts)
        lines = [f"{'source':<{width}}  train    val    dev  total"]
        for k, row in counts.items():
            lines.append(f"{k:<{width}}  {row['train']:5d}  {row['val']:5d}  {row['dev']:5d}  {row['total']:5d}")
        return "\n".join(lines)


STAGING_PREFIX = ".sodec-data-staging-"
#: written into OUT_DIR while a publish is under way: names the staging folder, so a killed publish can be completed
PUBLISH_JOURNAL = ".sodec-data-publishing.json"


def _prepare_out_dir(out_dir: Path) -> bool:
    """Check ``out_dir`` may be (re)written; complete a publish that was killed part-way; remove stale staging
    folders.  Returns whether ``out_dir`` was created."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SodecError(f"{out_dir}: exists and is not a directory")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    _recover_publish(out_dir)
    if not (out_dir / "manifest.json").is_file():
        for sub in SPLITS:
            if (out_dir / sub).exists():
                raise SodecError(
                    f"{out_dir / sub} exists but {out_dir} has no manifest.json (not written by `sodec data`): "
                    "remove it or choose another OUT_DIR"
                )
    for stale in out_dir.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    return created


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the staged train/, val/, dev/ and manifest.json into ``out_dir`` (each step an atomic rename).

    The old manifest goes first and the new one comes last, so a folder with a manifest is always complete.  A
    split that was not staged (dev/ with ``dev_count=0``) is removed from ``out_dir``, so no stale copy of a photo
    that is now in train/ stays behind.  Before the first step a journal (:data:`PUBLISH_JOURNAL`, written
    atomically) records the staging folder and the staged splits; the steps can be redone from any point, so a
    process killed part-way leaves a folder that the next run completes (:func:`_recover_publish`).
    """
    from sodec.imageio import atomic_write

    staged = [sub for sub in SPLITS if (staging / sub).is_dir()]
    record = {"format": MANIFEST_FORMAT, "staging": staging.name, "splits": staged}
    atomic_write(out_dir / PUBLISH_JOURNAL, data=json.dumps(record).encode())
    _finish_publish(staging, out_dir, staged)


def _finish_publish(staging: Path, out_dir: Path, staged: Sequence[str]) -> None:
    """The steps of :func:`_publish`, written so that running them again after any of them completes the swap."""
    if (staging / "manifest.json").is_file():  # the last step has not been done yet
        (out_dir / "manifest.json").unlink(missing_ok=True)
        for sub in SPLITS:
            new, current, old = staging / sub, out_dir / sub, staging / f"old-{sub}"
            if sub in staged and not new.exists():
                continue  # already moved in
            if current.exists():  # the previous set's split
                if old.exists():
                    shutil.rmtree(old)
                os.replace(current, old)
            if sub in staged:
                os.replace(new, current)
        os.replace(staging / "manifest.json", out_dir / "manifest.json")
    elif not (out_dir / "manifest.json").is_file():
        raise SodecError(
            f"{out_dir}: an interrupted `sodec data` left neither the new nor the old manifest.json "
            f"(staging folder {staging.name} is gone): remove {out_dir} and run again"
        )
    (out_dir / PUBLISH_JOURNAL).unlink(missing_ok=True)


def _recover_publish(out_dir: Path) -> None:
    """Complete a publish into ``out_dir`` that was killed part-way (its journal is still there)."""
    journal = out_dir / PUBLISH_JOURNAL
    if not journal.is_file():
        return
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        staging, staged = out_dir / record["staging"], [s for s in record["splits"] if s in SPLITS]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SodecError(f"{journal}: unreadable ({e}): remove {out_dir} and run again") from None
    if not staging.name.startswith(STAGING_PREFIX) or staging.parent != out_dir:
        raise SodecError(f"{journal}: names {record['staging']!r}, not a staging folder of {out_dir}")
    _finish_publish(staging, out_dir, staged)
    shutil.rmtree(staging, ignore_errors=True)


def _folder_photos(root: Path) -> list[Photo]:
    from sodec.imageio import IMAGE_SUFFIXES

    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [Photo(f"folder:{root}", p.name, p.stem) for p in files]


def _licence_for(source: Source, fetched: Fetched, photo: Photo, dep5: list[Dep5Paragraph] | None) -> dict:
    info: dict[str, str | None] = {
        "license": photo.license, "license_file": photo.license_file, "credit": photo.credit,
        "copyright_file": source.copyright_files.get(photo.package) or fetched.license_file,
    }  # fmt: skip
    if dep5 is not None:
        installed, upstream = source.upstream_dirs.get(photo.package, ("", None))
        if upstream is not None and photo.path.startswith(installed):
            para = dep5_license(dep5, upstream + photo.path[len(installed) :], upstream=True)
        else:
            para = dep5_license(dep5, photo.path)
        catch_all = para is not None and "*" in para.files
        # the catch-all "Files: *" paragraph names the project's authors, not a photographer: a licence the
        # catalogue states for the photo itself (from a per-file statement the package ships) wins over it
        if para is not None and not (catch_all and photo.license):
            credit = None if catch_all else para.copyright or None
            info.update(license=para.license, license_file=info["copyright_file"], credit=credit)
    if source.describe is not None:
        info.update({k: v for k, v in source.describe(fetched.root, photo).items() if v})
    return info


def build_dataset(
    out_dir: str | os.PathLike,
    sources: str | Sequence[str] | Sequence[Source] = DEFAULT_SOURCES,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    max_side: int = DEFAULT_MAX_SIDE,
    seed: int = 0,
    cache: str | os.PathLike | None = None,
    progress: Progress | None = None,
    dev_count: int = DEFAULT_DEV_COUNT,
) -> Manifest:
    """Fetch the sources, convert the curated photos and write ``out_dir/{train,val,dev}/*.png`` + ``manifest.json``.

    ``dev/`` (see :func:`split_photos`) is written only when ``dev_count > 0``.  Re-running rebuilds the same
    names and split.  Everything is written into a staging folder inside
    ``out_dir`` first and moved into place at the end, so a failure leaves the previous data set (or nothing);
    a run killed while moving the new set into place leaves a journal, and the next run completes the move
    before it starts.

    Raises:
        SodecError: an unknown source, a package that cannot be fetched, a curated file missing from its
            package, a bad parameter, or an ``out_dir`` that was not written by this function.
    """
    if not 0 <= val_fraction < 1:
        raise SodecError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if max_side < 1:
        raise SodecError(f"--max-side must be >= 1, got {max_side}")
    if dev_count < 0:
        raise SodecError(f"--dev-count must be >= 0, got {dev_count}")
    if sources and all(isinstance(s, Source) for s in sources):
        srcs = list(sources)  # type: ignore[arg-type]
    else:
        srcs = parse_sources(sources)  # type: ignore[arg-type]
    cache = Path(cache).expanduser() if cache is not None else default_cache()
    out_dir = Path(out_dir)

    # 1. fetch everything first: a failing source stops the build before anything is written
    fetched: dict[tuple[str, str], Fetched] = {}
    for src in srcs:
        for pkg in src.packages:
            fetched[(src.name, pkg)] = fetch_package(src, pkg, cache, progress)

    created = _prepare_out_dir(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        manifest = _build_into(staging, srcs, fetched, val_fraction, max_side, seed, dev_count, progress)
        _publish(staging, out_dir)
    except BaseException:
        if (out_dir / PUBLISH_JOURNAL).is_file():
            raise  # killed while publishing: the staging folder holds half the swap; the next run completes it
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build_into(
    staging: Path,
    srcs: list[Source],
    fetched: dict[tuple[str, str], Fetched],
    val_fraction: float,
    max_side: int,
    seed: int,
    dev_count: int,
    progress: Progress | None,
) -> Manifest:
    pool = staging / "all"
    pool.mkdir()
    excluded: list[ExcludedEntry] = []
    pending: dict[str, dict] = {}
    train_only: set[str] = set()
    for src in srcs:
        photos = list(src.photos) if src.kind != "folder" else _folder_photos(src.root)  # type: ignore[arg-type]
        excluded += [ExcludedEntry(src.name, x.package, x.path, x.reason) for x in src.excluded]
        dep5s: dict[str, list[Dep5Paragraph]] = {}
        for pkg, cfile in src.copyright_files.items():
            path = fetched[(src.name, pkg)].root / cfile
            dep5s[pkg] = parse_dep5(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else []
        missing = [p.path for p in photos if not (fetched[(src.name, p.package)].root / p.path).is_file()]
        if missing:
            raise SodecError(f"source {src.name}: curated file(s) missing from the package: {', '.join(missing)}")
        for photo in photos:
            base = photo.path.rsplit("/", 1)[-1]
            if base.lower() in EXCLUDED_NAMES:
                if not any(x.path == photo.path and x.package == photo.package for x in src.excluded):
                    excluded.append(ExcludedEntry(src.name, photo.package, photo.path, EXCLUDED_NAMES[base.lower()]))
                continue
            f = fetched[(src.name, photo.package)]
            name = f"{src.name}-{safe_stem(photo.stem)}"
            if name in pending:
                raise SodecError(f"two photos would both be written as {name}.png ({photo.path})")
            with Image.open(f.root / photo.path) as im:
                img = oriented(im)
            if min(img.size) < MIN_SIDE:
                excluded.append(ExcludedEntry(src.name, photo.package, photo.path, f"smaller than {MIN_SIDE} px"))
                continue
            out = resize_never_upscale(img, max_side)
            out.save(pool / f"{name}.png", format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            if progress:
                progress(f"converted {name}.png")
            pending[name] = {
                "source": src.name, "package": photo.package, "version": f.version, "path": photo.path,
                "original_size": img.size, "output_size": out.size,
                **_licence_for(src, f, photo, dep5s.get(photo.package)),
            }  # fmt: skip
            if not src.holdout:
                train_only.add(name)
    if not pending:
        raise SodecError("no photos selected")

    splits = split_with_train_only(
        {k: v["output_size"] for k, v in pending.items()}, train_only, val_fraction, seed, dev_count
    )
    entries: list[Entry] = []
    for sub in SPLITS:
        if sub != "dev" or dev_count > 0:
            (staging / sub).mkdir()
    for name, split in splits.items():
        dst = staging / split / f"{name}.png"
        os.replace(pool / f"{name}.png", dst)
        p = pending[name]
        entries.append(Entry(file=f"{split}/{name}.png", split=split, sha256=sha256_file(dst), **p))
    pool.rmdir()
    entries.sort(key=lambda e: e.file)

    packages = []
    for (sname, pkg), f in fetched.items():
        packages.append({"source": sname, "kind": f.kind, "package": pkg, "version": f.version,
                         "archive": f.archive, "sha256": f.sha256,
                         "copyright_file": next((s.copyright_files.get(pkg) for s in srcs if s.name == sname), None)
                         or f.license_file})  # fmt: skip
    params = {
        "sources": [s.name if s.kind != "folder" else f"folder:{s.root}" for s in srcs],
        "val_fraction": val_fraction, "dev_count": dev_count, "max_side": max_side, "seed": seed, "min_side": MIN_SIDE,
        "val_min_side": VAL_MIN_SIDE, "val_min_long_side": VAL_MIN_LONG_SIDE,
        "train_only_sources": [s.name for s in srcs if not s.holdout],
    }  # fmt: skip
    manifest = Manifest(params, packages, entries, excluded)
    text = json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n"
    (staging / "manifest.json").write_text(text, encoding="utf-8")
    return manifest
