"""``--ray``: folder jobs and ``sodec eval`` on a local two-CPU Ray cluster, and the Dataset API.  The same
guarantees as ``--jobs`` (tests/test_batch.py) and the same bytes and numbers as the single-process path.
Workers are killed by the faults of tests/ray_job.py; object stores are in tests/test_remote_storage.py."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import ray_job
from PIL import Image

from sodec.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_without_ray_one_error_names_the_extra(monkeypatch, photo_png, tiny_model_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    model = ["--model", str(tiny_model_dir)]
    assert main(["compress", str(photo_png), "-o", str(tmp_path / "a.sodec"), *model, "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sodec: error: --ray needs the ray extra" in err
    install = "pip install -e '.[ray]'"  # sodec is not on PyPI: the docs install the extra from a checkout
    assert install in err
    for doc in ("README.md", "docs/scaling.md"):
        assert f".venv/bin/{install}" in (ROOT / doc).read_text(), doc
    assert not (tmp_path / "a.sodec").exists()
    assert main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *model, "--ray", "-q"]) == 2
    assert install in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("verb", ["compress", "decompress", "eval"])
def test_devices_default_alike_in_every_verb(verb):
    from sodec.cli import _device, build_parser

    args = ["--data", "d", "--out", "o"] if verb == "eval" else ["x"]
    assert _device(build_parser().parse_args([verb, *args])) == "cpu"
    assert _device(build_parser().parse_args([verb, *args, "--ray"])) == "auto"  # each worker's GPU, if any
    assert _device(build_parser().parse_args([verb, *args, "--ray", "--device", "cpu"])) == "cpu"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray job for this module (tests/ray_job.py); ``markers`` holds the fault-injection markers."""
    markers = tmp_path_factory.mktemp("markers")
    ray = ray_job.start(markers)
    yield type("Cluster", (), {"ray": ray, "markers": markers})
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    """Every entry of a folder (hidden temporary files included) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_corrupt_file_reported_others_coded_and_a_rerun_skips(cluster, photo_folder, tiny_model_dir, capsys):
    out = photo_folder.parent / "out"
    args = ["compress", str(photo_folder), "-o", str(out), "--model", str(tiny_model_dir), "--ray"]
    assert main([*args, "--jobs", "1"]) == 2
    captured = capsys.readouterr()
    assert "sodec: ray: 1 worker(s) on a cluster of 2 CPUs" in captured.err  # --jobs 1 is one worker
    assert sorted(_files(out)) == ["a.sodec", "b.sodec", "c.sodec", "d.sodec"]  # no temporary file left
    assert "summary: 5 files: 4 done, 0 skipped (output exists), 1 failed" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("sodec: failed:")]
    assert len(failed) == 1 and "e.png" in failed[0] and "not a readable image" in failed[0]
    assert "1 of 5 files failed" in captured.err
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    (out / "d.sodec").write_bytes(b"not ours")  # a foreign file under an output name: reported, kept
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "sodec: ray: 2 worker(s)" in captured.err  # the default: one per CPU
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


def test_a_worker_killed_inside_atomic_write(cluster, photo_folder, tiny_model_dir, capsys):
    """``kill-a.png``'s worker is killed inside atomic_write, its temporary file written but not renamed,
    once; ``kill-always.png``'s on each attempt.  Ray restarts the worker, the pool retries the file: the
    first is coded on its second attempt, the second is reported after three, with what Ray said, and the
    others are done.  No temporary file is left, and a rerun without the fault codes the rest."""
    (photo_folder / "e.png").unlink()
    for name in ("kill-a.png", "kill-always.png"):
        (photo_folder / name).write_bytes((photo_folder / "a.png").read_bytes())
    root, model = photo_folder.parent, ["--model", str(tiny_model_dir), "-q"]
    assert main(["compress", str(photo_folder), "-o", str(root / "ray"), *model, "--ray"]) == 2
    err = capsys.readouterr().err
    assert (cluster.markers / "kill-a.sodec").exists()  # its worker really was killed, in the middle of a write
    assert err.count("sodec: error:") == 1
    assert "kill-always.png: not coded after 3 attempts: each time its worker was lost (Ray: " in err
    assert sorted(_files(root / "ray")) == ["a.sodec", "b.sodec", "c.sodec", "d.sodec", "kill-a.sodec"]

    (cluster.markers / "disarmed").touch()
    try:
        assert main(["compress", str(photo_folder), "-o", str(root / "ray"), *model, "--ray"]) == 0
    finally:
        (cluster.markers / "disarmed").unlink()
    assert main(["compress", str(photo_folder), "-o", str(root / "local"), *model]) == 0
    assert _files(root / "ray") == _files(root / "local")  # every file complete and exact; no ".kill-…tmp"


def test_a_pool_whose_workers_cannot_start_reports_every_item_and_ends(cluster):
    from sodec.distributed import ActorPool

    pool = ActorPool(ray_job.BrokenWorker, {}, 2, 0.5, 0)
    results, failures = [], {}
    try:
        pool.run([("a",), ("b",), ("c",)], lambda k, v: results.append(v), failures.__setitem__)
    finally:
        pool.close()
    assert not results and sorted(failures) == [0, 1, 2]
    assert all(why.endswith("no worker is left (the last one: the worker failed to start: ValueError: no model "
                            "on this node)") for why in failures.values()), failures


def test_local_folder_to_a_uri(cluster, photo_folder, tiny_model_dir, capsys):
    """A local SRC with a URI output pairs as a local run does, through pyarrow.fs (it crashed before); the
    files are those of a local run, and a rerun skips them.  Object stores: tests/test_remote_storage.py."""
    (photo_folder / "e.png").unlink()
    root, model = photo_folder.parent, ["--model", str(tiny_model_dir)]
    assert main(["compress", str(photo_folder), "-o", str(root / "local"), *model, "-q"]) == 0
    uri_out = f"file://{root / 'remote'}"
    assert main(["compress", str(photo_folder), "-o", uri_out, *model, "--ray"]) == 0
    assert "4 done" in capsys.readouterr().out
    assert _files(root / "remote") == _files(root / "local")
    assert main(["compress", str(photo_folder), "-o", uri_out, *model, "--ray"]) == 0
    assert "0 done, 4 skipped (output exists)" in capsys.readouterr().out


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
    assert rows["e"]["sodec"] is None and "e.png: not a readable image" in rows["e"]["error"]
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


def test_eval_on_ray_gives_the_numbers_of_sodec_eval_and_tolerates_failing_images(
        cluster, tmp_path, photo_rgb, tiny_model_dir, capsys):
    """Both runs report the unreadable ``d.png`` and go on (exit 2); on Ray, ``die-e.png`` kills every
    worker that reads it and is reported after three attempts.  The other images' numbers are equal."""
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(photo_rgb).save(data / "a.png")
    Image.fromarray(photo_rgb[:, ::-1]).save(data / "b.png")
    Image.fromarray(np.ascontiguousarray(photo_rgb[::-1])).save(data / "c.png")
    (data / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n not a whole PNG")
    base = ["eval", "--data", str(data), "--model", str(tiny_model_dir), "--baselines", "jpeg", "--targets",
            "match,1", "--anchor", "jpeg", "--metrics", "psnr,ms_ssim,delta_e", "--crops", "1", "-q"]
    saved = warnings.showwarning
    try:
        assert main([*base, "--out", str(tmp_path / "here")]) == 2
        here_err = capsys.readouterr().err
        Image.fromarray(photo_rgb).save(data / "die-e.png")
        assert main([*base, "--out", str(tmp_path / "ray"), "--ray", "--jobs", "2"]) == 2
        ray_err = capsys.readouterr().err
    finally:
        warnings.showwarning = saved
    assert "d.png: not a readable image" in here_err and "1 of 4 images failed" in here_err
    assert "d.png: not a readable image" in ray_err and "2 of 5 images failed" in ray_err
    assert "die-e.png: not coded after 3 attempts: each time its worker was lost (Ray: " in ray_err
    here, on_ray = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("here", "ray"))
    timing = ("encode_s", "decode_s")

    def numbers(rows):
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    assert len(here["records"]) == 3 * (1 + 2)
    assert numbers(on_ray["records"]) == numbers(here["records"])
    assert numbers(on_ray["summary"]) == numbers(here["summary"])
    assert on_ray["bd"] == here["bd"] and on_ray["images"] == here["images"] and on_ray["notes"] == here["notes"]
    assert [f.split(":")[0] for f in on_ray["failed_images"]] == [str(data / "d.png"), str(data / "die-e.png")]
    assert on_ray["meta"]["ray"]["workers"] == 2 and "ray" not in here["meta"]
    assert on_ray["meta"]["device"] == "auto" and here["meta"]["device"] == "cpu"
    for name in ("files/sodec-r0/a.sodec", "recon/jpeg-match-r0/b.png", "crops/a_sodec-fidelity-r0.png"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name
    report = (tmp_path / "ray" / "report.md").read_text()
    assert "**Ray**: 2 worker(s)" in report and "2 failed" in report and "die-e.png" in report
