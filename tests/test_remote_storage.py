"""Object stores for real: a local S3 server (moto's server mode, on 127.0.0.1, started here) reached the way a
user reaches S3 — pyarrow's S3 file system, endpoint and credentials from the environment — by the CLI and the
Python API, on this machine and on a Ray cluster (tests/ray_job.py, whose workers get the same environment).
What "atomic" means there is docs/scaling.md's: an object appears under its key only when complete."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray_job

from sodec.cli import main

BUCKET = "photos"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server with one bucket; this process's environment points pyarrow (and boto3) at it."""
    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("pyarrow")
    boto3 = pytest.importorskip("boto3")
    from sodec import uris

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "sodec-test", "AWS_SECRET_ACCESS_KEY": "sodec-test", "AWS_DEFAULT_REGION":
           "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    yield SimpleNamespace(env=env, client=client)
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    uris._FILESYSTEMS.clear()  # file systems opened on this server
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """A Ray job whose workers see the S3 environment, and a temporary folder of their own to check."""
    markers, worker_tmp = tmp_path_factory.mktemp("markers"), tmp_path_factory.mktemp("worker-tmp")
    ray = ray_job.start(markers, env_vars={**s3.env, "TMPDIR": str(worker_tmp)})
    yield SimpleNamespace(ray=ray, markers=markers, tmp=worker_tmp)
    ray.shutdown()


def _objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix/`` (folder markers aside), by name, with its bytes."""
    listing = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {o["Key"][len(prefix) + 1:]: s3.client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listing if not o["Key"].endswith("/")}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_bad_locations_give_one_line_and_exit_2(s3, photo_png, tiny_model_dir, capsys):
    model = ["--model", str(tiny_model_dir)]
    cases = [
        (["compress", "http://example.com/a.png", *model, "--ray"], "unsupported scheme 'http'"),
        (["compress", f"s3://{BUCKET}/nothing-here.png", *model], f"s3://{BUCKET}/nothing-here.png: no such file"),
        (["compress", str(photo_png), "-o", "s3://no-such-bucket/coded/", *model], "no-such-bucket"),
        (["decompress", f"s3://{BUCKET}/x.sodec?endpoint_override=elsewhere", *model], "URI options"),
    ]
    for args, says in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sodec: error: ") and says in err, err
    assert not _objects(s3, "coded")


def test_an_upload_killed_midway_leaves_no_object_under_its_key(s3, tmp_path):
    """A writer killed after sending part of a 12 MB multipart upload: the key still holds its old object,
    before and after the kill, and a new upload replaces it whole.  S3 keeps the unfinished upload's parts
    (invisible) until a lifecycle rule aborts them, as docs/scaling.md says."""
    key, uri = "atomic/big.sodec", f"s3://{BUCKET}/atomic/big.sodec"
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=b"old")
    big = tmp_path / "big.sodec"
    big.write_bytes(os.urandom(12 << 20))
    flag = tmp_path / "sent"
    writer = (  # uris.upload, whose process freezes once the bytes are written to the stream, before its close
        "import sys, time\nfrom pathlib import Path\nfrom sodec import uris\nreal = uris.filesystem\n"
        "class Stream:\n"
        "    def __init__(self, s): self.s = s\n"
        "    def __enter__(self): return self\n"
        "    def __exit__(self, *e): self.s.close()\n"
        "    def write(self, b):\n"
        "        self.s.write(b); Path(sys.argv[3]).touch(); time.sleep(600)\n"
        "class FS:\n"
        "    def __init__(self, fs): self.fs = fs\n"
        "    def __getattr__(self, a): return getattr(self.fs, a)\n"
        "    def open_output_stream(self, p): return Stream(self.fs.open_output_stream(p))\n"
        "uris.filesystem = lambda u: (FS(real(u)[0]), real(u)[1])\n"
        "uris.upload(Path(sys.argv[1]), sys.argv[2])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(big), uri, str(flag)])
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        uploads = []
        while not uploads and time.monotonic() < deadline:  # the first parts go out as the stream fills
            uploads = s3.client.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
        assert [u["Key"] for u in uploads] == [key]  # bytes are on their way...
        assert _objects(s3, "atomic") == {"big.sodec": b"old"}  # ...and the key still holds the old object
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _objects(s3, "atomic") == {"big.sodec": b"old"}  # killed mid-upload: nothing new, nothing partial
    from sodec import uris

    uris.upload(big, uri)
    assert _objects(s3, "atomic") == {"big.sodec": big.read_bytes()}


def test_file_uris_write_a_temporary_then_move_it(tmp_path):
    """On a file system with a rename, an upload goes through ``.NAME.RANDOM.tmp``; what a killed writer left
    is removed by the end-of-run clean-up."""
    pytest.importorskip("pyarrow")
    from sodec import batch, uris

    local = tmp_path / "x.bin"
    local.write_bytes(b"payload")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / ".y.sodec.dead0000.tmp").write_bytes(b"left by a killed writer")
    (tmp_path / "dst" / ".other.sodec.dead0000.tmp").write_bytes(b"not an output of this run")
    uris.upload(local, f"file://{tmp_path}/dst/y.sodec")
    assert (tmp_path / "dst" / "y.sodec").read_bytes() == b"payload"
    assert batch.remove_stale_temps([f"file://{tmp_path}/dst/y.sodec"]) == 1
    assert sorted(os.listdir(tmp_path / "dst")) == [".other.sodec.dead0000.tmp", "y.sodec"]


def test_local_photos_to_a_bucket_and_back(cluster, s3, photo_folder, tiny_model_dir, capsys):
    """The first thing a user does: upload local photos, coded, to a bucket; decode them back; rerun."""
    root, model = photo_folder.parent, ["--model", str(tiny_model_dir), "-q"]
    assert main(["compress", str(photo_folder), "-o", str(root / "c"), *model]) == 2  # e.png is corrupt
    assert main(["decompress", str(root / "c"), "-o", str(root / "d"), *model]) == 0
    capsys.readouterr()
    coded = f"s3://{BUCKET}/coded"
    assert main(["compress", str(photo_folder), "-o", coded + "/", *model, "--ray"]) == 2
    assert "e.png: not a readable image" in capsys.readouterr().err
    assert _objects(s3, "coded") == _files(root / "c")  # the bytes of a local run; nothing partial
    assert main(["decompress", coded, "-o", str(root / "d-ray"), *model, "--ray"]) == 0
    assert _files(root / "d-ray") == _files(root / "d")
    capsys.readouterr()
    assert main(["compress", str(photo_folder), "-o", coded, "--model", str(tiny_model_dir), "--ray"]) == 2
    assert "summary: 5 files: 0 done, 4 skipped (output exists), 1 failed" in capsys.readouterr().out


def test_bucket_to_bucket_from_python_with_a_corrupt_object_and_a_killed_upload(cluster, s3, photo_folder,
                                                                                 tiny_model_dir, capsys):
    """``batch.run_files`` with a Ray runner, no CLI: the corrupt object is reported, the worker killed in
    the middle of uploading ``kill-upload-a.sodec`` is replaced and the file retried; the bucket holds only
    whole objects, the bytes of a local run; the workers' staging folders are gone."""
    from sodec import batch, distributed

    (photo_folder / "kill-upload-a.png").write_bytes((photo_folder / "a.png").read_bytes())
    for p in photo_folder.iterdir():
        s3.client.put_object(Bucket=BUCKET, Key=f"in/{p.name}", Body=p.read_bytes())
    task = batch.Task("compress", str(tiny_model_dir))
    runner = distributed.ray_runner(workers=2, quiet=True)
    assert batch.run_files(task, f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", runner=runner, quiet=True) == 2
    err = capsys.readouterr().err
    assert err.count("sodec: error:") == 1 and "e.png: not a readable image" in err
    assert (cluster.markers / "kill-upload-a.sodec").exists()  # a worker really died mid-upload
    assert batch.run_files(task, photo_folder, photo_folder.parent / "local", quiet=True) == 2
    assert _objects(s3, "out") == _files(photo_folder.parent / "local")
    assert _objects(s3, "out")["kill-upload-a.sodec"] == _objects(s3, "out")["a.sodec"]
    assert not list(cluster.tmp.iterdir())  # every staging folder removed
