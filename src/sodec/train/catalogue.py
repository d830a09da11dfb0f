"""The curated photo catalogue of ``sodec data``: which photographs of which packages make up the nano set.

Each :class:`Source` names a group of packages (Debian packages, pinned Python wheels, or a local folder) and the
photographs in them, each inspected by eye (see docs/data.md for the rules); the files deliberately left out are
listed with the reason.  :data:`SOURCES` maps a source name to a factory, :func:`parse_sources` reads the
``--sources`` option.  Nothing here downloads or writes anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from sodec.errors import SodecError
from sodec.train.catalogue_more import MORE_SOURCES
from sodec.train.catalogue_types import EXCLUDED_NAMES, Excluded, Kind, Photo, Source  # noqa: F401 (re-exported)

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
    **MORE_SOURCES,  # train-only (holdout=False): lxqt, kphotoalbum, palapeli, krank, forensics, gcompris, ...
}
DEFAULT_SOURCES = tuple(SOURCES)
#: the sources whose photos may be drawn into val/ and dev/ (the nano set of v1/v2; docs/data.md)
HOLDOUT_SOURCES = ("lomiri", "plasma", "opencv", "skimage", "sklearn", "matplotlib")


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
