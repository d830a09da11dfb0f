"""``--ray``: folder jobs and ``sodec eval`` on a local two-CPU Ray cluster started by this module, and the
Dataset API.  The same guarantees as ``--jobs`` (tests/test_batch.py) and the same bytes and numbers as the
single-process path."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from sodec.cli import main

KILL_ENV = "SODEC_TEST_KILL_ONCE"


def test_without_ray_one_error_names_the_extra(monkeypatch, photo_png, tiny_model_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    model = ["--model", str(tiny_model_dir)]
    assert main(["compress", str(photo_png), "-o", str(tmp_path / "a.sodec"), *model, "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sodec: error: --ray needs the ray extra" in err
    assert "pip install 'sodec[ray]'" in err
    assert not (tmp_path / "a.sodec").exists()
    assert main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *model, "--ray", "-q"]) == 2
    assert "pip install 'sodec[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs for this module (the tests that need it skip without ray), whose workers
    see the folder of the kill-once test hook.  With ``RAY_ADDRESS`` set, the tests join that cluster instead
    (``ray start --head --num-cpus 2``), for machines too loaded for ``ray.init`` to start one in its 30 s."""
    ray = pytest.importorskip("ray")
    kill_dir = tmp_path_factory.mktemp("kill-markers")
    env = {"runtime_env": {"env_vars": {KILL_ENV: str(kill_dir)}}, "logging_level": "ERROR"}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**env)
    else:
        ray.init(num_cpus=2, include_dashboard=False, **env)
    yield SimpleNamespace(ray=ray, kill_dir=kill_dir)
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    """Every entry of a folder (hidden temporary files included) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_corrupt_file_reported_others_coded_and_a_rerun_skips(cluster, photo_folder, tiny_model_dir, capsys):
    out = photo_folder.parent / "out"
    args = ["compress", str(photo_folder), "-o", str(out), "--model", str(tiny_model_dir), "--ray"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert sorted(_files(out)) == ["a.sodec", "b.sodec", "c.sodec", "d.sodec"]  # no temporary file left
    assert "summary: 5 files: 4 done, 0 skipped (output exists), 1 failed" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("sodec: failed:")]
    assert len(failed) == 1 and "e.png" in failed[0] and "not a readable image" in failed[0]
    assert "1 of 5 files failed" in captured.err
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    (out / "d.sodec").write_bytes(b"not ours")  # a foreign file under an output name: reported, kept
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "summary: 5 files: 0 done, 3 skipped (output exists), 2 failed" in captured.out
    assert captured.out.count("skipped, output exists") == 3
    assert "d.sodec exists but is not a valid .sodec file" in captured.err and "--force" in captured.err
    assert (out / "d.sodec").read_bytes() == b"not ours"
    assert {n: t for n, t in stamps.items() if n != "d.sodec"} == {
        p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "d.sodec"}  # verified, not rewritten


def test_same_bytes_as_jobs_1_compress_and_decompress(cluster, photo_folder, tiny_model_dir, capsys):
    (photo_folder / "e.png").unlink()
    root, model = photo_folder.parent, ["--model", str(tiny_model_dir)]
    for mode, extra in (("local", ["--jobs", "1"]), ("ray", ["--ray", "--jobs", "2"])):
        assert main(["compress", str(photo_folder), "-o", str(root / f"c-{mode}"), *model, *extra]) == 0
        assert main(["decompress", str(root / f"c-{mode}"), "-o", str(root / f"d-{mode}"), *model, *extra]) == 0
    assert capsys.readouterr().out.count("summary: 4 files: 4 done, 0 skipped (output exists), 0 failed") == 4
    for kind in ("c", "d"):
        local, on_ray = _files(root / f"{kind}-local"), _files(root / f"{kind}-ray")
        assert len(local) == 4 and local == on_ray


def test_a_worker_killed_mid_write_is_replaced_and_the_run_completes(cluster, photo_folder, tiny_model_dir, capsys):
    """The hook kills the worker coding ``kill-*.png`` after it has written part of a temporary file, once:
    Ray restarts the worker, the file is coded again, and no partial file is left behind."""
    (photo_folder / "e.png").unlink()
    (photo_folder / "kill-a.png").write_bytes((photo_folder / "a.png").read_bytes())
    root, model = photo_folder.parent, ["--model", str(tiny_model_dir), "-q"]
    assert main(["compress", str(photo_folder), "-o", str(root / "local"), *model]) == 0
    assert main(["compress", str(photo_folder), "-o", str(root / "ray"), *model, "--ray"]) == 0
    assert (cluster.kill_dir / "kill-a.sodec.local").exists()  # the worker really died, in the middle of a write
    assert _files(root / "ray") == _files(root / "local")  # every file complete and exact; no ".kill-a…tmp"
    assert "failed" not in capsys.readouterr().err


def test_a_file_that_kills_every_worker_fails_alone(cluster, tmp_path, photo_rgb, tiny_model_dir, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(photo_rgb).save(src / "a.png")
    Image.fromarray(photo_rgb).save(src / "kill-always.png")  # its worker dies on every attempt
    assert main(["compress", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--ray"]) == 2
    captured = capsys.readouterr()
    assert "summary: 2 files: 1 done, 0 skipped (output exists), 1 failed" in captured.out
    assert "kill-always.png: the worker process died" in captured.err and "(3 attempts)" in captured.err
    assert sorted(_files(out)) == ["a.sodec"]  # and the partial temporary files of the three deaths removed


def test_uris_go_through_pyarrow_fs(cluster, photo_folder, tiny_model_dir, capsys):
    """``file://`` URIs take the remote path (pyarrow.fs listing, staging, write-then-move) end to end."""
    (photo_folder / "e.png").unlink()
    root, model = photo_folder.parent, ["--model", str(tiny_model_dir)]
    assert main(["compress", str(photo_folder), "-o", str(root / "local"), *model, "-q"]) == 0
    uri_out = f"file://{root / 'remote'}"
    assert main(["compress", f"file://{photo_folder}", "-o", uri_out, *model, "--ray"]) == 0
    assert "4 done" in capsys.readouterr().out
    assert _files(root / "remote") == _files(root / "local")
    assert main(["compress", f"file://{photo_folder}", "-o", uri_out, *model, "--ray"]) == 0
    assert "0 done, 4 skipped (output exists)" in capsys.readouterr().out


def test_remote_upload_writes_a_temporary_key_then_moves_it(tmp_path):
    pytest.importorskip("pyarrow")
    from sodec import distributed

    local = tmp_path / "x.bin"
    local.write_bytes(b"payload")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / ".y.sodec.dead0000.tmp").write_bytes(b"left by a killed writer")
    distributed._upload(local, f"file://{tmp_path}/dst/y.sodec")
    assert (tmp_path / "dst" / "y.sodec").read_bytes() == b"payload"
    assert distributed.remove_stale_temps([f"file://{tmp_path}/dst/y.sodec"]) == 1
    assert sorted(os.listdir(tmp_path / "dst")) == ["y.sodec"]


def test_dataset_api_gives_the_bytes_of_the_cli(cluster, photo_folder, tiny_model_dir):
    from sodec import distributed

    (photo_folder / "e.png").write_bytes(b"broken")
    root = photo_folder.parent
    assert main(["compress", str(photo_folder), "-o", str(root / "c"), "--model", str(tiny_model_dir), "-q"]) == 2
    ray = cluster.ray
    ds = ray.data.read_binary_files(str(photo_folder), include_paths=True)
    rows = {Path(r["path"]).stem: r for r in
            distributed.compress_dataset(ds, tiny_model_dir, workers=2).take_all()}
    assert sorted(rows) == ["a", "b", "c", "d", "e"]
    assert rows["e"]["sodec"] is None and "not a readable image" in rows["e"]["error"]
    for stem in "abcd":
        assert rows[stem]["error"] is None
        assert rows[stem]["sodec"] == (root / "c" / f"{stem}.sodec").read_bytes()
        r = rows[stem]
        assert r["n_bytes"] == len(r["sodec"])
        assert r["bpp"] == pytest.approx(r["n_bytes"] * 8 / (r["width"] * r["height"]))
    assert main(["decompress", str(root / "c"), "-o", str(root / "d"), "--model", str(tiny_model_dir), "-q"]) == 0
    coded = ray.data.from_items([{"name": s, "sodec": rows[s]["sodec"]} for s in "abcd"])
    for r in distributed.decompress_dataset(coded, tiny_model_dir, workers=1).take_all():
        assert r["error"] is None and r["png"] == (root / "d" / f"{r['name']}.png").read_bytes()


def test_eval_on_ray_gives_the_numbers_of_sodec_eval(cluster, tmp_path, photo_rgb, tiny_model_dir):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(photo_rgb).save(data / "a.png")
    Image.fromarray(photo_rgb[:, ::-1]).save(data / "b.png")
    Image.fromarray(np.ascontiguousarray(photo_rgb[::-1])).save(data / "c.png")
    base = ["eval", "--data", str(data), "--model", str(tiny_model_dir), "--baselines", "jpeg", "--targets",
            "match,1", "--anchor", "jpeg", "--metrics", "psnr,ms_ssim,delta_e", "--crops", "1", "-q"]
    saved = warnings.showwarning
    try:
        assert main([*base, "--out", str(tmp_path / "here")]) == 0
        assert main([*base, "--out", str(tmp_path / "ray"), "--ray", "--jobs", "2"]) == 0
    finally:
        warnings.showwarning = saved
    here, on_ray = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("here", "ray"))
    timing = ("encode_s", "decode_s")

    def numbers(rows):
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    assert len(here["records"]) == 3 * (1 + 2)
    assert numbers(on_ray["records"]) == numbers(here["records"])
    assert numbers(on_ray["summary"]) == numbers(here["summary"])
    assert on_ray["bd"] == here["bd"] and on_ray["images"] == here["images"] and on_ray["notes"] == here["notes"]
    assert on_ray["meta"]["ray"]["workers"] == 2 and "ray" not in here["meta"]
    for name in ("files/sodec-r0/a.sodec", "recon/jpeg-match-r0/b.png", "crops/a_sodec-fidelity-r0.png"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name
    assert "**Ray**: 2 worker(s)" in (tmp_path / "ray" / "report.md").read_text()
