"""`sodec serve`: the HTTP API without a browser (tiny model), then the page end to end in headless Chromium.

The browser test serves the bundled nano model (in a thread of this process), drives Debian's ``chromium``
through ``chromedriver`` (selenium; no browser is downloaded), checks that SODEC's result is on the page while
the baselines are still to come (progressive rendering), then checks the numbers on the page against the files
it downloads.  It skips with the reason when Chromium, chromedriver or selenium is missing.
``SODEC_SCREENSHOT=docs/img/serve.png`` makes it code the full bundled photo instead of a 256x256 crop, with the
default metrics, and save a screenshot of the page there (the README's picture); ``-s`` shows its timings.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from PIL import Image

from sodec import api, container

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install 'sodec[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'sodec[serve]')")

from sodec.serve.app import ServeConfig, bind, create_app  # noqa: E402
from sodec.serve.jobs import JobQueue, QueueFull  # noqa: E402

# ------------------------------------------------------------------------------------------------ helpers


class ThreadServer:
    """The demo app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.app = create_app(cfg)
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def request(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, dict, bytes]:
    """``(status, headers, body)``; 4xx/5xx are returned, not raised."""
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, data: bytes) -> tuple[int, dict]:
    status, _, body = request(url, data)
    return status, json.loads(body)


def wait_job(base: str, job_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while True:
        status, _, body = request(f"{base}/api/jobs/{job_id}")
        assert status == 200, body
        job = json.loads(body)
        if job["state"] in ("done", "error"):
            return job
        assert time.time() < deadline, f"job still {job['state']} after {timeout} s: {job['stage']}"
        time.sleep(0.1)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir):
    """Tiny random model, JPEG only, PSNR + MS-SSIM: the API's behaviour in seconds."""
    s = ThreadServer(ServeConfig(model=str(tiny_model_dir), baselines=("jpeg",), metrics=("psnr", "ms_ssim"),
                                 queue=1))
    yield s
    s.stop()


# --------------------------------------------------------------------------------------------- API tests


def test_info_lists_rates_limits_and_metrics(tiny_server):
    status, _, body = request(f"{tiny_server.url}/api/info")
    info = json.loads(body)
    assert status == 200
    assert info["rates"] == [0] and info["default_rate"] == 0
    assert info["limits"]["max_pixels"] == 1920 * 1080 and info["limits"]["max_upload_bytes"] == 20_000_000
    assert [m["name"] for m in info["metrics"]] == ["psnr", "ms_ssim"]
    assert [b["name"] for b in info["baselines"]] == ["jpeg"] and info["baselines"][0]["available"]
    # the page and its local assets (no CDN: every script and stylesheet is served here)
    status, headers, page = request(f"{tiny_server.url}/")
    assert status == 200 and b"/static/app.js" in page and "default-src 'self'" in headers["content-security-policy"]
    assert not re.search(rb"https?://", re.sub(rb'href="/api/info"', b"", page))
    for asset in ("app.js", "style.css"):
        assert request(f"{tiny_server.url}/static/{asset}")[0] == 200


def test_compress_job_matches_its_files(tiny_server, photo_rgb):
    status, sub = post_json(f"{tiny_server.url}/api/compress?rate=0&name=my%20photo.png", png_bytes(photo_rgb))
    assert status == 202, sub
    job = wait_job(tiny_server.url, sub["job"])
    assert job["state"] == "done", job["error"]
    r = job["result"]
    assert (r["width"], r["height"], r["pixels"]) == (128, 96, 128 * 96)
    sodec, jpeg = r["codecs"]
    assert sodec["id"] == "sodec" and jpeg["id"] == "jpeg"
    status, headers, data = request(f"{tiny_server.url}/api/jobs/{job['id']}/files/{sodec['file']}?download=1")
    assert status == 200 and headers["content-disposition"] == 'attachment; filename="my photo.sodec"'
    assert len(data) == sodec["bytes"] == r["target"]["bytes"]
    assert sodec["bpp"] == pytest.approx(8 * len(data) / (128 * 96))
    header = container.unpack(data).header
    assert (header.width, header.height, header.model_name) == (128, 96, "tiny")
    # the PNG shown is what the file decodes to, and the PSNR shown is measured on it
    shown = np.asarray(Image.open(io.BytesIO(request(f"{tiny_server.url}/api/jobs/{job['id']}/files/sodec.png")[2])))
    decoded, _ = api.decompress_bytes(data, api.load_model(r["model"]["folder"], 0))
    np.testing.assert_array_equal(shown, np.asarray(decoded))
    assert sodec["metrics"]["psnr"] == pytest.approx(psnr(photo_rgb, shown), abs=1e-9)
    # 96 px is too small for 5-scale MS-SSIM: shown as n/a with the reason
    assert sodec["metrics"]["ms_ssim"] is None and "too small" in sodec["metric_notes"]["ms_ssim"]
    # JPEG at SODEC's size: the largest file not above it, or its smallest file, said so
    jpeg_data = request(f"{tiny_server.url}/api/jobs/{job['id']}/files/{jpeg['file']}")[2]
    assert len(jpeg_data) == jpeg["bytes"] and jpeg_data[:2] == b"\xff\xd8"
    if jpeg["status"] == "ok":
        assert jpeg["bytes"] <= sodec["bytes"]
    else:
        assert jpeg["status"] == "below_floor" and "cannot get as small" in jpeg["note"]
    assert jpeg["encode_ms"] >= 0 and jpeg["decode_ms"] >= 0 and jpeg["setting"].startswith("quality ")


def test_compress_publishes_sodec_first_then_each_baseline(tiny_server, photo_rgb):
    """The job's partial results: SODEC's file and image while the baseline still waits, then the baseline,
    then the metrics; every codec row is there from the start, and progress only grows, to 1."""
    engine, queue = tiny_server.app.state.engine, tiny_server.app.state.queue
    data = png_bytes(photo_rgb)
    seen = []

    def run(publish, outputs):
        def record(stage, result, progress=None):
            seen.append((stage, json.loads(json.dumps(result)), progress))
            publish(stage, result, progress)

        return engine.compress(data, "p.png", 0, record, outputs)

    job = queue.submit("compress", run)
    assert wait_job(tiny_server.url, job.id)["state"] == "done"
    rows = [{c["id"]: c for c in result["codecs"]} for _, result, _ in seen]
    assert all(list(r) == ["sodec", "jpeg"] for r in rows)  # every row from the first publish on
    first = next(i for i, r in enumerate(rows) if r["sodec"]["image"])
    assert rows[first]["sodec"]["bytes"] == seen[-1][1]["target"]["bytes"]
    assert rows[first]["jpeg"]["state"] == "waiting" and rows[first]["jpeg"]["bytes"] is None
    states = [r["jpeg"]["state"] for r in rows]
    assert [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]] == ["waiting", "coding", "measuring",
                                                                                  "done"]
    assert rows[-1]["sodec"]["metrics"].keys() == rows[-1]["jpeg"]["metrics"].keys() == {"psnr", "ms_ssim"}
    progress = [p for _, _, p in seen]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 1
    assert seen[-1][0] == "done"


# attachment; filename="ASCII without quotes or backslashes"[; filename*=UTF-8''percent-encoded] (RFC 6266/5987)
DISPOSITION = re.compile(r'(attachment|inline); filename="([ !#-\[\]-~]*)"'
                         r"(?:; filename\*=UTF-8''([A-Za-z0-9%._~-]+))?")


def offered_name(header: str) -> tuple[str, str]:
    """``(ASCII fallback, the name a browser saves under)`` from a well-formed Content-Disposition value."""
    m = DISPOSITION.fullmatch(header)
    assert m, f"malformed Content-Disposition: {header!r}"
    return m[2], urllib.parse.unquote(m[3], errors="strict") if m[3] else m[2]


def test_a_non_ascii_upload_name_downloads_under_that_name(tiny_server, photo_rgb):
    name = urllib.parse.quote("写真.png")
    status, sub = post_json(f"{tiny_server.url}/api/compress?rate=0&name={name}", png_bytes(photo_rgb))
    job = wait_job(tiny_server.url, sub["job"])
    assert status == 202 and job["state"] == "done", job["error"]
    sodec = job["result"]["codecs"][0]
    assert sodec["download_name"] == "写真.sodec"
    status, headers, data = request(f"{tiny_server.url}/api/jobs/{job['id']}/files/{sodec['file']}?download=1")
    assert status == 200 and len(data) == sodec["bytes"]
    assert headers["content-disposition"] == ("attachment; filename=\"__.sodec\"; "
                                              "filename*=UTF-8''%E5%86%99%E7%9C%9F.sodec")
    assert offered_name(headers["content-disposition"]) == ("__.sodec", "写真.sodec")


@pytest.mark.parametrize("filename", ["写真.png", 'say "cheese".png', "back\\slash 100%.png", "café.png", "plain.png"])
def test_every_file_name_gives_a_well_formed_download_header(tiny_server, filename):
    """Whatever name a job's file has (the server's own names included), its download header is well formed."""
    from sodec.serve.pipeline import Output

    def run(publish, outputs):
        outputs["note.txt"] = Output(b"hello", "text/plain", filename)

    job = tiny_server.app.state.queue.submit("test", run)
    assert wait_job(tiny_server.url, job.id)["state"] == "done"
    for query, disposition in (("?download=1", "attachment"), ("", "inline")):
        status, headers, data = request(f"{tiny_server.url}/api/jobs/{job.id}/files/note.txt{query}")
        assert status == 200 and data == b"hello"
        fallback, saved = offered_name(headers["content-disposition"].replace(disposition, "attachment", 1))
        assert saved == filename and fallback.isascii()


def test_colour_policy_warnings_reach_the_page(tiny_server, photo_rgb):
    rgba = np.dstack([photo_rgb, np.full(photo_rgb.shape[:2], 128, np.uint8)])
    code, sub = post_json(f"{tiny_server.url}/api/compress?name=a.png", png_bytes(rgba))
    job = wait_job(tiny_server.url, sub["job"])
    assert code == 202 and job["state"] == "done"
    assert job["result"]["warnings"] == ["a.png: alpha channel dropped (sodec codes colour only)"]
    gray = png_bytes(photo_rgb)  # re-encoded as 8-bit gray: coded as RGB, decoded as gray
    buf = io.BytesIO()
    Image.open(io.BytesIO(gray)).convert("L").save(buf, format="PNG")
    code, sub = post_json(f"{tiny_server.url}/api/compress?name=g.png", buf.getvalue())
    job = wait_job(tiny_server.url, sub["job"])
    assert job["state"] == "done" and job["result"]["color_mode"] == "GRAY" and job["result"]["warnings"] == []
    shown = Image.open(io.BytesIO(request(f"{tiny_server.url}/api/jobs/{job['id']}/files/sodec.png")[2]))
    assert shown.mode == "L" and shown.size == (128, 96)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"hello, this is not a picture", 415, "is not an image this server can read"),
        (b"", 400, "the upload is empty"),
        (b"GIF89a\x01\x00", 415, "is not an image"),
    ],
)
def test_bad_upload_gives_a_clear_4xx(tiny_server, body, status, message):
    code, answer = post_json(f"{tiny_server.url}/api/compress?name=notes.txt", body)
    assert code == status and message in answer["error"]


def test_sodec_sent_to_the_compressor_is_redirected(tiny_server, tiny_model, photo_rgb):
    code, answer = post_json(f"{tiny_server.url}/api/compress?name=a.sodec", api.compress_image(tiny_model, photo_rgb))
    assert code == 415 and "Decode a .sodec file" in answer["error"]


def test_unknown_rate_point(tiny_server, photo_rgb):
    code, answer = post_json(f"{tiny_server.url}/api/compress?rate=7", png_bytes(photo_rgb))
    assert code == 400 and "rate point '7' does not exist (available: 0)" in answer["error"]


def test_oversized_uploads_are_refused_with_the_limit(tiny_model_dir, photo_rgb):
    s = ThreadServer(ServeConfig(model=str(tiny_model_dir), baselines=(), metrics=("psnr",), max_pixels=64 * 64,
                                 max_upload_bytes=50_000, warm_up=False))
    try:
        code, answer = post_json(f"{s.url}/api/compress?name=big.png", png_bytes(photo_rgb))
        assert code == 413
        assert answer["error"].startswith("big.png is 128x96 = 12,288 pixels; this demo takes at most 4,096 pixels")
        code, answer = post_json(f"{s.url}/api/compress?name=huge.jpg", os.urandom(60_000))
        assert code == 413
        assert answer["error"] == ("huge.jpg is larger than this demo's upload limit of 50 kB (start the server "
                                   "with a larger --max-upload-mb)")
        info = json.loads(request(f"{s.url}/api/info")[2])
        assert info["limits"]["text"] == "at most 50 kB and 4,096 pixels per upload"
    finally:
        s.stop()


def test_sodec_upload_decodes_with_header_info(tiny_server, tiny_model, photo_rgb):
    data = api.compress_image(tiny_model, photo_rgb)
    code, sub = post_json(f"{tiny_server.url}/api/decompress?name=../../etc/x.sodec", data)
    assert code == 202
    job = wait_job(tiny_server.url, sub["job"])
    assert job["state"] == "done", job["error"]
    h = job["result"]["header"]
    assert (h["model"], h["rate_point"], h["width"], h["height"], h["bytes"]) == ("tiny", 0, 128, 96, len(data))
    assert h["bpp"] == pytest.approx(8 * len(data) / (128 * 96), abs=1e-6) and h["checksum"] == "ok"
    status, headers, png = request(f"{tiny_server.url}/api/jobs/{job['id']}/files/decoded.png?download=1")
    assert status == 200 and headers["content-disposition"] == 'attachment; filename="x.png"'
    decoded, _ = api.decompress_bytes(data, tiny_model)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(decoded))


def test_bad_sodec_uploads(tiny_server, tiny_model, photo_rgb, tmp_path):
    data = api.compress_image(tiny_model, photo_rgb)
    code, answer = post_json(f"{tiny_server.url}/api/decompress?name=cut.sodec", data[:-5])
    assert code == 400 and "cut.sodec: " in answer["error"] and "truncated" in answer["error"]
    code, answer = post_json(f"{tiny_server.url}/api/decompress?name=photo.png", png_bytes(photo_rgb))
    assert code == 415 and "photo.png is not a .sodec file" in answer["error"]
    # a file from another model: accepted, then the job says which model it needs
    other = api.compress_image(make_tiny_model(seed=1), photo_rgb)
    code, sub = post_json(f"{tiny_server.url}/api/decompress?name=other.sodec", other)
    job = wait_job(tiny_server.url, sub["job"])
    assert job["state"] == "error" and job["status"] == 422
    assert "other.sodec: the file was made with model 'tiny'" in job["error"]


def test_full_queue_answers_503_and_reports_positions(tiny_server, photo_rgb):
    engine = tiny_server.app.state.engine
    release = threading.Event()
    original = engine.compress

    def blocked(*args, **kwargs):
        release.wait(30)
        return original(*args, **kwargs)

    engine.compress = blocked
    try:
        body = png_bytes(photo_rgb)
        code, first = post_json(f"{tiny_server.url}/api/compress", body)
        assert code == 202
        deadline = time.time() + 10
        while json.loads(request(f"{tiny_server.url}/api/jobs/{first['job']}")[2])["state"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        code, second = post_json(f"{tiny_server.url}/api/compress", body)
        assert code == 202 and second["position"] == 1
        status, headers, raw = request(f"{tiny_server.url}/api/compress", body)
        assert status == 503 and headers["retry-after"] == "30"
        assert json.loads(raw)["error"].startswith("server busy: one image is being coded and 1 more request(s) "
                                                   "are waiting (the queue holds 1)")
        queued = json.loads(request(f"{tiny_server.url}/api/jobs/{second['job']}")[2])
        assert queued["state"] == "queued" and queued["position"] == 1
    finally:
        release.set()
        engine.compress = original
    assert wait_job(tiny_server.url, first["job"])["state"] == "done"
    assert wait_job(tiny_server.url, second["job"])["state"] == "done"


def test_job_queue_keeps_only_recent_results():
    q = JobQueue(max_waiting=2, keep=2)
    jobs = [q.submit("t", lambda publish, outputs, i=i: publish("done", {"i": i})) for i in range(2)]
    deadline = time.time() + 10
    while any(j.state != "done" for j in jobs):
        assert time.time() < deadline
        time.sleep(0.01)
    third = q.submit("t", lambda publish, outputs: None)
    while third.finished is None:
        time.sleep(0.01)
    assert q.get(jobs[0].id) is None and q.get(jobs[1].id) is jobs[1]
    assert jobs[1].snapshot(0)["result"] == {"i": 1}
    failing = q.submit("t", lambda publish, outputs: 1 / 0)
    while failing.finished is None:
        time.sleep(0.01)
    assert failing.state == "error" and failing.status == 500 and "ZeroDivisionError" in failing.error
    with pytest.raises(ValueError):
        JobQueue(max_waiting=-1)


def test_job_queue_refuses_a_request_beyond_max_waiting():
    q = JobQueue(max_waiting=1)
    gate = threading.Event()
    busy = q.submit("t", lambda publish, outputs: gate.wait(30))
    try:
        deadline = time.time() + 10
        while busy.state != "running":
            assert time.time() < deadline
            time.sleep(0.01)
        waiting = q.submit("t", lambda publish, outputs: None)  # one may wait
        with pytest.raises(QueueFull, match=r"^server busy: one image is being coded and 1 more request\(s\) are "
                                            r"waiting \(the queue holds 1\)"):
            q.submit("t", lambda publish, outputs: None)
        assert q.status() == {"ready": True, "warm_up_error": None, "running": True, "waiting": 1, "max_waiting": 1}
    finally:
        gate.set()
    while waiting.finished is None:
        time.sleep(0.01)
    assert busy.state == waiting.state == "done"


def test_engine_refuses_unknown_metrics_baselines_and_rates(tiny_model_dir):
    from sodec.errors import ModelError, SodecError
    from sodec.serve.pipeline import Engine, available_rates

    assert available_rates(str(tiny_model_dir)) == [0] == available_rates(str(tiny_model_dir / "rate-0"))
    with pytest.raises(SodecError, match="unknown or unsupported demo metric"):
        Engine(str(tiny_model_dir), metrics=("psnr", "fid256"))
    with pytest.raises(SodecError, match="unknown baseline"):
        Engine(str(tiny_model_dir), baselines=("gif",))
    with pytest.raises(ModelError, match="has no rate point 3"):
        Engine(str(tiny_model_dir), default_rate=3)
    with pytest.raises(ModelError, match="neither a model folder nor a bundled model"):
        Engine("no-such-model")


def test_cli_serve_reports_a_taken_port():
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "sodec.cli", "serve", "--port", str(port)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2
        assert f"sodec: error: cannot listen on 127.0.0.1:{port}" in r.stderr
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------- the real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def chromium():
    """Skip (with the reason) unless selenium, Chromium and chromedriver are all here."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'sodec[test]')")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install -y chromium "
                    "chromium-driver)")


def _browser(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.25)


def _downloaded(folder: Path, name: str, timeout: float = 30) -> Path:
    path = folder / name
    _wait(lambda: path.is_file() and not any(folder.glob("*.crdownload")), timeout, f"the download of {name}")
    return path


class Gate:
    """Holds every baseline search until released: the browser test can then see SODEC's result on the page
    while the baselines are still to come, whatever the machine's speed."""

    def __init__(self, encode_at_bpp) -> None:
        self.open = threading.Event()
        self.encode_at_bpp = encode_at_bpp

    def __call__(self, *args, **kwargs):
        assert self.open.wait(120), "the test never released the baselines"
        return self.encode_at_bpp(*args, **kwargs)


@pytest.fixture
def nano_server(monkeypatch):
    """The demo with the bundled nano model in this process (ready: model and metrics loaded), its baseline
    searches held by a :class:`Gate`; yields ``(url, gate)``."""
    from sodec.eval import baselines
    from sodec.serve.pipeline import DEFAULT_METRICS

    gate = Gate(baselines.encode_at_bpp)
    monkeypatch.setattr(baselines, "encode_at_bpp", gate)
    metrics = DEFAULT_METRICS if os.environ.get("SODEC_SCREENSHOT") else ("psnr", "ms_ssim", "lpips_alex")
    server = ThreadServer(ServeConfig(model="nano", metrics=metrics))
    try:
        deadline = time.time() + 900  # two cores shared with a training job: minutes
        while not json.loads(request(f"{server.url}/api/info")[2])["queue"]["ready"]:
            assert time.time() < deadline, "the model and metrics did not load"
            time.sleep(0.2)
        yield server.url, gate
    finally:
        gate.open.set()
        server.stop()


def test_browser_compress_compare_download_decode(chromium, nano_server, tmp_path):
    from selenium.webdriver.common.by import By

    url, gate = nano_server
    screenshot = os.environ.get("SODEC_SCREENSHOT")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Image.open(api.example_image()) as im:
        rgb = np.asarray(im.convert("RGB"))
    if not screenshot:
        rgb = rgb[128:384, 256:512].copy()  # 256x256: quick
    height, width = rgb.shape[:2]
    photo = tmp_path / "photo.png"
    Image.fromarray(rgb).save(photo)
    info = json.loads(request(f"{url}/api/info")[2])

    driver = _browser(downloads)
    try:
        driver.get(url + "/")
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#rate option"), 30, "the rate points")
        family = api.resolve_model_folder("nano").parent  # the page offers every bundled rate point
        rates = [str(r) for r in api.available_rates(family)]
        assert [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#rate option")] == rates
        assert "20 MB" in driver.find_element(By.ID, "limits").text

        def cell(codec: str, field: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, f'tr[data-codec="{codec}"] td[data-field="{field}"]').text

        def sodec_shown() -> bool:  # its file's size in the table and its reconstruction loaded in the gallery
            return driver.execute_script(
                "const b = document.querySelector('tr[data-codec=\"sodec\"] td[data-field=\"bytes\"]');"
                "const i = document.querySelector('figure[data-codec=\"sodec\"] img');"
                "return !!(b && /\\d/.test(b.textContent) && i && i.complete && i.naturalWidth > 0);")

        driver.find_element(By.ID, "photo").send_keys(str(photo))
        t0 = time.time()
        driver.find_element(By.ID, "compress-btn").click()
        status = driver.find_element(By.ID, "status")
        # progressive rendering: SODEC's result is on the page while every baseline is still to come (the gate
        # holds their searches until the page has shown it), with the progress bar and each row's state
        _wait(lambda: sodec_shown() or status.get_attribute("data-state") == "error", 600, "SODEC's result")
        first = time.time() - t0
        assert status.get_attribute("data-state") == "running", driver.find_element(By.ID, "error").text
        assert driver.find_element(By.ID, "progress").is_displayed()
        # one snapshot of the table (the page rebuilds it at every poll, so elements found earlier go stale)
        table = driver.execute_script(
            "return [...document.querySelectorAll('#result-body tr')].map((r) => [r.dataset.codec, r.dataset.status,"
            " r.dataset.state, r.querySelector('td[data-field=\"bytes\"]').textContent]);")
        assert [row[0] for row in table] == ["sodec", "heic", "avif", "jpeg"]
        for codec, row_status, state, shown in table[1:]:
            if row_status != "unavailable":
                assert (state, shown) in (("waiting", "…"), ("coding", "…")), codec
        gate.open.set()
        _wait(lambda: status.get_attribute("data-state") in ("done", "error"), 600, "the whole result")
        assert status.get_attribute("data-state") == "done", driver.find_element(By.ID, "error").text
        elapsed = time.time() - t0
        assert not driver.find_element(By.ID, "progress").is_displayed()
        assert {r.get_attribute("data-state") for r in driver.find_elements(By.CSS_SELECTOR, "#result-body tr")} \
            == {"done"}

        rows = [r.get_attribute("data-codec") for r in driver.find_elements(By.CSS_SELECTOR, "#result-body tr")]
        assert rows == ["sodec", "heic", "avif", "jpeg"]
        shown_bytes = int(cell("sodec", "bytes").replace(",", ""))
        assert cell("sodec", "bpp") == f"{8 * shown_bytes / (width * height):.4f}"

        # the .sodec file the button downloads has exactly the size shown
        button = driver.find_element(By.ID, "download-sodec")
        assert button.text == f"Download photo.sodec ({shown_bytes:,} bytes)"
        button.click()
        sodec_file = _downloaded(downloads, "photo.sodec")
        data = sodec_file.read_bytes()
        assert len(data) == shown_bytes
        header = container.unpack(data).header
        assert (header.width, header.height, header.model_name) == (width, height, "nano")

        # the PSNR shown is the PSNR of the reconstruction shown, which is what the file decodes to
        def fetch(selector: str) -> bytes:
            href = driver.find_element(By.CSS_SELECTOR, selector).get_attribute("href")
            status, _, body = request(href)
            assert status == 200
            return body

        recon = np.asarray(Image.open(io.BytesIO(fetch('tr[data-codec="sodec"] a.file[href*="sodec.png"]'))))
        job_id = re.search(r"/api/jobs/([^/]+)/", button.get_attribute("href"))[1]
        job = json.loads(request(f"{url}/api/jobs/{job_id}")[2])
        values = {c["id"]: c["metrics"] for c in job["result"]["codecs"]}
        assert recon.shape == rgb.shape
        assert cell("sodec", "psnr") == f"{psnr(rgb, recon):.2f}"
        decoded, _ = api.decompress_bytes(data)
        np.testing.assert_array_equal(recon, np.asarray(decoded))

        # each baseline: its file has the bytes shown, at most SODEC's unless it says that it cannot get so small
        magic = {"heic": b"ftyp", "avif": b"ftyp", "jpeg": b"\xff\xd8"}
        for codec in ("heic", "avif", "jpeg"):
            row = driver.find_element(By.CSS_SELECTOR, f'tr[data-codec="{codec}"]')
            if not next(b for b in info["baselines"] if b["name"] == codec)["available"]:  # e.g. no pillow-heif
                assert row.get_attribute("data-status") == "unavailable" and cell(codec, "bytes") == "—"
                continue
            native = fetch(f'tr[data-codec="{codec}"] a.file:not([href$=".png?download=1"])')
            assert magic[codec] in native[:12]
            n = int(cell(codec, "bytes").replace(",", ""))
            assert len(native) == n
            assert cell(codec, "bpp") == f"{8 * n / (width * height):.4f}"
            assert cell(codec, "size").startswith(f"{n / shown_bytes:.3f}×")
            if row.get_attribute("data-status") == "ok":
                assert n <= shown_bytes
            else:  # said plainly, in the table and in the notes under it
                assert row.get_attribute("data-status") == "below_floor" and n > shown_bytes
                assert cell(codec, "size").endswith("its minimum")
                notes = driver.find_element(By.ID, "notes").text
                assert f"cannot get as small as SODEC's {shown_bytes:,} bytes: its smallest file" in notes
            # every metric shown is the server's value, to the page's digits; PSNR is also measured here on
            # the PNG the page shows
            digits = {"psnr": 2, "delta_e": 2}
            for m in info["metrics"]:
                text = cell(codec, m["name"])
                if not m["available"]:
                    assert text == "unavailable"
                elif values[codec][m["name"]] is None:
                    assert text == "n/a"
                else:
                    assert text == f"{values[codec][m['name']]:.{digits.get(m['name'], 4)}f}"
            png = fetch(f'tr[data-codec="{codec}"] a.file[href$=".png?download=1"]')
            assert cell(codec, "psnr") == f"{psnr(rgb, np.asarray(Image.open(io.BytesIO(png)))):.2f}"
            assert re.fullmatch(r"[\d.]+ (ms|s)", cell(codec, "encode_ms"))

        # the before/after slider moves the clip of the reconstruction
        slider = driver.find_element(By.ID, "slider")
        driver.execute_script("arguments[0].value = 25; arguments[0].dispatchEvent(new Event('input'))", slider)
        assert "25%" in driver.find_element(By.ID, "view-after").get_attribute("style")
        driver.execute_script("arguments[0].value = 50; arguments[0].dispatchEvent(new Event('input'))", slider)
        assert driver.find_element(By.ID, "view-after").get_attribute("src").endswith("/files/sodec.png")

        if screenshot:
            path = Path(screenshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            bottom = driver.execute_script("return document.getElementById('result').getBoundingClientRect().bottom"
                                           " + window.scrollY + 16")
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1280, "height": int(bottom), "scale": 1},
            })  # fmt: skip
            path.write_bytes(base64.b64decode(shot["data"]))

        # decode the downloaded file in the second panel: header info and the same pixels, downloadable as PNG
        driver.find_element(By.ID, "sodec-file").send_keys(str(sodec_file))
        driver.find_element(By.ID, "decode-btn").click()
        dstatus = driver.find_element(By.ID, "decode-status")
        _wait(lambda: dstatus.get_attribute("data-state") in ("done", "error"), 120, "the decoded image")
        assert dstatus.get_attribute("data-state") == "done", driver.find_element(By.ID, "decode-error").text
        fields = {r.get_attribute("data-field"): r.find_element(By.TAG_NAME, "td").text
                  for r in driver.find_elements(By.CSS_SELECTOR, "#header-table tr")}
        assert fields["size"] == f"{width}×{height}" and fields["model"] == "nano"
        assert int(fields["bytes"].replace(",", "")) == len(data) and fields["checksum"] == "ok"
        driver.find_element(By.ID, "download-png").click()
        png = _downloaded(downloads, "photo.png")
        np.testing.assert_array_equal(np.asarray(Image.open(png)), recon)

        # a non-image in the decode box and in the photo box: a clear message on the page
        bad = tmp_path / "notes.sodec"
        bad.write_text("not a sodec file")
        driver.find_element(By.ID, "sodec-file").send_keys(str(bad))
        driver.find_element(By.ID, "decode-btn").click()
        _wait(lambda: driver.find_element(By.ID, "decode-error").text, 30, "the error message")
        assert "notes.sodec is not a .sodec file" in driver.find_element(By.ID, "decode-error").text
        text = tmp_path / "notes.txt"
        text.write_text("hello")
        driver.find_element(By.ID, "photo").send_keys(str(text))
        driver.find_element(By.ID, "compress-btn").click()
        _wait(lambda: driver.find_element(By.ID, "error").text, 30, "the error message")
        assert "notes.txt is not an image this server can read" in driver.find_element(By.ID, "error").text
        print(f"browser round trip ({width}x{height}): SODEC's result on the page after {first:.1f} s, all of it "
              f"after {elapsed:.1f} s")
    finally:
        driver.quit()
