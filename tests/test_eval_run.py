"""`sodec eval` end to end on two small photos with a tiny random model and two baselines: every output
written, and the numbers in them consistent with each other and with the files on disk."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from sodec.api import example_image
from sodec.cli import main
from sodec.errors import SodecError
from sodec.eval import metrics as M
from sodec.eval.run import Preprocess, parse_rates, parse_targets

HAVE_FID = M.availability("fid256") is None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two 288x256 crops of the bundled photo (big enough for 5-scale MS-SSIM and one FID patch each)."""
    folder = tmp_path_factory.mktemp("data")
    with Image.open(example_image()) as im:
        im = im.convert("RGB")
        im.crop((0, 0, 288, 256)).save(folder / "a.png")
        im.crop((400, 200, 688, 456)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir, tiny_model_dir):
    out = tmp_path_factory.mktemp("runs") / "run"
    metrics = "psnr,ms_ssim,musiq" + (",fid256,kid256" if HAVE_FID else "")
    args = ["eval", "--data", str(data_dir), "--model", str(tiny_model_dir), "--baselines", "jpeg,j2k",
            "--targets", "match,2", "--anchor", "j2k", "--metrics", metrics, "--crops", "1", "--out", str(out),
            "-q"]
    saved = warnings.showwarning  # main() installs its one-line warning printer: keep the session's
    try:
        assert main(args) == 0
    finally:
        warnings.showwarning = saved
    return out


def _csv(run_dir) -> list[dict]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_all_outputs_are_written(run_dir):
    for name in ("results.json", "results.csv", "rd.png", "report.md"):
        assert (run_dir / name).is_file(), name
    with Image.open(run_dir / "rd.png") as im:
        assert im.format == "PNG" and im.width > 400
    crops = list((run_dir / "crops").glob("*.png"))
    assert len(crops) == 1  # --crops 1: the first image, one SODEC rate point
    with Image.open(crops[0]) as im:
        assert im.height > 256 and im.width > 3 * 256  # original | sodec | jpeg | j2k


def test_csv_rows_and_bpp_are_real_file_sizes(run_dir, data_dir):
    rows = _csv(run_dir)
    assert len(rows) == 2 * (1 + 2 * 2)  # 2 images x (sodec r0 + 2 baselines x {match, 2 bpp})
    assert {r["codec"] for r in rows} == {"sodec-fidelity", "jpeg", "j2k"}
    assert {r["rate"] for r in rows} == {"r0", "match-r0", "2"}
    for r in rows:
        w, h = int(r["width"]), int(r["height"])
        assert (w, h) == (288, 256)
        n_bytes = int(r["bytes"])
        assert n_bytes == (run_dir / r["file"]).stat().st_size
        assert float(r["bpp"]) == pytest.approx(n_bytes * 8 / (w * h), rel=1e-12)
        with Image.open(run_dir / r["recon"]) as im:
            recon = np.asarray(im.convert("RGB"))
        with Image.open(data_dir / f"{r['image']}.png") as im:
            ref = np.asarray(im.convert("RGB"))
        assert float(r["psnr"]) == pytest.approx(M.psnr(ref, recon), abs=1e-9)  # measured on what was written
        assert 0 < float(r["ms_ssim"]) <= 1
        if r["family"] == "baseline":
            assert r["status"] in ("ok", "below_floor", "above_ceiling")
            if r["status"] == "ok":
                assert float(r["bpp"]) <= float(r["target_bpp"])
            if r["status"] == "below_floor":
                assert float(r["bpp"]) == pytest.approx(float(r["floor_bpp"]))
    # matched targets are each image's own SODEC bpp
    sodec = {r["image"]: float(r["bpp"]) for r in rows if r["codec"] == "sodec-fidelity"}
    for r in rows:
        if r["rate"] == "match-r0":
            assert float(r["target_bpp"]) == pytest.approx(sodec[r["image"]])


def test_json_summary_agrees_with_the_csv(run_dir):
    result = json.loads((run_dir / "results.json").read_text())
    rows = _csv(run_dir)
    assert len(result["records"]) == len(rows)
    for s in result["summary"]:
        group = [r for r in rows if r["codec"] == s["codec"] and r["rate"] == s["rate"]]
        assert s["n_images"] == len(group) == 2
        assert s["bpp"] == pytest.approx(np.mean([float(r["bpp"]) for r in group]), rel=1e-12)
        assert s["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in group]), rel=1e-12)
        if HAVE_FID:
            assert s["fid_patches"] == 2 and math.isfinite(s["fid256"]) and s["fid256"] >= 0
            assert math.isfinite(s["kid256"])
    info = result["metrics"]
    assert info["psnr"]["available"] and not info["musiq"]["available"] and info["musiq"]["reason"]
    assert result["meta"]["preprocess"] == "none" and result["sodec"]["r0"]["decoders"] == ["fidelity"]
    assert result["meta"]["wall_s"] > 0


def test_bd_rate_table_vs_the_anchor(run_dir):
    result = json.loads((run_dir / "results.json").read_text())
    bd = {(b["metric"], b["codec"]): b for b in result["bd"]}
    assert ("psnr", "j2k") not in bd  # the anchor itself
    jpeg = bd[("psnr", "jpeg")]
    assert jpeg["anchor"] == "j2k"
    if jpeg["bd_rate"] is not None:  # two points each; defined where the PSNR ranges overlap
        assert jpeg["quality_low"] < jpeg["quality_high"]
    else:
        assert jpeg["reason"]
    sodec = bd[("psnr", "sodec-fidelity")]
    assert sodec["bd_rate"] is None and "at least 2" in sodec["reason"]  # one rate point


def test_report_states_protocol_unavailable_metrics_and_links_outputs(run_dir):
    report = (run_dir / "report.md").read_text()
    assert "**Preprocessing**: none" in report
    assert "musiq | higher | unavailable: " in report
    assert "![rate-distortion curves](rd.png)" in report
    assert "](crops/" in report
    assert "## BD-rate vs j2k" in report
    assert "sodec eval --data" in report and "--targets match,2" in report  # the command that reproduces it


def test_refusals_exit_2_with_one_line(tmp_path, data_dir, tiny_model_dir, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "old.txt").write_text("x")
    saved = warnings.showwarning
    try:
        base = ["eval", "--data", str(data_dir), "--model", str(tiny_model_dir), "-q"]
        assert main([*base, "--out", str(out)]) == 2
        assert "not empty" in capsys.readouterr().err
        assert main(["eval", "--data", str(data_dir), "--model", "none", "--out", str(tmp_path / "n")]) == 2
        assert "--targets" in capsys.readouterr().err
        assert main([*base, "--metrics", "lpips", "--out", str(tmp_path / "m")]) == 2
        assert main([*base, "--preprocess", "crop:9", "--out", str(tmp_path / "p")]) == 2
        assert main([*base, "--rates", "3", "--metrics", "psnr", "--out", str(tmp_path / "q")]) == 2
        assert "no rate point 3" in capsys.readouterr().err
        assert main([*base, "--decoder", "diffusion", "--metrics", "psnr", "--out", str(tmp_path / "d")]) == 2
        assert "no diffusion decoder" in capsys.readouterr().err
        assert not (tmp_path / "d").exists()  # refused before anything is written
    finally:
        warnings.showwarning = saved


def test_preprocess_options():
    rgb = np.arange(600 * 800 * 3, dtype=np.uint32).reshape(600, 800, 3).astype(np.uint8)
    crop = Preprocess.parse("center-crop:768x512").apply(rgb)
    assert crop.shape == (512, 768, 3)
    np.testing.assert_array_equal(crop, rgb[44:556, 16:784])
    assert Preprocess.parse("center-crop:768x512").apply(rgb[:500]) is None  # never upscaled: skipped
    assert Preprocess.parse("resize64").apply(rgb).shape == (576, 768, 3)  # nearest multiples of 64
    assert Preprocess.parse("crop64").apply(rgb[:, :700]).shape == (576, 640, 3)
    assert Preprocess.parse("none").apply(rgb) is rgb
    assert "center-crop:768x512" in Preprocess.parse("center-crop:768x512").describe()
    with pytest.raises(SodecError):
        Preprocess.parse("center-crop:axb")


def test_rate_and_target_parsing():
    assert parse_rates("2,0,2") == [0, 2] and parse_rates(None) is None and parse_rates("all") is None
    assert parse_targets("match,0.05") == ["match", 0.05] and parse_targets(None) is None
    for bad in ("0", "-1", "x"):
        with pytest.raises(SodecError):
            parse_targets(bad)
    with pytest.raises(SodecError):
        parse_rates("a")


def test_decoder_both_counts_the_encode_time_once(tmp_path, monkeypatch):
    """``--decoder both`` decodes one file twice: the SODEC coding time is one encode plus two decodes."""
    from types import SimpleNamespace

    from sodec import api
    from sodec.eval import coding

    clock = [0.0]
    monkeypatch.setattr(coding, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def compress_image(model, rgb):
        clock[0] += 10.0  # every encode takes 10 s, every decode 1 s, on this clock
        return b"sodec-bytes"

    def decompress_bytes(data, model, device, decoder):
        clock[0] += 1.0
        return Image.new("RGB", (8, 8)), None

    monkeypatch.setattr(api, "compress_image", compress_image)
    monkeypatch.setattr(api, "decompress_bytes", decompress_bytes)
    monkeypatch.setattr(coding.ImageCoder, "_measure", lambda self, image, decoded, row, result: None)
    coder = coding.ImageCoder(coding.EvalConfig(data=tmp_path, out=tmp_path, model=None, decoder="both",
                                                baselines=()))
    coder.suite = M.MetricSuite(())
    coder.models = [("r0", SimpleNamespace(config=SimpleNamespace(rate_point=0)))]
    coder.sodec_info["r0"] = {"decoders": ["diffusion", "fidelity"]}
    result = coder.code(coding.EvalImage("a", tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8)))
    assert result.coding_s["sodec"] == pytest.approx(10.0 + 2 * 1.0)
    assert [(r["codec"], r["encode_s"], r["decode_s"]) for r in result.rows] == [
        ("sodec-diffusion", 10.0, 1.0), ("sodec-fidelity", 10.0, 1.0)]  # each row: its file's encode time


def test_a_failing_image_is_reported_and_the_rest_evaluated(tmp_path, data_dir, capsys):
    """As in a folder run: the unreadable image is one error line, the report covers the others, exit 2."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes((data_dir / "a.png").read_bytes())
    (data / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not a whole PNG")
    out = tmp_path / "run"
    args = ["eval", "--data", str(data), "--out", str(out), "--model", "none", "--baselines", "jpeg", "--targets",
            "0.5", "--metrics", "psnr", "--crops", "0", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("sodec: error:") == 1 and "b.png: not a readable image" in err
    assert "1 of 2 images failed" in err
    result = json.loads((out / "results.json").read_text())
    assert [i["name"] for i in result["images"]] == ["a"] and {r["image"] for r in result["records"]} == {"a"}
    assert len(result["failed_images"]) == 1 and result["failed_images"][0].startswith(str(data / "b.png"))
    assert "Failed (not in any table): " in (out / "report.md").read_text()
