"""`sodec data`: the train-only sources of nano v3 (val/ and dev/ never move), Qt resource archives, per-file
licence statements (no network)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from sodec.errors import SodecError
from sodec.train import catalogue_more, photoset, qtrcc
from sodec.train import sources as S

#: today's held-out photos of the default build (docs/data.md); they must never move when sources are added
VAL_NAMES = {
    "lomiri-Picture_0B_by_freespace", "lomiri-aitzgorri_by_Aitzol_Berasategi", "lomiri-friends_by_Aitzol_Berasategi",
    "lomiri-greentock_by_Peter_Nerlich", "opencv-ela_original", "plasma-ColdRipple", "plasma-FallenLeaf",
    "skimage-hubble_deep_field",
}  # fmt: skip
DEV_NAMES = {"lomiri-Bridge_by_Sander_Klootwijk", "plasma-EveningGlow", "plasma-Grey", "plasma-Kite"}


@pytest.fixture(autouse=True)
def _fast_png(monkeypatch):
    monkeypatch.setattr(photoset, "PNG_COMPRESS_LEVEL", 1)


def _png_bytes(size, seed) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def test_only_the_original_six_sources_can_hold_out_photos():
    from sodec.train.catalogue import HOLDOUT_SOURCES

    holdout = [n for n in S.DEFAULT_SOURCES if S.SOURCES[n]().holdout]
    assert holdout == list(HOLDOUT_SOURCES) == ["lomiri", "plasma", "opencv", "skimage", "sklearn", "matplotlib"]
    more = [S.SOURCES[n]() for n in catalogue_more.MORE_SOURCES]
    assert more and not any(s.holdout for s in more)
    names = [f"{s.name}-{S.safe_stem(p.stem)}" for s in more for p in s.photos]
    assert len(names) == len(set(names)) == 236  # unique output names; the v3 set adds 236 photos
    assert not any(p.path.rsplit("/", 1)[-1].lower() in S.EXCLUDED_NAMES for s in more for p in s.photos)
    assert not any("mate-backgrounds" in pkg for s in more for pkg in s.packages)  # reserved: never used


def test_train_only_photos_never_move_val_or_dev():
    rng = np.random.default_rng(3)
    held = {f"old-{i:02d}": (int(rng.integers(500, 1537)), int(rng.integers(500, 1537))) for i in range(55)}
    extra = {f"new-{i:03d}": (1536, 1024) for i in range(240)}  # all val-eligible: they would win ranks
    before = S.split_photos(held, 0.15, seed=0, dev_count=4)
    after = photoset.split_with_train_only({**held, **extra}, set(extra), 0.15, seed=0, dev_count=4)
    assert {k: v for k, v in after.items() if k in held} == before
    assert all(after[k] == "train" for k in extra)
    # without the train-only marking the same photos would have moved val/dev: the test can fail
    plain = S.split_photos({**held, **extra}, 0.15, seed=0, dev_count=4)
    assert {k for k, v in plain.items() if v != "train"} != {k for k, v in before.items() if v != "train"}


def test_default_split_is_pinned_to_todays_val_and_dev():
    """The names of val/ and dev/ of the default build, computed from the catalogue's output sizes."""
    from sodec.train.catalogue import HOLDOUT_SOURCES

    sizes = {k: tuple(v) for k, v in json.loads("".join(_SIZES_OF_TODAY)).items()}
    assert sorted({k.split("-")[0] for k in sizes}) == sorted(HOLDOUT_SOURCES)
    more = {f"{s.name}-{S.safe_stem(p.stem)}": (1536, 1024) for n in catalogue_more.MORE_SOURCES
            for s in [S.SOURCES[n]()] for p in s.photos}  # fmt: skip
    split = photoset.split_with_train_only({**sizes, **more}, set(more), 0.15, 0, 4)
    assert {k for k, v in split.items() if v == "val"} == VAL_NAMES
    assert {k for k, v in split.items() if v == "dev"} == DEV_NAMES


def test_build_puts_train_only_sources_in_train_and_keeps_held_out_bytes(tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    for i in range(9):
        (held / f"p{i}.png").write_bytes(_png_bytes((900, 600), i))
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(30):
        (extra / f"q{i:02d}.png").write_bytes(_png_bytes((1200, 800), 100 + i))
    cache = tmp_path / "cache"
    old = S.build_dataset(tmp_path / "old", f"folder:{held}", cache=cache)
    extra_src = S.parse_sources(f"folder:{extra}")[0]
    train_only = S.Source("extra", "folder", extra_src.packages, root=extra, holdout=False)
    new = S.build_dataset(tmp_path / "new", [*S.parse_sources(f"folder:{held}"), train_only], cache=cache)
    for sub in ("val", "dev"):
        a = {p.name: p.read_bytes() for p in (tmp_path / "old" / sub).iterdir()}
        b = {p.name: p.read_bytes() for p in (tmp_path / "new" / sub).iterdir()}
        assert a == b and a
    assert all(e.split == "train" for e in new.files if e.source == "extra")
    assert sum(e.source == "extra" for e in new.files) == 30
    assert new.counts()["total"]["train"] == old.counts()["total"]["train"] + 30
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["params"]["train_only_sources"] == ["extra"]


# ---------------------------------------------------------------- Qt resource archives (GCompris)


def test_rcc_round_trip_and_errors():
    files = {"/a/b/x.webp": b"x" * 1000, "/a/README": b"Files: x.webp\n", "/top.bin": bytes(range(256))}
    for compress in (True, False):
        assert qtrcc.read_rcc(qtrcc.write_rcc(files, compress)) == files
    with pytest.raises(SodecError, match="not a Qt resource archive"):
        qtrcc.read_rcc(b"nope" + bytes(30))
    with pytest.raises(SodecError, match="unreadable|truncated"):
        qtrcc.read_rcc(qtrcc.write_rcc(files)[:60])
    assert qtrcc.split_member("usr/x/erase.rcc:/g/a.webp") == ("usr/x/erase.rcc", "/g/a.webp")
    assert qtrcc.split_member("usr/x/a.jpg") is None


def test_gcompris_readme_parser():
    text = (
        "Copyright: Timothee Giet, 2018\nLicense: CC-BY-SA 4.0\nFiles:\nkey.svg\nusa/usa.svg\n\n"
        "Copyright: Daniel Schwen\nLicense: CC-BY-SA 4.0\nSource: https://commons.wikimedia.org/wiki/File:C.jpg\n"
        "Files:\nwonders/chichenItza.webp\n\n"
        "Copyright: JJ Harrison\nSource: https://commons.wikimedia.org/wiki/File:H.jpg\nLicense: CC-BY-3.0\n"
        "Comments: cropping\nFiles: gibbon.webp\n\n"
        "Copyright: 2000 Bruno Coudoin and others\nLicense: CC-BY 4.0\nEilan_0.webp\nEilan_background.webp\n"
        "Comment: based on a photo by G. Piolle\n"
    )
    e = catalogue_more.parse_gcompris_readme(text)
    assert e["wonders/chichenItza.webp"]["copyright"] == "Daniel Schwen"
    assert e["wonders/chichenItza.webp"]["source"].endswith("File:C.jpg")
    assert e["gibbon.webp"] == {"copyright": "JJ Harrison", "source": "https://commons.wikimedia.org/wiki/File:H.jpg",
                                "license": "CC-BY-3.0", "comment": "cropping"}  # fmt: skip
    assert e["Eilan_background.webp"]["license"] == "CC-BY 4.0" and "Piolle" in e["Eilan_background.webp"]["comment"]
    assert e["key.svg"]["license"] == "CC-BY-SA 4.0"


def test_build_reads_photos_and_credits_from_an_rcc_archive(tmp_path):
    """A fake gcompris-qt-data in the cache: the photo comes out of the archive, its licence out of the README."""
    cache = tmp_path / "cache"
    folder = cache / "debian" / "gcompris-qt-data" / "root"
    readme = "Copyright: Charles J. Sharp\nSource: https://example.org/G.jpg\nLicense: CC-BY-SA-4.0\n"
    readme += "Files: gorilla.webp\n"
    rcc = qtrcc.write_rcc({
        "/gcompris/src/activities/erase/resource/gorilla.webp": _png_bytes((1920, 1080), 1),
        "/gcompris/src/activities/erase/resource/README": readme.encode(),
    })  # fmt: skip
    src_root = tmp_path / "pkg"
    (src_root / "usr/share/gcompris-qt/rcc").mkdir(parents=True)
    (src_root / "usr/share/gcompris-qt/rcc/erase.rcc").write_bytes(rcc)
    photo = S.Photo("gcompris-qt-data", catalogue_more._gc_member("erase", "gorilla.webp"), "erase_gorilla")
    extra = (catalogue_more._gc_member("erase", "README"),)
    from sodec.train import downloads

    copied = downloads._copy_wanted(src_root, folder, [photo.path, *extra, "usr/share/doc/none"])
    assert copied == sorted([photo.path, *extra])
    record = {"kind": "deb", "package": "gcompris-qt-data", "version": "1", "archive": "g.deb", "sha256": "0" * 64,
              "files": copied}  # fmt: skip
    (folder.parent / "complete.json").write_text(json.dumps(record))
    src = S.Source("gcompris", "deb", {"gcompris-qt-data": None}, (photo,), extra_files=extra,
                   describe=catalogue_more._gcompris_describe, holdout=False)  # fmt: skip
    m = S.build_dataset(tmp_path / "out", [src], cache=cache, dev_count=0)
    (e,) = m.files
    assert e.split == "train" and e.output_size == (1536, 864) and e.license == "CC-BY-SA-4.0"
    assert e.credit == "Charles J. Sharp (https://example.org/G.jpg)"


def test_upstream_dirs_match_dep5_directory_patterns():
    paras = S.parse_dep5(
        "Files: *\nCopyright: 2019 E\nLicense: MIT\n\n"
        "Files: original-files/*\nCopyright: 2019 E\nLicense: CC-BY-SA-4.0\n\n"
        "Files: data/themes/maldives/*\nCopyright: 2013 A\nLicense: CC-BY-SA-3.0\n\n"
        "Files: data/themes/maldives/background.jpg\nCopyright: 2008, Nevit Dilmen\nLicense: CC-BY-3.0\n"
    )
    # installed paths alone: a directory pattern cannot be trusted, the catch-all applies
    assert S.dep5_license(paras, "usr/share/forensics-samples/original-files/pic1/a.jpg").license == "MIT"
    assert S.dep5_license(paras, "original-files/pic1/a.jpg", upstream=True).license == "CC-BY-SA-4.0"
    assert S.dep5_license(paras, "data/themes/maldives/background.jpg", upstream=True).license == "CC-BY-3.0"
    assert S.dep5_license(paras, "data/themes/maldives/x.png", upstream=True).license == "CC-BY-SA-3.0"
    demos = S.SOURCES["demos"]()
    assert demos.upstream_dirs["sddm-theme-maldives"] == ("usr/share/sddm/", "data/")


# output sizes of the default build's held-out-eligible sources (docs/data.md, /work/main/data/nano/manifest.json)
_SIZES_OF_TODAY = (
    "{\"lomiri-Bridge_by_Sander_Klootwijk\":[1536,864],\"lomiri-Dragonfly_by_Bolly\":[1536,1152],\"lomiri-Kleiber_"
    "by_Lukas_Baubkus\":[1536,864],\"lomiri-Picture_0B_by_freespace\":[1536,1039],\"lomiri-Picture_1A_by_freespac"
    "e\":[1365,1074],\"lomiri-Wine_by_Jakkub_Mede\":[1025,1536],\"lomiri-aitzgorri_by_Aitzol_Berasategi\":[1536,10"
    "23],\"lomiri-analogpattern_by_Peter_Nerlich\":[1536,1152],\"lomiri-free_by_Peter_Nerlich\":[1536,1152],\"lomi"
    "ri-friends_by_Aitzol_Berasategi\":[1023,1536],\"lomiri-greentock_by_Peter_Nerlich\":[1536,1152],\"lomiri-lif"
    "e_by_Aitzol_Berasategi\":[1536,1023],\"lomiri-picosdeeuropa_by_Aitzol_Berasategi\":[1536,1152],\"lomiri-suns"
    "et_by_Aitzol_Berasategi\":[1536,1024],\"matplotlib-grace_hopper\":[512,600],\"opencv-aero1\":[640,480],\"openc"
    "v-aloeL\":[1282,1110],\"opencv-apple\":[512,512],\"opencv-baboon\":[512,512],\"opencv-blox\":[256,256],\"opencv-"
    "board\":[640,480],\"opencv-building\":[868,600],\"opencv-butterfly\":[493,356],\"opencv-chicky_512\":[512,512],"
    "\"opencv-ela_original\":[902,770],\"opencv-fruits\":[512,480],\"opencv-graf1\":[800,640],\"opencv-home\":[512,38"
    "4],\"opencv-left\":[612,459],\"opencv-leuvenA\":[751,563],\"opencv-messi5\":[548,342],\"opencv-orange\":[512,512"
    "],\"opencv-rubberwhale1\":[584,388],\"opencv-smarties\":[413,356],\"opencv-squirrel_cls\":[535,426],\"opencv-st"
    "uff\":[640,480],\"plasma-BytheWater\":[1536,960],\"plasma-ColdRipple\":[1536,960],\"plasma-ColorfulCups\":[1536"
    ",960],\"plasma-DarkestHour\":[1536,960],\"plasma-EveningGlow\":[1536,960],\"plasma-FallenLeaf\":[1536,960],\"pl"
    "asma-Grey\":[1536,960],\"plasma-Kite\":[1536,960],\"plasma-OneStandsOut\":[1536,960],\"plasma-Path\":[1536,960]"
    ",\"plasma-summer_1am\":[1536,960],\"skimage-astronaut\":[512,512],\"skimage-chelsea\":[451,300],\"skimage-coffe"
    "e\":[600,400],\"skimage-hubble_deep_field\":[1000,872],\"skimage-motorcycle_left\":[741,500],\"skimage-rocket\""
    ":[640,427],\"sklearn-china\":[640,427],\"sklearn-flower\":[640,427]}"
)
