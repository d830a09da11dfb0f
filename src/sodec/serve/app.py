"""``sodec serve``: a small Starlette app (served by uvicorn) around :mod:`sodec.serve.pipeline`.

HTTP API (every error is JSON ``{"error": "<one clear sentence>"}`` with a 4xx/5xx status):

| method, path                         | body              | answer                                             |
|--------------------------------------|-------------------|----------------------------------------------------|
| ``GET /``                            |                   | the page (``static/``: local JS and CSS, no CDN)   |
| ``GET /api/info``                    |                   | model, rate points, limits, baselines, metrics     |
| ``GET /api/example``                 |                   | the bundled photo (PNG)                            |
| ``POST /api/compress?rate=R&name=N`` | the image's bytes | 202 ``{"job": id, "position": p}``; 4xx; 503 busy  |
| ``POST /api/decompress?name=N``      | a `.sodec` file   | 202 ``{"job": id, ...}``; 4xx; 503 busy            |
| ``GET /api/jobs/ID``                 |                   | state, position, stage, progress, partial result   |
| ``GET /api/jobs/ID/files/KEY``       |                   | one of the job's files (``?download=1``: attached)  |

A job's result grows while it runs (SODEC's file and image first, then each baseline, then the metrics): the
page polls ``/api/jobs/ID`` and shows each part as it arrives.  Uploads are raw request bodies
(``fetch(url, {method: "POST", body: file})``, ``curl --data-binary @photo.jpg``), so no multipart parser is
needed; their size is checked while they arrive.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from sodec import __version__
from sodec.errors import SodecError
from sodec.serve.jobs import JobQueue, QueueFull
from sodec.serve.pipeline import DEFAULT_BASELINES, DEFAULT_METRICS, Engine
from sodec.serve.uploads import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    Limits,
    UploadError,
    format_bytes,
    probe_image,
    probe_sodec,
)

STATIC = Path(__file__).parent / "static"
CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'"
log = logging.getLogger("sodec.serve")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    model: str = "nano"
    rate: int | None = None  # the rate point selected when the page opens (default: the smallest)
    device: str = "cpu"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = 4  # requests allowed to wait while one is coded
    keep: int = 16  # finished jobs whose results stay downloadable
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    metrics: tuple[str, ...] = DEFAULT_METRICS
    warm_up: bool = True
    engine: Engine | None = field(default=None, repr=False)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_upload_bytes, self.max_pixels)


def _safe_name(name: str | None, default: str) -> str:
    """A display/download file name from the client: its last path part, harmless characters only
    (letters and digits of any script, ``.``, ``_``, ``-`` and spaces; anything else becomes ``_``)."""
    name = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    name = re.sub(r"[^\w. -]+", "_", name).strip(" .")[:100]
    return name or default


def content_disposition(disposition: str, filename: str) -> str:
    """A ``Content-Disposition`` value for any file name (RFC 6266): ``filename="…"``, ASCII with quotes,
    backslashes, ``%`` and anything outside printable ASCII replaced by ``_``, then, where that lost
    something, the exact name as ``filename*=UTF-8''…`` (RFC 5987 percent-encoding), which browsers prefer.
    The header stays Latin-1-encodable whatever the name (a raw ``写真.png`` would make the server answer 500).
    """
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", filename)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"
    return value


def create_app(cfg: ServeConfig):
    """The ASGI app: one :class:`Engine` behind one :class:`JobQueue`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    engine = cfg.engine or Engine(cfg.model, tuple(cfg.baselines), tuple(cfg.metrics), cfg.device, cfg.limits,
                                  default_rate=cfg.rate)
    engine.limits = cfg.limits
    queue = JobQueue(cfg.queue, cfg.keep, engine.warm_up if cfg.warm_up else None)
    limits = cfg.limits

    def error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    async def read_body(request: Request, what: str) -> bytes:
        too_big = (f"{what} is larger than this demo's upload limit of {format_bytes(limits.max_upload_bytes)} "
                   "(start the server with a larger --max-upload-mb)")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
            raise UploadError(413, too_big)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_upload_bytes:
                raise UploadError(413, too_big)
            chunks.append(chunk)
        return b"".join(chunks)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP,
                                                             "Cache-Control": "no-cache"})

    async def info(request: Request) -> Response:
        return JSONResponse({
            "version": __version__,
            "model": str(cfg.model),
            "rates": engine.rates,
            "default_rate": engine.default_rate,
            "limits": {"max_upload_bytes": limits.max_upload_bytes, "max_pixels": limits.max_pixels,
                       "text": limits.describe()},
            "baselines": engine.baseline_info(),
            "metrics": engine.metric_info(),
            "queue": queue.status(),
        })  # fmt: skip

    async def example(request: Request) -> Response:
        from sodec.api import example_image

        return FileResponse(example_image(), media_type="image/png", filename="dandelions.png",
                            content_disposition_type="inline")

    def submitted(job) -> JSONResponse:
        return JSONResponse({"job": job.id, "position": queue.position(job), "url": f"/api/jobs/{job.id}"},
                            status_code=202)

    async def compress(request: Request) -> Response:
        name = _safe_name(request.query_params.get("name"), "image")
        rate_text = request.query_params.get("rate", str(engine.default_rate))
        if not rate_text.lstrip("-").isdigit() or int(rate_text) not in engine.rates:
            return error(400, f"rate point {rate_text!r} does not exist (available: "
                              f"{', '.join(map(str, engine.rates))})")
        rate = int(rate_text)
        data = await read_body(request, name)
        probe_image(data, limits, name)
        job = queue.submit("compress", lambda publish, outputs: engine.compress(data, name, rate, publish, outputs))
        return submitted(job)

    async def decompress(request: Request) -> Response:
        name = _safe_name(request.query_params.get("name"), "image.sodec")
        data = await read_body(request, name)
        probe_sodec(data, limits, name)
        job = queue.submit("decode", lambda publish, outputs: engine.decode(data, name, publish, outputs))
        return submitted(job)

    def find(request: Request):
        job = queue.get(request.path_params["job"])
        if job is None:
            raise UploadError(404, f"no such job: results are kept for the last {cfg.keep} requests only; "
                                   "upload the image again")
        return job

    async def job_status(request: Request) -> Response:
        job = find(request)
        return JSONResponse(job.snapshot(queue.position(job)), headers={"Cache-Control": "no-store"})

    async def job_file(request: Request) -> Response:
        job = find(request)
        out = job.outputs.get(request.path_params["key"])
        if out is None:
            return error(404, f"job {job.id} has no file {request.path_params['key']!r} (yet)")
        disposition = "attachment" if request.query_params.get("download") else "inline"
        return Response(out.data, media_type=out.media_type, headers={
            "Content-Disposition": content_disposition(disposition, out.filename),
            "Cache-Control": "private, max-age=3600",
        })  # fmt: skip

    async def sodec_error(request: Request, exc: SodecError) -> Response:
        if isinstance(exc, QueueFull):
            return error(503, str(exc), **{"Retry-After": "30"})
        return error(getattr(exc, "status", 400), str(exc))

    async def http_error(request: Request, exc) -> Response:
        detail = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, f"{request.method} {request.url.path}: {detail}")

    from starlette.exceptions import HTTPException

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/example", example),
        Route("/api/compress", compress, methods=["POST"]),
        Route("/api/decompress", decompress, methods=["POST"]),
        Route("/api/jobs/{job}", job_status),
        Route("/api/jobs/{job}/files/{key}", job_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={SodecError: sodec_error, HTTPException: http_error})
    app.state.engine, app.state.queue, app.state.config = engine, queue, cfg
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free port), with a clear error if the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SodecError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another server running? try "
                         "--port 0 for any free port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(cfg: ServeConfig) -> None:
    """Run the demo until interrupted; prints the URL (with the real port) once it listens."""
    import uvicorn

    sock = bind(cfg.host, cfg.port)  # first: a taken port fails before the model loads
    app = create_app(cfg)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"sodec serve: http://{shown}:{port}/  (model {cfg.model}, {cfg.limits.describe()}, queue {cfg.queue}; "
          "Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print("sodec serve: warning: listening beyond this machine; the demo has no authentication",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
