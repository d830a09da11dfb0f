"""The `sodec` command line: round trips, bad input (one stderr line, exit 2, nothing written), policies."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from sodec import container
from sodec.cli import main


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compress_info_decompress(tmp_path, photo_png, tiny_model_dir):
    before = _digest(photo_png)
    out = tmp_path / "photo.sodec"
    assert main(["compress", str(photo_png), "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    assert _digest(photo_png) == before  # the input is never modified
    size = out.stat().st_size
    assert main(["info", str(out), "--json"]) == 0
    png = tmp_path / "back.png"
    assert main(["decompress", str(out), "-o", str(png), "--model", str(tiny_model_dir)]) == 0
    with Image.open(png) as im:
        assert im.size == (128, 96) and im.mode == "RGB"
    header = container.unpack(out.read_bytes()).header
    assert container.bits_per_pixel(size, header.width, header.height) == pytest.approx(size * 8 / (128 * 96))


def test_info_reports_the_real_file_size(tmp_path, photo_png, tiny_model_dir, capsys):
    out = tmp_path / "p.sodec"
    main(["compress", str(photo_png), "-o", str(out), "--model", str(tiny_model_dir), "-q"])
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == out.stat().st_size
    assert info["bpp"] == pytest.approx(out.stat().st_size * 8 / (128 * 96), abs=1e-6)
    assert info["model"] == "tiny" and info["rate_point"] == 0 and info["color_mode"] == "RGB"


def _expect_error(capsys, argv, match: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sodec: error:") and match in err[0], err


def _no_leftovers(folder, allowed) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(allowed)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty file"),
        (b"hello, I am not an image", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a readable image"),
    ],
)
def test_compress_bad_images(tmp_path, tiny_model_dir, capsys, content, match):
    src = tmp_path / "in.png"
    src.write_bytes(content)
    _expect_error(
        capsys, ["compress", str(src), "-o", str(tmp_path / "o.sodec"), "--model", str(tiny_model_dir)], match
    )
    _no_leftovers(tmp_path, ["in.png"])
    assert src.read_bytes() == content


@pytest.fixture
def good_file(tmp_path_factory, photo_rgb, tiny_model_dir):
    folder = tmp_path_factory.mktemp("good")
    Image.fromarray(photo_rgb).save(folder / "p.png")
    assert main(["compress", str(folder / "p.png"), "-o", str(folder / "p.sodec"), "--model", str(tiny_model_dir)]) == 0
    return (folder / "p.sodec").read_bytes()


def _with_crc(body: bytes) -> bytes:
    import struct
    import zlib

    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    "case,match",
    [
        ("empty", "bad magic"),
        ("truncated", "checksum"),
        ("flipped", "checksum"),
        ("version", "version 9"),
        ("huge", "1000000x1000000"),
        ("latent", "latent check"),
    ],
)
def test_decompress_bad_files(tmp_path, tiny_model_dir, good_file, capsys, case, match):
    data = {
        "empty": lambda d: b"",
        "truncated": lambda d: d[: len(d) // 2],
        "flipped": lambda d: d[:30] + bytes([d[30] ^ 0x10]) + d[31:],
        "version": lambda d: _with_crc(d[:3] + b"\x09" + d[4:-4]),
        "huge": lambda d: _with_crc(d[:15] + container._put_varint(10**6) + container._put_varint(10**6) + d[17:-4]),
        # Valid CRC, but the latent check no longer matches the decoded symbols.
        "latent": lambda d: _with_crc(d[:20] + bytes([d[20] ^ 0xFF]) + d[21:-4]),
    }[case](good_file)
    src = tmp_path / "bad.sodec"
    src.write_bytes(data)
    _expect_error(
        capsys, ["decompress", str(src), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model_dir)], match
    )
    _no_leftovers(tmp_path, ["bad.sodec"])
    assert src.read_bytes() == data


def test_decompress_with_the_wrong_model(tmp_path, good_file, capsys):
    from conftest import make_tiny_model

    make_tiny_model(seed=7).save_pretrained(tmp_path / "other")
    src = tmp_path / "p.sodec"
    src.write_bytes(good_file)
    _expect_error(
        capsys,
        ["decompress", str(src), "-o", str(tmp_path / "o.png"), "--model", str(tmp_path / "other")],
        "model mismatch",
    )
    _no_leftovers(tmp_path, ["other", "p.sodec"])


def test_missing_input_and_unknown_model(tmp_path, photo_png, capsys):
    _expect_error(capsys, ["compress", str(tmp_path / "nope.png")], "no such file")
    _expect_error(capsys, ["compress", str(photo_png), "--model", "nonexistent-model"], "bundled")
    _expect_error(capsys, ["info", str(tmp_path / "nope.sodec")], "No such file")


def test_existing_output_needs_force(tmp_path, photo_png, tiny_model_dir, capsys):
    out = tmp_path / "o.sodec"
    out.write_bytes(b"keep me")
    args = ["compress", str(photo_png), "-o", str(out), "--model", str(tiny_model_dir)]
    _expect_error(capsys, args, "--force")
    assert out.read_bytes() == b"keep me"
    assert main([*args, "--force"]) == 0
    assert out.read_bytes()[:3] == b"SDC"


def test_folder_in_folder_out_goes_on_after_a_bad_file(tmp_path, photo_rgb, tiny_model_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo_rgb).save(src / "a.png")
    Image.fromarray(photo_rgb[:40, :50]).save(src / "b.jpg")
    (src / "c.png").write_bytes(b"broken")
    (src / "notes.txt").write_text("not an image suffix: ignored")
    assert main(["compress", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "c.png" in err and "1 of 3 files failed" in err
    _no_leftovers(tmp_path / "out", ["a.sodec", "b.sodec"])
    assert main(["decompress", str(tmp_path / "out"), "-o", str(tmp_path / "png"), "--model", str(tiny_model_dir)]) == 0
    _no_leftovers(tmp_path / "png", ["a.png", "b.png"])
    with Image.open(tmp_path / "png" / "b.png") as im:
        assert im.size == (50, 40)


@pytest.mark.parametrize(
    "mode,out_mode,warns",
    [
        ("L", "L", None),
        ("1", "L", None),
        ("LA", "L", "alpha"),
        ("RGBA", "RGB", "alpha"),
        ("P", "RGB", None),
        ("I;16", "L", "8-bit"),
        ("CMYK", "RGB", None),
    ],
)
def test_colour_mode_policies(tmp_path, photo_rgb, tiny_model_dir, capsys, mode, out_mode, warns):
    im = Image.fromarray(photo_rgb)
    if mode == "I;16":
        gray = np.asarray(im.convert("L"), dtype=np.uint16) * 257
        im = Image.fromarray(gray)
        assert im.mode == "I;16"
        src = tmp_path / "in.png"
    else:
        im = im.convert(mode)
        src = tmp_path / ("in.tif" if mode == "CMYK" else "in.png")
    im.save(src)
    capsys.readouterr()
    assert main(["compress", str(src), "-o", str(tmp_path / "o.sodec"), "--model", str(tiny_model_dir)]) == 0
    err = capsys.readouterr().err
    assert (warns is None and "warning" not in err) or (warns is not None and warns in err and "warning" in err)
    assert (
        main(["decompress", str(tmp_path / "o.sodec"), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model_dir)])
        == 0
    )
    with Image.open(tmp_path / "o.png") as out:
        assert out.mode == out_mode and out.size == (128, 96)


def test_float_images_are_refused(tmp_path, tiny_model_dir, capsys):
    src = tmp_path / "f.tif"
    Image.fromarray(np.zeros((8, 8), dtype=np.float32), "F").save(src)
    _expect_error(
        capsys, ["compress", str(src), "-o", str(tmp_path / "o.sodec"), "--model", str(tiny_model_dir)], "mode F"
    )


def test_decompression_bomb_png_is_refused(tmp_path, tiny_model_dir, capsys):
    """A tiny PNG whose header declares 20000 x 20000 pixels is refused before decoding."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    src = tmp_path / "bomb.png"
    src.write_bytes(png)
    _expect_error(
        capsys, ["compress", str(src), "-o", str(tmp_path / "o.sodec"), "--model", str(tiny_model_dir)], "exceeds"
    )
    _no_leftovers(tmp_path, ["bomb.png"])


def test_usage_errors_exit_2():
    r = run_cli("compress")
    assert r.returncode == 2 and "usage" in r.stderr


def test_demo_with_the_bundled_model(tmp_path):
    r = run_cli("demo", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    sodec_file = tmp_path / "demo" / "dandelions.sodec"
    assert f"{sodec_file.stat().st_size} bytes" in r.stdout
    with Image.open(tmp_path / "demo" / "dandelions.png") as im:
        assert im.size == (768, 512)


def test_cross_process_and_thread_count_determinism(tmp_path, photo_png, tiny_model_dir):
    """Encode in one process with 2 threads, decode in others with 1 and 2 threads: identical outputs."""
    model = str(tiny_model_dir)
    a = run_cli("--threads", "2", "compress", str(photo_png), "-o", str(tmp_path / "a.sodec"), "--model", model)
    assert a.returncode == 0, a.stderr
    assert main(["compress", str(photo_png), "-o", str(tmp_path / "b.sodec"), "--model", model, "-q"]) == 0
    assert (tmp_path / "a.sodec").read_bytes() == (tmp_path / "b.sodec").read_bytes()
    for threads in (1, 2):
        r = run_cli(
            "--threads",
            str(threads),
            "decompress",
            str(tmp_path / "a.sodec"),
            "-o",
            str(tmp_path / f"d{threads}.png"),
            "--model",
            model,
        )
        assert r.returncode == 0, r.stderr
    assert _digest(tmp_path / "d1.png") == _digest(tmp_path / "d2.png")


@pytest.mark.xfail(
    strict=True,
    reason="known broken since the trained nano (diffusion decoder) shipped: 1 vs 2 threads differ in the "
    "UNet/VAE float path (latents stay exact); docs/results.md, 'Known problems'",
)
def test_nano_decoding_is_identical_across_processes_and_threads(tmp_path):
    """The same guarantee at nano width (where oneDNN picks real multi-threaded kernels)."""
    photo = tmp_path / "p.png"
    with Image.open(__import__("sodec.api").api.example_image()) as im:
        im.crop((0, 0, 320, 256)).save(photo)
    r = run_cli("--threads", "2", "compress", str(photo), "-o", str(tmp_path / "p.sodec"))
    assert r.returncode == 0, r.stderr
    for threads in (1, 2):
        r = run_cli(
            "--threads", str(threads), "decompress", str(tmp_path / "p.sodec"), "-o", str(tmp_path / f"{threads}.png")
        )
        assert r.returncode == 0, r.stderr
    assert _digest(tmp_path / "1.png") == _digest(tmp_path / "2.png")
    shutil.rmtree(tmp_path)


def test_output_into_an_existing_folder_and_unwritable_output(tmp_path, photo_png, tiny_model_dir, capsys):
    (tmp_path / "out").mkdir()
    assert main(["compress", str(photo_png), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "-q"]) == 0
    assert (tmp_path / "out" / "photo.sodec").is_file()
    _expect_error(
        capsys,
        ["compress", str(photo_png), "-o", str(tmp_path / "missing" / "o.sodec"), "--model", str(tiny_model_dir)],
        "No such file",
    )
