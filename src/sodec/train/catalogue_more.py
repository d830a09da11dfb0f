"""The train-only photo sources added for nano v3 (issue 22, hypothesis 1: more real photographs).

Every source here has ``holdout=False``: its photos all go to ``train/``, so today's ``val/`` and ``dev/`` (drawn
from the six original sources of :mod:`sodec.train.catalogue`) stay exactly as they are.  Each file was looked at
(contact sheets, 100 % crops), each licence read from the package; the judgement per source is in
docs/decisions.md and the table in docs/data.md.  Nothing here downloads or writes anything.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from sodec.train.catalogue_types import Excluded, Photo, Source
from sodec.train.qtrcc import MEMBER_SEP

# --------------------------------------------------------------------------------------------------------------
# lxqt: LXQt's wallpapers (the folder's own licence file credits the photographer)
# --------------------------------------------------------------------------------------------------------------

_LXQT = "lxqt-themes"
_LXWP = "usr/share/lxqt/wallpapers/"
_LXQT_LICENSE = _LXWP + "License"  # "Licensed under CC-BY-SA 3.0 ... stefonarch: beam, flowers, butterfly, ..."
#: file -> credit as the License file (or the file name) gives it
LXQT_PHOTOS = {
    "Butterfly-Kenneth-Wimer.jpg": "Kenneth Wimer", "Valendas.png": "LXQt Project Team",
    "after-the-rain.jpg": "stefonarch", "appleflower.png": "stefonarch", "beam.png": "stefonarch",
    "butterfly.png": "stefonarch", "cloud.png": "LXQt Project Team", "drop.png": "stefonarch",
    "flowers.png": "stefonarch", "fog.jpg": "stefonarch", "this-is-not-windows.jpg": "stefonarch",
}  # fmt: skip
LXQT_RENDERS = (
    "kde-plasma.png", "lxqt-origami-green.png", "origami-bright-logo.png", "origami-dark.png", "origami-light.png",
    "plasma-logo-bright.png", "plasma-logo-dark.png", "plasma_arch.png", "simple_blue_widescreen.png",
    "triangles-logo.png", "triangles.png", "waves-logo.png", "waves-purple-logo.jpg",
)  # fmt: skip


def _lxqt() -> Source:
    photos = tuple(
        Photo(_LXQT, _LXWP + f, Path(f).stem, "CC-BY-SA-3.0", _LXQT_LICENSE, credit)
        for f, credit in LXQT_PHOTOS.items()
    )
    excluded = tuple(Excluded(_LXQT, _LXWP + f, "render, logo or gradient, not a photo") for f in LXQT_RENDERS)
    return Source(
        "lxqt", "deb", {_LXQT: None}, photos, excluded, {_LXQT: f"usr/share/doc/{_LXQT}/copyright"},
        extra_files=(_LXQT_LICENSE,), holdout=False,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# kphotoalbum: the demo album (personal photos of the upstream author's circle, 800x600)
# --------------------------------------------------------------------------------------------------------------

_KPA = "kphotoalbum"
_KPD = "usr/share/kphotoalbum/demo/"
KPHOTOALBUM_PHOTOS = (
    "anne_helene", "bar55", "bar55_2", "blackie", "cold_water", "donna", "donna_2", "grand_canyon_2",
    "grand_canyon_3", "jesper", "jesper_2", "new_wave_1", "new_wave_2", "pool", "pool_2", "qt-logo", "skagen",
    "skagen_2", "snow", "spiff", "spiff_2", "sunset",
)  # fmt: skip


def _kphotoalbum() -> Source:
    lic = "GPL-2+ (the package's licence, usr/share/doc/kphotoalbum/copyright; no per-file statement)"
    photos = tuple(
        Photo(_KPA, f"{_KPD}{s}.jpg", s, lic, f"usr/share/doc/{_KPA}/copyright", "Jesper K. Pedersen et al.")
        for s in KPHOTOALBUM_PHOTOS
    )
    excluded = tuple(
        Excluded(_KPA, f"{_KPD}{s}.jpg", "stored sideways (no EXIF orientation to undo it)")
        for s in ("grand_canyon_1", "wayne")
    ) + (Excluded(_KPA, "usr/share/doc/HTML/", "screenshots of the program"),)
    return Source("kphotoalbum", "deb", {_KPA: None}, photos, excluded, {_KPA: f"usr/share/doc/{_KPA}/copyright"},
                  holdout=False)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# palapeli: the jigsaw puzzles' photos (licence and author in each puzzle's .desktop file)
# --------------------------------------------------------------------------------------------------------------

_PAL = "palapeli-data"
_PALC = "usr/share/palapeli/collection/"
PALAPELI_PHOTOS = (
    "castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee", "panther-chameleon-female",
)


def _palapeli_describe(root: Path, photo: Photo) -> dict[str, str | None]:
    """Licence, author and source page from the puzzle's ``.desktop`` file (``X-KDE-PluginInfo-*``)."""
    desktop = photo.path.rsplit(".", 1)[0] + ".desktop"
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string((root / desktop).read_text(encoding="utf-8"))
        entry = parser["Desktop Entry"]
    except (OSError, KeyError, configparser.Error):
        return {}
    author, site = entry.get("X-KDE-PluginInfo-Author"), entry.get("X-KDE-PluginInfo-Website")
    credit = f"{author} ({site})" if author and site else author or site
    return {"license": entry.get("X-KDE-PluginInfo-License"), "license_file": desktop, "credit": credit}


def _palapeli() -> Source:
    photos = tuple(Photo(_PAL, f"{_PALC}{s}.jpg", s) for s in PALAPELI_PHOTOS)
    excluded = (Excluded(_PAL, "usr/share/palapeli/backgrounds/", "512x512 tiling textures, not photos"),)
    return Source(
        "palapeli", "deb", {_PAL: None}, photos, excluded, {_PAL: f"usr/share/doc/{_PAL}/copyright"},
        extra_files=tuple(f"{_PALC}{s}.desktop" for s in PALAPELI_PHOTOS), describe=_palapeli_describe,
        holdout=False,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# krank: the game's level backgrounds, underwater photographs (2000x1500), public domain
# --------------------------------------------------------------------------------------------------------------

_KRANK = "krank"
_KRB = "usr/share/games/krank/levels/unera-backgrounds/"
KRANK_PHOTOS = (
    ("bonus-01",) + tuple(f"level-{i:02d}" for i in range(1, 31))
    + ("menu", "menu-credits", "menu-levels", "menu-play", "menu-scores", "menu-scores2",
       "menu-scores3", "menu-screen", "menu-sounds")
)  # fmt: skip


def _krank() -> Source:
    lic = "public domain (usr/share/doc/krank/copyright: new images by Slava Anishenko, public domain)"
    photos = tuple(
        Photo(_KRANK, f"{_KRB}{s}.jpg", s, lic, f"usr/share/doc/{_KRANK}/copyright", "Slava Anishenko")
        for s in KRANK_PHOTOS
    )
    excluded = (Excluded(_KRANK, f"{_KRB}menu-scores1.jpg", "the same image as bonus-01.jpg"),)
    return Source("krank", "deb", {_KRANK: None}, photos, excluded, {_KRANK: f"usr/share/doc/{_KRANK}/copyright"},
                  holdout=False)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# forensics: the phone photos of forensics-samples (CC-BY-SA-4.0 by DEP-5 ``original-files/*``)
# --------------------------------------------------------------------------------------------------------------

_FOR = "forensics-samples-files"
_FORD = "usr/share/forensics-samples/original-files/"
FORENSICS_PHOTOS = (
    "pic1/IMG-20191006-WA0002.jpg", "pic1/IMG_1054.JPG", "pic1/IMG_20200827_231612.jpg",
    "pic2/IMG_20191224_234846.jpg", "pic2/IMG_20200124_231153.jpg", "pic2/IMG_20200608_111614.jpg",
)  # fmt: skip


def _forensics() -> Source:
    photos = tuple(Photo(_FOR, _FORD + f, Path(f).stem) for f in FORENSICS_PHOTOS)
    excluded = (Excluded(_FOR, _FORD + "pic1/debian.png", "logo"), Excluded(_FOR, _FORD + "pic2/d-debian.jpg", "logo"))
    return Source("forensics", "deb", {_FOR: None}, photos, excluded, {_FOR: f"usr/share/doc/{_FOR}/copyright"},
                  holdout=False, upstream_dirs={_FOR: ("usr/share/forensics-samples/", "")})  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# gcompris: photographs inside GCompris' Qt resource archives (lossy WebP; credits in each activity's README)
# --------------------------------------------------------------------------------------------------------------

_GC = "gcompris-qt-data"
_GCR = "usr/share/gcompris-qt/rcc/"
_MONUMENTS = {
    "usa": "canyondeChelly georgeWashingtonBirthplace lincolnMemorial navajo mountRushmore statueofLiberty "
    "castillodeSanMarcos fortSumter castleClinton",
    "egypt": "meidumPyramid greatPyramidOfGiza bentPyramid",
    "india": "greatStupa gatewayofIndia konarkSunTemple charminar hawaMahal rangGhar mysorePalace goldenTemple "
    "ajantaCave qutubMinar",
    "france": "chateaudeChambord pontduGard palaisdesPapes reimsCathedral eiffelTower citedeCarcassonne "
    "arlesAmphitheater chateaudeChenonceau montStMichel rocamadour",
    "germany": "berlinCathedral schwerinPalace trierImperialBaths brandenburgGate neuschwansteinCastle "
    "wormsCathedral",
    "wonders": "machuPicchu tajMahal chichenItza colosseum petra greatWallofChina christTheRedeemer",
}
#: activity -> (folder of the photos and of their README inside the activity's resource/, photo files)
GCOMPRIS_PHOTOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "clickgame": ("", tuple(f"sea{i}.webp" for i in range(1, 7))),
    "details": ("image/", tuple(f"{n}_background.webp" for n in (
        "EgeskovSlotSpejling", "GizahPyramids", "EilanDonanCastle", "TajMahal", "Neuschwanstein"))),
    "erase": ("", tuple(f"{n}.webp" for n in (
        "gorilla northern_harrier pika caterpillar giraffe calf penguin nubian_ibex camels macaque swans dolphin "
        "long_nosed_monkey kingfisher heron chamaeleon flying_fox gibbon rhinoceros crab goat toucan gosling horse "
        "alpaca cheetah butterfly bee meerkats kitten red_panda squirrel spoonbills").split())),
    "explore_farm_animals": ("animals/", tuple(f"{n}.webp" for n in "dog cow chicken horse sheep pig".split())),
    "explore_monuments": ("", tuple(f"{c}/{n}.webp" for c, ns in _MONUMENTS.items() for n in ns.split())),
    "explore_world_animals": ("animals/", tuple(f"{n}.webp" for n in (
        "crocodile giraffe koala bison dragon jaguar hedgehog kangaroo narwhal moose panda chameleon lemur "
        "polar_bear").split())),
    "explore_world_music": ("music/", tuple(f"{n}.webp" for n in "america australia japan orchestra africa mexico"
                                             .split())),
}  # fmt: skip


def _gc_member(activity: str, rel: str) -> str:
    return f"{_GCR}{activity}{MEMBER_SEP}gcompris/src/activities/{activity}/resource/{rel}"


def parse_gcompris_readme(text: str) -> dict[str, dict[str, str]]:
    """``{file: {"copyright", "license", "source", "comment"}}`` from a GCompris resource README.

    Blocks are separated by blank lines; ``Key: value`` lines set a field, and every other line (after an optional
    ``Files:``) names a file of the block, relative to the README's folder.
    """
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        files: list[str] = []
        for line in block.splitlines():
            line = line.strip()
            m = re.match(r"^(Copyright|License|Source|Comments?|Files)\s*:\s*(.*)$", line, re.IGNORECASE)
            if m:
                key, value = m.group(1).lower().rstrip("s"), m.group(2).strip()
                if key == "file":
                    files += value.split()
                else:
                    fields[key] = value
            elif line:
                files.append(line)
        for f in files:
            out[f] = fields
    return out


def _gcompris_describe(root: Path, photo: Photo) -> dict[str, str | None]:
    """Licence and credit for a GCompris photo from its activity's README (inside the same archive)."""
    archive, _, inner = photo.path.partition(MEMBER_SEP)
    activity = inner.split("/")[3]
    folder, _files = GCOMPRIS_PHOTOS[activity]
    readme = f"{archive}{MEMBER_SEP}gcompris/src/activities/{activity}/resource/{folder}README"
    try:
        entries = parse_gcompris_readme((root / readme).read_text(encoding="utf-8"))
    except OSError:
        return {}
    rel = inner.split(f"/resource/{folder}", 1)[1]
    e = entries.get(rel) or entries.get(rel.rsplit("/", 1)[-1])
    if not e:
        return {}
    credit = e.get("copyright", "")
    if e.get("source"):
        credit += f" ({e['source']})"
    if e.get("comment"):
        credit += f"; {e['comment']}"
    return {"license": e.get("license"), "license_file": readme, "credit": credit or None}


def _gcompris() -> Source:
    photos = tuple(
        Photo(_GC, _gc_member(act, rel), f"{act}_{Path(rel).stem}")
        for act, (folder, files) in GCOMPRIS_PHOTOS.items()
        for rel in (folder + f for f in files)
    )
    readmes = tuple(_gc_member(act, folder + "README") for act, (folder, _) in GCOMPRIS_PHOTOS.items())
    excluded = (
        Excluded(_GC, _GCR + "details.rcc", "paintings (Van Gogh, Bruegel, ...), and the detail crops of each photo"),
        Excluded(_GC, _GCR + "babyshapes.rcc", "paintings"),
        Excluded(_GC, _GCR + "lang.rcc", "illustrations (and 600x600 word pictures)"),
        Excluded(_GC, _gc_member("explore_monuments", "germany/aulaPalatina.webp"),
                 "not credited in the activity's README: licence unclear"),
    )
    return Source(
        "gcompris", "deb", {_GC: None}, photos, excluded, {_GC: f"usr/share/doc/{_GC}/copyright"},
        extra_files=readmes, describe=_gcompris_describe, holdout=False,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# tuxtype: the typing game's landscape backgrounds (1280x1024)
# --------------------------------------------------------------------------------------------------------------

_TT = "tuxtype-data"


def _tuxtype() -> Source:
    lic = ("GPL-2 (the package); the copyright file's README_IMAGES.TXT says the 'kcas' backgrounds are NOAA / "
           "US Fish and Wildlife Service photographs (public domain)")  # fmt: skip
    photos = tuple(
        Photo(_TT, f"usr/share/tuxtype/images/kcas{i}.jpg", f"kcas{i}", lic, f"usr/share/doc/{_TT}/copyright",
              "NOAA / US FWS (via gimp-savvy.com photo archive)")
        for i in range(12)
    )  # fmt: skip
    excluded = (Excluded(_TT, "usr/share/tuxtype/images/backgrounds/", "astronomical images (mostly black)"),)
    return Source("tuxtype", "deb", {_TT: None}, photos, excluded, {_TT: f"usr/share/doc/{_TT}/copyright"},
                  holdout=False)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# demos: single photos from demos, themes and examples of several packages
# --------------------------------------------------------------------------------------------------------------

_PKG_ONLY = "(the package's licence only, no per-file statement)"
#: package -> [(path, stem, licence stated here or None: from the DEP-5 copyright file)]
DEMO_PHOTOS: dict[str, list[tuple[str, str, str | None]]] = {
    "sddm-theme-maldives": [("usr/share/sddm/themes/maldives/background.jpg", "maldives", None)],
    "puzzle-jigsaw": [
        ("usr/share/puzzle-jigsaw/samples/cat-animal-cat-portrait-mackerel.jpg", "cat", None),
        ("usr/share/puzzle-jigsaw/samples/pexels-photo-302304.jpeg", "tiger", None),
    ],
    "libjs-jquery-backstretch": [
        (f"usr/share/doc/libjs-jquery-backstretch/examples/{f}.jpg", f.split("_")[0], None)
        for f in ("coffee", "dome", "pot-holder", "sample1_1920", "sample2_1920")
    ],
    "pinpoint": [(f"usr/share/doc/pinpoint/examples/{f}.jpg", f, None) for f in ("bg", "bowls", "linus")],
    "digikam-data": [("usr/share/digikam/about/images/body-background.jpg", "digikam_about", f"GPL-2+ {_PKG_ONLY}")],
    "budgie-core": [("usr/share/backgrounds/budgie/default.jpg", "budgie_default", None)],
    "python-kivy-examples": [
        ("usr/share/kivy-examples/demo/pictures/images/Wall.jpg", "kivy_wall", None),
        ("usr/share/kivy-examples/demo/pictures/images/faust_github.jpg", "kivy_faust", None),
        ("usr/share/kivy-examples/widgets/cityCC0.png", "kivy_city", "CC0 (as the file name says; package: Expat)"),
    ],
    "libelementary-data": [
        (f"usr/share/elementary/images/{f}.jpg", f"elm_{f}", None)
        for f in ("insanely_huge_test_image", "mystrale_2", "plant_01", "rock_01", "rock_02", "sky_01", "sky_02",
                  "sky_03", "sky_04")
    ],
}  # fmt: skip


def _demos() -> Source:
    photos = tuple(
        Photo(pkg, path, stem, lic, f"usr/share/doc/{pkg}/copyright" if lic else None)
        for pkg, items in DEMO_PHOTOS.items()
        for path, stem, lic in items
    )
    excluded = (
        Excluded("libjs-jquery-backstretch", "usr/share/doc/libjs-jquery-backstretch/examples/",
                 "the _960 and _1280 copies of sample1/sample2 (same photo, smaller)"),
        Excluded("libelementary-data", "usr/share/elementary/images/twofish.jpg", "a photo of a printed picture"),
        Excluded("python-kivy-examples", "usr/share/kivy-examples/demo/pictures/images/",
                 "Bubbles.jpg, Ill1.jpg: digital art"),
    )  # fmt: skip
    return Source(
        "demos", "deb", dict.fromkeys(DEMO_PHOTOS), photos, excluded,
        {pkg: f"usr/share/doc/{pkg}/copyright" for pkg in DEMO_PHOTOS}, holdout=False,
        upstream_dirs={"sddm-theme-maldives": ("usr/share/sddm/", "data/"),
                       "puzzle-jigsaw": ("usr/share/puzzle-jigsaw/", "")},
    )  # fmt: skip


#: the train-only sources, in the order they are listed by default
MORE_SOURCES = {
    "lxqt": _lxqt, "kphotoalbum": _kphotoalbum, "palapeli": _palapeli, "krank": _krank, "forensics": _forensics,
    "gcompris": _gcompris, "tuxtype": _tuxtype, "demos": _demos,
}  # fmt: skip
