"""Folder runs: ``--jobs N`` workers, resumable (existing outputs skipped), a summary, exit 2 on any failure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from sodec.batch import Task, run
from sodec.cli import main


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_corrupt_file_is_reported_and_the_rest_compressed_then_skipped(photo_folder, tiny_model_dir, capsys):
    out = photo_folder.parent / "out"
    args = ["compress", str(photo_folder), "-o", str(out), "--model", str(tiny_model_dir)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert _names(out) == ["a.sodec", "b.sodec", "c.sodec", "d.sodec"]  # nothing else: no temporary files
    assert "summary: 5 files: 4 done, 0 skipped (output exists), 1 failed" in captured.out
    total = sum((out / n).stat().st_size for n in _names(out))
    assert f"{total} bytes of .sodec" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("sodec: failed:")]
    assert len(failed) == 1 and "e.png" in failed[0] and "not a readable image" in failed[0]
    assert "1 of 5 files failed" in captured.err
    stamps = {n: (out / n).stat().st_mtime_ns for n in _names(out)}

    # Re-running skips what is finished (and says so); the corrupt file still fails.
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "summary: 5 files: 0 done, 4 skipped (output exists), 1 failed" in captured.out
    assert f"{total} bytes of .sodec" in captured.out  # skipped files count in the totals
    assert captured.out.count("skipped, output exists") == 4
    assert {n: (out / n).stat().st_mtime_ns for n in _names(out)} == stamps  # not rewritten

    # An interrupted run: one output missing is the only one coded again.
    (out / "c.sodec").unlink()
    assert main([*args, "-q"]) == 2
    assert _names(out) == ["a.sodec", "b.sodec", "c.sodec", "d.sodec"]
    assert (out / "a.sodec").stat().st_mtime_ns == stamps["a.sodec"]
    assert capsys.readouterr().out == ""  # -q: no per-file lines, no summary; failures still on stderr

    # --force redoes everything.
    assert main([*args, "--force"]) == 2
    assert "4 done, 0 skipped" in capsys.readouterr().out


def test_jobs_2_writes_the_same_bytes_as_jobs_1(photo_folder, tiny_model_dir, capsys):
    (photo_folder / "e.png").unlink()
    root = photo_folder.parent
    model = ["--model", str(tiny_model_dir)]
    for jobs in (1, 2):
        assert main(["compress", str(photo_folder), "-o", str(root / f"c{jobs}"), "--jobs", str(jobs), *model]) == 0
        assert main(["decompress", str(root / f"c{jobs}"), "-o", str(root / f"d{jobs}"), "-j", str(jobs), *model]) == 0
    out = capsys.readouterr().out
    assert out.count("summary: 4 files: 4 done, 0 skipped (output exists), 0 failed") == 4
    for kind in ("c", "d"):
        names = _names(root / f"{kind}1")
        assert len(names) == 4 and names == _names(root / f"{kind}2")
        for n in names:
            assert (root / f"{kind}1" / n).read_bytes() == (root / f"{kind}2" / n).read_bytes(), n
    with Image.open(root / "d2" / "c.png") as im:
        assert im.mode == "L" and im.size == (64, 64)


def test_parallel_run_reports_failures_and_skips(photo_folder, tiny_model_dir, capsys):
    out = photo_folder.parent / "out"
    out.mkdir()
    Image.fromarray(__import__("numpy").zeros((8, 8, 3), "uint8")).save(out / "a.sodec", format="PNG")  # foreign
    args = ["compress", str(photo_folder), "-o", str(out), "--model", str(tiny_model_dir), "--jobs", "2"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "3 done, 0 skipped (output exists), 2 failed" in captured.out
    assert "a.sodec exists but is not a valid .sodec file" in captured.err and "--force" in captured.err
    assert (out / "a.sodec").read_bytes()[:4] == b"\x89PNG"  # a file we did not write is never overwritten
    assert main([*args, "--force"]) == 2
    assert "4 done" in capsys.readouterr().out and (out / "a.sodec").read_bytes()[:3] == b"SDC"
    assert main(args) == 2
    assert "0 done, 4 skipped (output exists), 1 failed" in capsys.readouterr().out


def test_skipping_checks_model_and_size(photo_folder, tiny_model_dir, tmp_path, capsys):
    from conftest import make_tiny_model

    (photo_folder / "e.png").unlink()
    out, png = tmp_path / "out", tmp_path / "png"
    assert main(["compress", str(photo_folder), "-o", str(out), "--model", str(tiny_model_dir), "-q"]) == 0
    other = tmp_path / "other"
    make_tiny_model(seed=3, name="other").save_pretrained(other / "rate-0")
    capsys.readouterr()
    assert main(["compress", str(photo_folder), "-o", str(out), "--model", str(other), "-q"]) == 2
    assert "made with model 'tiny' rate 0, not 'other' rate 0" in capsys.readouterr().err
    png.mkdir()
    Image.new("RGB", (5, 5)).save(png / "a.png")  # the wrong size: not this run's output
    assert main(["decompress", str(out), "-o", str(png), "--model", str(tiny_model_dir), "-q"]) == 2
    err = capsys.readouterr().err
    assert "a.png exists but is not the 128x96 PNG" in err and "1 of 4 files failed" in err
    assert main(["decompress", str(out), "-o", str(png), "--model", str(tiny_model_dir)]) == 2
    assert "0 done, 3 skipped (output exists), 1 failed" in capsys.readouterr().out


def test_two_inputs_with_one_output_name(tmp_path, photo_rgb, tiny_model_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo_rgb).save(src / "x.png")
    Image.fromarray(photo_rgb).save(src / "x.jpg")
    assert main(["compress", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "x.png: its output" in err and "also the output of" in err and "x.jpg" in err
    assert _names(tmp_path / "out") == ["x.sodec"]


def test_jobs_must_be_positive(photo_png, tiny_model_dir, capsys):
    assert main(["compress", str(photo_png), "--model", str(tiny_model_dir), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_single_file_keeps_refusing_an_existing_output(photo_png, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "o.sodec"
    out.write_bytes(b"keep")
    assert main(["compress", str(photo_png), "-o", str(out), "--model", str(tiny_model_dir), "-j", "2"]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep"


@dataclass(frozen=True)
class _DyingTask(Task):
    """Kills its worker process on ``die.png`` (as the kernel's OOM killer would); reports its thread count."""

    def run(self, source, output):
        import torch

        if source.name == "die.png":
            os._exit(1)
        output.write_text(str(torch.get_num_threads()))
        return _Result(1, 8, 8)


@dataclass(frozen=True)
class _Result:
    n_bytes: int
    width: int
    height: int


def test_a_dying_worker_fails_only_its_own_file(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    names = ["a.png", "b.png", "die.png", "d.png", "e.png"]
    for n in names:
        (src / n).write_bytes(b"x")
    pairs = [(src / n, out / (n[:-4] + ".txt")) for n in names]
    code = run(pairs, _DyingTask("compress"), folder=True, jobs=2, threads=4, quiet=True)
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("sodec: error:") == 1 and "die.png: the worker process died" in err
    assert _names(out) == ["a.txt", "b.txt", "d.txt", "e.txt"]
    assert {(out / n).read_text() for n in _names(out)} == {"2"}  # 4 threads shared by 2 workers


def test_workers_print_one_line_warnings_without_the_cli():
    """Library code does not depend on the CLI: a worker's setup takes its console helpers from sodec.console."""
    import subprocess
    import sys

    code = ("import sys, warnings\n"
            "from sodec import batch, console\n"
            "batch._init_worker(batch.Task('decompress'), 1)\n"
            "assert warnings.showwarning is console.warn_one_line\n"
            "assert 'sodec.cli' not in sys.modules, 'batch imported the CLI'\n"
            "warnings.warn('first frame only')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "sodec: warning: first frame only\n"


def test_ctrl_c_finishes_the_files_in_progress_exits_130_and_a_rerun_codes_the_rest(tmp_path, photo_rgb,
                                                                                     tiny_model_dir):
    """docs/robustness.md: Ctrl-C stops starting files, lets those in progress finish, exits 130; what it wrote
    is complete (no temporary file left) and the next run skips it and codes only what is missing."""
    import signal
    import subprocess
    import sys
    import time

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(400):  # far more than two workers code before the signal lands
        Image.fromarray(photo_rgb[i % 16:, (7 * i) % 16:]).save(src / f"p{i:03d}.png")
    cmd = [sys.executable, "-m", "sodec.cli", "compress", str(src), "-o", str(out), "--model", str(tiny_model_dir),
           "--jobs", "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.sodec"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    written = sorted(out.iterdir())
    assert all(p.suffix == ".sodec" and not p.name.startswith(".") for p in written), "temporary files left"
    assert 0 < len(written) < 400
    for p in written:  # each one complete: its CRC-32 over the whole file checks
        assert main(["info", str(p)]) == 0
    assert main(["compress", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--jobs", "2", "-q"]) == 0
    assert len(list(out.glob("*.sodec"))) == 400
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_one_pairing_rule_for_paths_uris_and_both(photo_folder, tmp_path):
    """Local paths and URIs pair alike (one rule, sodec.batch.pair_files), in any mix; an output ending in
    ``/`` is a folder, for a local path as for a URI."""
    pytest.importorskip("pyarrow")
    from sodec import uris
    from sodec.batch import pair_files

    local, is_folder = pair_files(photo_folder, tmp_path / "out", "compress")
    remote, remote_is_folder = pair_files(f"file://{photo_folder}", f"file://{tmp_path}/out-uri/", "compress")
    assert is_folder and remote_is_folder
    assert [(s.name, d.name) for s, d in local] == [(uris.name(s), uris.name(d)) for s, d in remote]
    assert [d.name for _, d in local] == ["a.sodec", "b.sodec", "c.sodec", "d.sodec", "e.sodec"]
    assert (tmp_path / "out").is_dir() and (tmp_path / "out-uri").is_dir()
    mixed, _ = pair_files(photo_folder, f"file://{tmp_path}/mixed", "compress")
    assert mixed[0] == (photo_folder / "a.png", f"file://{tmp_path}/mixed/a.sodec")
    assert pair_files(photo_folder / "a.png", f"{tmp_path}/new/", "compress") == (
        [(photo_folder / "a.png", tmp_path / "new" / "a.sodec")], False)
    assert pair_files(f"file://{photo_folder}/a.png", f"file://{tmp_path}/new2/", "compress") == (
        [(f"file://{photo_folder}/a.png", f"file://{tmp_path}/new2/a.sodec")], False)
    assert pair_files(f"file://{photo_folder}/a.png", None, "compress")[0] == [
        (f"file://{photo_folder}/a.png", f"file://{photo_folder}/a.sodec")]


def test_uris_without_ray_in_worker_processes(photo_folder, tiny_model_dir, tmp_path, capsys):
    """``--jobs 2`` codes a file:// folder with the same rules and bytes as a local one, and no staging
    folder is left behind."""
    pytest.importorskip("pyarrow")
    import tempfile

    model = ["--model", str(tiny_model_dir), "-q"]
    assert main(["compress", str(photo_folder), "-o", str(tmp_path / "local"), *model]) == 2
    assert main(["compress", f"file://{photo_folder}", "-o", str(tmp_path / "uri"), "--jobs", "2", *model]) == 2
    assert "e.png: not a readable image" in capsys.readouterr().err
    assert {n: (tmp_path / "uri" / n).read_bytes() for n in _names(tmp_path / "uri")} == {
        n: (tmp_path / "local" / n).read_bytes() for n in _names(tmp_path / "local")}
    assert not list(Path(tempfile.gettempdir()).glob("sodec-stage-*"))  # every worker's staging folders
