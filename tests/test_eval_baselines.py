"""Classical baselines: real files, bpp from their bytes, bisection to a target, floors when unreachable."""

from __future__ import annotations

import numpy as np
import pytest

from sodec.container import bits_per_pixel
from sodec.errors import SodecError
from sodec.eval import baselines as bl


def _codec(name: str) -> bl.Codec:
    try:
        return bl.get_codec(name)
    except bl.BaselineUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", bl.BASELINES)
def test_each_codec_round_trips_and_bpp_is_the_file_size(name, photo_rgb, tmp_path):
    codec = _codec(name)
    mid = (codec.lowest + codec.highest) / 2
    e = bl.encode_once(codec, photo_rgb, round(mid) if codec.integer else mid)
    assert e.decoded.shape == photo_rgb.shape and e.decoded.dtype == photo_rgb.dtype
    # the bytes bpp counts are a whole file: written out and read back alone, they decode to what was scored
    path = tmp_path / f"x.{name}"
    path.write_bytes(e.data)
    assert np.array_equal(codec.decode(path.read_bytes()), e.decoded)
    h, w = photo_rgb.shape[:2]
    assert e.bpp == bits_per_pixel(path.stat().st_size, w, h)  # over the image's pixels, the one bpp formula
    assert 0 < e.bpp < 24
    assert abs(e.decoded.astype(int) - photo_rgb).mean() < 40  # a picture of the same thing
    assert codec.library


@pytest.mark.parametrize("name", ["jpeg", "heic"])
def test_integer_knob_bisection_finds_the_best_setting_under_the_target(name, photo_rgb):
    codec = _codec(name)
    target = 0.6
    e = bl.encode_at_bpp(codec, photo_rgb, target)
    assert e.status == "ok" and e.target_bpp == target
    assert e.bpp <= target
    up = bl.encode_once(codec, photo_rgb, e.value + 1)  # the next setting up would exceed the target
    assert up.bpp > target
    assert e.n_encodes <= 10  # log2(100) + the two ends


def test_continuous_knob_bisection_reaches_the_target_within_tolerance():
    """JPEG 2000 reaches any rate; its knob (a target PSNR) moves the size in steps of ~1-3 % on a photo."""
    import numpy as np
    from PIL import Image

    from sodec.api import example_image

    with Image.open(example_image()) as im:
        photo = np.asarray(im.convert("RGB"))
    codec = _codec("j2k")
    for target in (0.05, 0.1, 0.3):
        e = bl.encode_at_bpp(codec, photo, target, rel_tol=0.03)
        assert e.status == "ok"
        assert target * 0.97 <= e.bpp <= target, (target, e.bpp, e.value)


def test_target_below_the_floor_reports_the_lowest_reachable_bpp(photo_rgb):
    codec = _codec("jpeg")
    e = bl.encode_at_bpp(codec, photo_rgb, 0.001)
    lowest = bl.encode_once(codec, photo_rgb, codec.lowest)
    assert e.status == "below_floor" and e.value == codec.lowest
    assert e.floor_bpp == e.bpp == lowest.bpp > 0.001
    assert e.n_encodes == 1
    ok = bl.encode_at_bpp(codec, photo_rgb, 3.0)
    assert ok.floor_bpp == lowest.bpp  # the floor is measured on the way, for every target


def test_target_above_the_best_setting_is_flagged(photo_rgb):
    e = bl.encode_at_bpp(_codec("jpeg"), photo_rgb, 50.0)
    assert e.status == "above_ceiling" and e.value == 100 and e.bpp <= 50


def test_jxl_distance_knob_runs_downwards(photo_rgb):
    codec = _codec("jxl")
    assert codec.lowest > codec.highest  # distance: larger is smaller files
    e = bl.encode_at_bpp(codec, photo_rgb, 1.0, rel_tol=0.05)
    assert e.bpp <= 1.0 and e.status in ("ok", "below_floor")


def test_parse_baselines():
    assert bl.parse_baselines("jpeg, heic,jpeg") == ("jpeg", "heic")
    assert bl.parse_baselines("none") == () and bl.parse_baselines(None) == ()
    assert bl.parse_baselines("all") == bl.BASELINES
    with pytest.raises(SodecError, match="unknown baseline"):
        bl.parse_baselines("bpg")
    with pytest.raises(ValueError):
        bl.encode_at_bpp(_codec("jpeg"), None, 0)
