"""`sodec data`: curated lists, the train/val/dev split, resizing, building from local sources (no network)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from sodec.errors import SodecError
from sodec.train import photoset
from sodec.train import sources as S


@pytest.fixture(autouse=True)
def _fast_png(monkeypatch):
    monkeypatch.setattr(photoset, "PNG_COMPRESS_LEVEL", 1)


def _photo(path, size, seed=0, exif_orientation=None) -> None:
    """A smooth random RGB image (compresses fast; deterministic)."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, exif=exif)
    else:
        im.save(path)


# ---------------------------------------------------------------- pure functions


def test_resize_never_upscales_and_keeps_aspect():
    assert S.output_size((800, 600), 1536) == (800, 600)
    assert S.output_size((1536, 10), 1536) == (1536, 10)
    assert S.output_size((6028, 3391), 1536) == (1536, 864)
    assert S.output_size((2560, 3837), 1536) == (1025, 1536)
    for w, h in [(4352, 2448), (3000, 3000), (2000, 7), (1537, 1024)]:
        ow, oh = S.output_size((w, h), 1536)
        assert max(ow, oh) == 1536 and ow <= w and oh <= h
        assert abs(ow / oh - w / h) <= (w / h) * (1 / min(ow, oh))  # aspect kept to within one pixel
    small = Image.new("RGB", (300, 200))
    assert S.resize_never_upscale(small, 1536) is small
    big = S.resize_never_upscale(Image.new("RGB", (3000, 2000)), 1536)
    assert big.size == (1536, 1024)


def test_split_is_deterministic_disjoint_and_val_photos_hold_768x512():
    rng = np.random.default_rng(1)
    sizes = {f"src-{i:03d}": (int(rng.integers(300, 1537)), int(rng.integers(300, 1537))) for i in range(60)}
    split = S.split_photos(sizes, 0.15, seed=0)
    assert split == S.split_photos(dict(reversed(list(sizes.items()))), 0.15, seed=0)  # order-independent
    assert set(split) == set(sizes)  # every photo in exactly one split
    val = [k for k, v in split.items() if v == "val"]
    assert len(val) == round(0.15 * 60)
    assert all(min(sizes[k]) >= 512 and max(sizes[k]) >= 768 for k in val)
    assert S.split_photos(sizes, 0.15, seed=1) != split  # the seed matters


def test_split_edge_cases():
    assert S.split_photos({"a": (800, 600)}, 0.15) == {"a": "train"}  # never everything in val
    two = S.split_photos({"a": (800, 600), "b": (300, 300)}, 0.15)
    assert two == {"a": "val", "b": "train"}  # at least one val photo when possible
    assert set(S.split_photos({"a": (300, 300), "b": (400, 300)}, 0.15).values()) == {"train"}  # none eligible
    assert set(S.split_photos({"a": (800, 600), "b": (800, 600)}, 0.0, dev_count=0).values()) == {"train"}
    with pytest.raises(SodecError):
        S.split_photos({"a": (800, 600)}, 1.0)


def _ranked_eligible(sizes, seed=0):
    return sorted((k for k, s in sizes.items() if S.val_eligible(s)), key=lambda k: photoset._rank(k, seed))


def test_dev_photos_are_the_next_eligible_ones_in_rank_order():
    rng = np.random.default_rng(2)
    sizes = {f"src-{i:03d}": (int(rng.integers(300, 1537)), int(rng.integers(300, 1537))) for i in range(60)}
    ranked = _ranked_eligible(sizes)
    n_val = round(0.15 * 60)
    assert len(ranked) >= n_val + 6
    for dev_count in (0, 1, 4, 6):
        split = S.split_photos(sizes, 0.15, seed=0, dev_count=dev_count)
        assert split == S.split_photos(dict(reversed(list(sizes.items()))), 0.15, seed=0, dev_count=dev_count)
        assert set(split) == set(sizes)  # train, val and dev are disjoint and cover every photo
        assert sorted(k for k, v in split.items() if v == "val") == sorted(ranked[:n_val])  # val ignores dev_count
        assert sorted(k for k, v in split.items() if v == "dev") == sorted(ranked[n_val : n_val + dev_count])
        assert sum(v == "train" for v in split.values()) == 60 - n_val - dev_count
    assert S.split_photos(sizes, 0.15) == S.split_photos(sizes, 0.15, dev_count=S.DEFAULT_DEV_COUNT)
    assert S.DEFAULT_DEV_COUNT == 4
    with pytest.raises(SodecError, match="dev-count"):
        S.split_photos(sizes, 0.15, dev_count=-1)


def test_dev_takes_what_there_is_and_never_empties_train():
    big, small = (800, 600), (300, 300)
    # two eligible photos beyond val: dev takes both, the ineligible ones stay in train
    sizes = {"a": big, "b": big, "c": big, "d": small, "e": small}
    split = S.split_photos(sizes, 0.15, dev_count=4)
    ranked = _ranked_eligible(sizes)
    assert split == {ranked[0]: "val", ranked[1]: "dev", ranked[2]: "dev", "d": "train", "e": "train"}
    # every photo eligible: one stays in train
    split = S.split_photos({k: big for k in "abcde"}, 0.15, dev_count=10)
    assert sorted(split.values()) == ["dev", "dev", "dev", "train", "val"]
    assert sorted(S.split_photos({"a": big, "b": big}, 0.15, dev_count=4).values()) == ["train", "val"]
    assert S.split_photos({"a": big}, 0.15, dev_count=4) == {"a": "train"}
    assert set(S.split_photos({"a": big, "b": big}, 0.0, dev_count=4).values()) == {"dev", "train"}


def test_curated_lists():
    srcs = S.parse_sources(",".join(S.DEFAULT_SOURCES))
    names = [f"{s.name}-{S.safe_stem(p.stem)}" for s in srcs for p in s.photos]
    assert len(names) == len(set(names))  # unique output names
    used = {p.path.rsplit("/", 1)[-1].lower() for s in srcs for p in s.photos}
    assert "seeding_by_clements_engelhardt.jpg" not in used  # the demo photo never trains nor validates
    lomiri = S.SOURCES["lomiri"]()
    assert any("seeding_by_Clements_Engelhardt" in x.path and "demo" in x.reason for x in lomiri.excluded)
    assert all(s.packages[p] for s in srcs if s.kind == "wheel" for p in s.packages)  # wheels are pinned
    assert len(S.SOURCES["plasma"]().photos) == 11


def test_parse_sources_errors(tmp_path):
    with pytest.raises(SodecError, match="unknown source 'nope'"):
        S.parse_sources("lomiri,nope")
    with pytest.raises(SodecError, match="not a directory"):
        S.parse_sources(f"folder:{tmp_path / 'missing'}")
    assert [s.kind for s in S.parse_sources(["skimage", f"folder:{tmp_path}"])] == ["wheel", "folder"]


def test_dep5_licence_lookup():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2014 Someone\nLicense: GPL-2+\n\n"
        "Files: 16.04/a_by_X.jpg\n       16.04/b_by_Y.jpg\nCopyright: X, 2018\nLicense: CC-BY-4.0\n\n"
        "Files: debian/*\nCopyright: 2018, Packager\nLicense: Expat\n\n"
        "License: CC-BY-4.0\n Long text.\n"
    )
    paras = S.parse_dep5(text)
    assert S.dep5_license(paras, "usr/share/backgrounds/b_by_Y.jpg").license == "CC-BY-4.0"
    assert S.dep5_license(paras, "usr/share/backgrounds/b_by_Y.jpg").copyright == "X, 2018"
    assert S.dep5_license(paras, "usr/share/backgrounds/other.jpg").license == "GPL-2+"


def test_failed_fetch_names_the_package_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get here
    src = S.Source("fake", "deb", {"fake-pkg": None}, (S.Photo("fake-pkg", "usr/x.jpg", "x"),))
    with pytest.raises(SodecError) as err:
        S.build_dataset(tmp_path / "out", [src], cache=tmp_path / "cache")
    msg = str(err.value)
    assert "fake-pkg" in msg and "`apt-get download fake-pkg` failed" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing written


# ---------------------------------------------------------------- building from local sources


def _fake_deb_cache(cache, package, files, copyright_text):
    """A cache entry exactly as a previous fetch leaves it, so no download happens."""
    folder = cache / "debian" / package
    for path, size, seed in files:
        _photo(folder / "root" / path, size, seed)
    cpath = f"usr/share/doc/{package}/copyright"
    (folder / "root" / cpath).parent.mkdir(parents=True, exist_ok=True)
    (folder / "root" / cpath).write_text(copyright_text)
    record = {"kind": "deb", "package": package, "version": "1.0-1", "archive": f"{package}_1.0-1_all.deb",
              "sha256": "0" * 64, "files": [p for p, _, _ in files] + [cpath]}  # fmt: skip
    (folder / "complete.json").write_text(json.dumps(record))
    return cpath


def test_build_from_cached_deb_and_folder(tmp_path):
    cache = tmp_path / "cache"
    bg = "usr/share/backgrounds/"
    files = [(f"{bg}p{i}_by_A.jpg", (800 + 20 * i, 540), i) for i in range(6)]
    files.append((f"{bg}seeding_by_Clements_Engelhardt.jpg", (800, 540), 99))
    dep5 = "Files: *\nCopyright: 2020 Team\nLicense: GPL-2+\n\n"
    dep5 += "Files: 16.04/p3_by_A.jpg\nCopyright: A, 2018\nLicense: CC0-1.0\n"
    cpath = _fake_deb_cache(cache, "fake-wallpapers", files, dep5)
    deb = S.Source(
        "fake", "deb", {"fake-wallpapers": None},
        tuple(S.Photo("fake-wallpapers", p, p.rsplit("/", 1)[-1][:-4]) for p, _, _ in files[:6]),
        (S.Excluded("fake-wallpapers", files[6][0], "the demo photo"),),
        {"fake-wallpapers": cpath},
    )  # fmt: skip
    folder = tmp_path / "mine"
    _photo(folder / "big photo.jpg", (1300, 975), 10)  # landscape, downscaled
    _photo(folder / "small.png", (300, 280), 11)  # kept, never upscaled, too small for val
    _photo(folder / "tiny.png", (200, 150), 12)  # under 256 px: excluded
    _photo(folder / "rotated.jpg", (900, 600), 13, exif_orientation=6)  # stored landscape, shown portrait
    _photo(folder / "seeding_by_Clements_Engelhardt.jpg", (900, 600), 14)  # the demo photo, by name
    out = tmp_path / "data"

    m = S.build_dataset(out, [deb, *S.parse_sources(f"folder:{folder}")], max_side=1024, cache=cache)

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted([e.file for e in m.files] + ["manifest.json"])
    names = {e.file.split("/")[1] for e in m.files}
    assert names == {f"fake-p{i}_by_A.png" for i in range(6)} | {
        "folder-big_photo.png", "folder-small.png", "folder-rotated.png"
    }  # fmt: skip
    assert not any("seeding" in n for n in names)
    reasons = {e.path.rsplit("/", 1)[-1]: e.reason for e in m.excluded}
    assert "demo" in reasons["seeding_by_Clements_Engelhardt.jpg"]
    assert sum("seeding" in e.path for e in m.excluded) == 2  # the package's and the folder's copy
    assert "256" in reasons["tiny.png"]

    by_name = {e.file.split("/")[1]: e for e in m.files}
    assert by_name["folder-big_photo.png"].output_size == (1024, 768)
    assert by_name["folder-small.png"].output_size == (300, 280)
    assert by_name["folder-rotated.png"].original_size == (600, 900)  # EXIF orientation applied
    with Image.open(out / by_name["folder-rotated.png"].file) as im:
        assert im.size == (600, 900) and im.mode == "RGB"
    assert by_name["fake-p3_by_A.png"].license == "CC0-1.0" and by_name["fake-p3_by_A.png"].credit == "A, 2018"
    assert by_name["fake-p0_by_A.png"].license == "GPL-2+" and by_name["fake-p0_by_A.png"].copyright_file == cpath

    val = [e for e in m.files if e.split == "val"]
    dev = [e for e in m.files if e.split == "dev"]
    assert len(val) == round(0.15 * len(m.files)) >= 1
    assert len(dev) == S.DEFAULT_DEV_COUNT
    assert all(min(e.output_size) >= 512 and max(e.output_size) >= 768 for e in val + dev)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["total"] == {
        "train": len(m.files) - len(val) - len(dev), "val": len(val), "dev": len(dev), "total": len(m.files)
    }  # fmt: skip
    assert {p["package"]: p["version"] for p in manifest["packages"]}["fake-wallpapers"] == "1.0-1"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind

    # re-running rebuilds the same names, split and bytes
    before = (out / "manifest.json").read_bytes()
    S.build_dataset(out, [deb, *S.parse_sources(f"folder:{folder}")], max_side=1024, cache=cache)
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == written


def _tree(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_build_writes_the_dev_split(tmp_path):
    folder = tmp_path / "mine"
    for i in range(9):
        _photo(folder / f"p{i}.jpg", (900, 600), i)  # val-eligible
    _photo(folder / "small.jpg", (400, 300), 20)  # too small for val and dev
    out = tmp_path / "data"
    cache = tmp_path / "cache"

    m = S.build_dataset(out, f"folder:{folder}", cache=cache)
    split = {e.file.split("/")[1][: -len(".png")]: e.split for e in m.files}
    ranked = _ranked_eligible({f"folder-p{i}": (900, 600) for i in range(9)})
    n_val = round(0.15 * 10)
    assert sorted(k for k, v in split.items() if v == "val") == sorted(ranked[:n_val])
    assert sorted(k for k, v in split.items() if v == "dev") == sorted(ranked[n_val : n_val + 4])
    assert sorted(k for k, v in split.items() if v == "train") == sorted(ranked[n_val + 4 :] + ["folder-small"])
    folders = {sub: sorted(p.name for p in (out / sub).iterdir()) for sub in ("train", "val", "dev")}
    assert folders["dev"] == sorted(f"{k}.png" for k in ranked[n_val : n_val + 4])
    assert len({n for names in folders.values() for n in names}) == 10  # disjoint
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["dev_count"] == 4
    assert manifest["counts"]["total"] == {"train": 4, "val": 2, "dev": 4, "total": 10}
    assert [e["split"] for e in manifest["files"] if e["file"].startswith("dev/")] == ["dev"] * 4
    assert S.Manifest.load(out / "manifest.json").counts() == m.counts()
    assert m.summary().splitlines()[0].split() == ["source", "train", "val", "dev", "total"]

    # a rerun is byte-identical, dev/ included
    before = _tree(out)
    S.build_dataset(out, f"folder:{folder}", cache=cache)
    assert _tree(out) == before

    # --dev-count 0: no dev/ (the old one is removed), its photos go back to train/, val/ is unchanged
    m0 = S.build_dataset(out, f"folder:{folder}", cache=cache, dev_count=0)
    assert not (out / "dev").exists()
    assert sorted(p.name for p in (out / "val").iterdir()) == folders["val"]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(folders["train"] + folders["dev"])
    assert {e.split for e in m0.files} == {"train", "val"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["dev_count"] == 0 and manifest["counts"]["total"]["dev"] == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    with pytest.raises(SodecError, match="dev-count"):
        S.build_dataset(out, f"folder:{folder}", cache=cache, dev_count=-1)


def test_failure_keeps_the_previous_output(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    for i in range(3):
        _photo(folder / f"p{i}.jpg", (900, 600), i)
    out = tmp_path / "data"
    S.build_dataset(out, f"folder:{folder}", cache=tmp_path / "cache")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(photoset, "sha256_file", boom)
    with pytest.raises(OSError):
        S.build_dataset(out, f"folder:{folder}", cache=tmp_path / "cache")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_sources_module_still_exports_the_split_modules_names():
    from sodec.train import catalogue, copyright, downloads

    assert S.build_dataset is photoset.build_dataset and S.Manifest is photoset.Manifest
    assert S.SOURCES is catalogue.SOURCES and S.parse_dep5 is copyright.parse_dep5
    assert S.default_cache is downloads.default_cache
    assert all(hasattr(S, name) for name in S.__all__)


@pytest.mark.parametrize("killed_at", ["train", "val", "dev", "manifest.json", "journal"])
def test_a_publish_killed_part_way_is_completed_by_the_next_run(tmp_path, monkeypatch, killed_at):
    """Bug 5 of issue 18: a kill between removing the old manifest and the last rename left a folder with
    some splits but no manifest, which the next run refused as "not written by sodec data"."""
    folder = tmp_path / "mine"
    for i in range(9):
        _photo(folder / f"p{i}.jpg", (900, 600), i)
    out, cache = tmp_path / "data", tmp_path / "cache"
    S.build_dataset(out, f"folder:{folder}", cache=cache, dev_count=0)  # the previous set: no dev/
    expected_old = _tree(out)

    real_replace, real_unlink = os.replace, type(out).unlink

    def killed_replace(src, dst):  # the kill: the process stops before this rename into out/
        if os.fspath(dst) == os.fspath(out / killed_at):
            raise KeyboardInterrupt
        real_replace(src, dst)

    def killed_unlink(self, *a, **k):
        if killed_at == "journal" and self.name == photoset.PUBLISH_JOURNAL:
            raise KeyboardInterrupt  # everything is in place, only the journal is left
        real_unlink(self, *a, **k)

    monkeypatch.setattr(os, "replace", killed_replace)
    monkeypatch.setattr(type(out), "unlink", killed_unlink)
    with pytest.raises(KeyboardInterrupt):
        S.build_dataset(out, f"folder:{folder}", cache=cache)
    monkeypatch.undo()
    monkeypatch.setattr(photoset, "PNG_COMPRESS_LEVEL", 1)
    assert _tree(out) != expected_old  # the kill did leave a half-published folder

    m = S.build_dataset(out, f"folder:{folder}", cache=cache)  # the next run completes it, then rebuilds
    clean = tmp_path / "clean"
    S.build_dataset(clean, f"folder:{folder}", cache=cache)
    assert _tree(out) == _tree(clean)
    assert {e.split for e in m.files} == {"train", "val", "dev"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or journal left behind


@pytest.mark.parametrize("sub", ["train", "val", "dev"])
def test_refuses_a_foreign_out_dir(tmp_path, sub):
    folder = tmp_path / "mine"
    _photo(folder / "p.jpg", (900, 600))
    out = tmp_path / "data"
    (out / sub).mkdir(parents=True)
    (out / sub / "precious.png").write_bytes(b"x")
    with pytest.raises(SodecError, match=f"{sub} exists but .* no manifest.json"):
        S.build_dataset(out, f"folder:{folder}", cache=tmp_path / "cache", dev_count=0)
    assert (out / sub / "precious.png").exists()


# ---------------------------------------------------------------- command line


def test_cli_unknown_source(tmp_path):
    r = run_cli("data", str(tmp_path / "out"), "--sources", "lomiri,nope")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"sodec: error: unknown source 'nope' (known: {', '.join(S.SOURCES)}, folder:PATH)"
    ]
    assert list(S.SOURCES)[:6] == ["lomiri", "plasma", "opencv", "skimage", "sklearn", "matplotlib"]
    assert not (tmp_path / "out").exists()


def test_cli_folder_source(tmp_path):
    folder = tmp_path / "mine"
    for i in range(4):
        _photo(folder / f"p{i}.jpg", (1000, 700), i)
    args = ("data", str(tmp_path / "out"), "--sources", f"folder:{folder}", "--cache", str(tmp_path / "c"), "-q")
    r = run_cli(*args, "--dev-count", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(line.startswith(("train/folder-p", "val/folder-p", "dev/folder-p")) for line in lines) == 4
    assert sum(line.startswith("dev/folder-p") for line in lines) == 1
    assert any(line.startswith("folder") and line.split()[1:] == ["2", "1", "1", "4"] for line in lines)
    assert os.path.isfile(tmp_path / "out" / "manifest.json")
    assert len(os.listdir(tmp_path / "out" / "dev")) == 1

    r = run_cli(*args, "--dev-count", "0")
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("folder") and line.split()[1:] == ["3", "1", "0", "4"] for line in r.stdout.splitlines())
    assert not os.path.exists(tmp_path / "out" / "dev")
