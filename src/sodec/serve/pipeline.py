"""What the web demo computes, without any web code: validate an upload, code it with SODEC and with classical
codecs at the same file size, measure, and decode uploaded `.sodec` files.

Everything here runs on the demo's single worker thread (:mod:`sodec.serve.jobs`), one job at a time; the HTTP
layer (:mod:`sodec.serve.app`) only validates uploads (:func:`probe_image`, :func:`probe_sodec`) and queues jobs.
A job publishes its partial result after each step, so the page can show SODEC's result while the baselines and
the slower perceptual metrics are still being computed.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sodec import container
from sodec.container import ColorMode, Header
from sodec.errors import FormatError, ImageInputError, LimitError, ModelError, SodecError
from sodec.imageio import to_rgb_array

DEFAULT_BASELINES = ("heic", "avif", "jpeg")
# LPIPS-VGG is the paper's LPIPS but costs about 10x LPIPS-Alex on a CPU; ask for it with --metrics.
DEFAULT_METRICS = ("psnr", "ms_ssim", "delta_e", "lpips_alex", "dists")
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1000 * 1000
DEFAULT_MAX_PIXELS = 1920 * 1080

# File suffix and MIME type of each codec's own file (offered for download; the page shows decoded PNGs).
CODEC_FILES = {
    "sodec": (".sodec", "application/octet-stream"),
    "heic": (".heic", "image/heic"),
    "avif": (".avif", "image/avif"),
    "jpeg": (".jpg", "image/jpeg"),
    "webp": (".webp", "image/webp"),
    "jxl": (".jxl", "image/jxl"),
    "j2k": (".j2k", "image/jp2"),
}
CODEC_LABELS = {
    "heic": "HEVC intra (HEIF)",
    "avif": "AVIF (AV1 intra)",
    "jpeg": "JPEG",
    "webp": "WebP",
    "jxl": "JPEG XL",
    "j2k": "JPEG 2000",
}
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ms_ssim": "MS-SSIM",
    "delta_e": "ΔE2000",
    "lpips_vgg": "LPIPS-VGG",
    "lpips_alex": "LPIPS-Alex",
    "dists": "DISTS",
}
IMAGE_METRICS = tuple(METRIC_LABELS)


class UploadError(SodecError):
    """An upload the demo refuses; ``status`` is the HTTP status to answer with, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def describe(self) -> str:
        return f"at most {format_bytes(self.max_upload_bytes)} and {self.max_pixels:,} pixels per upload"


def format_bytes(n: int) -> str:
    if n >= 1000 * 1000:
        return f"{n / 1e6:g} MB"
    if n >= 1000:
        return f"{n / 1e3:g} kB"
    return f"{n} bytes"


@dataclass
class Output:
    """One file a job produced: served at ``/api/jobs/<id>/files/<key>``."""

    data: bytes
    media_type: str
    filename: str  # the name offered when downloading


# ------------------------------------------------------------------------------------------------ validation


def is_sodec(data: bytes) -> bool:
    return data[:3] == container.MAGIC


def probe_image(data: bytes, limits: Limits, name: str = "upload") -> tuple[int, int, str]:
    """Check cheaply (header only) that ``data`` is an image within the limits: ``(width, height, format)``.

    Raises:
        UploadError: 400 empty, 415 not an image (or a `.sodec` file sent to the compressor), 413 too many pixels.
    """
    if not data:
        raise UploadError(400, f"{name}: the upload is empty")
    if is_sodec(data):
        raise UploadError(415, f"{name} is a .sodec file, not a photo: decode it with 'Decode a .sodec file'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height, fmt = im.width, im.height, im.format or "?"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{name}: refused, the image declares too many pixels") from None
    except (OSError, SyntaxError, ValueError):
        raise UploadError(
            415, f"{name} is not an image this server can read (try a JPEG, PNG, WebP, AVIF, TIFF, BMP or GIF)"
        ) from None
    _check_pixels(width, height, limits, name)
    return width, height, fmt


def _check_pixels(width: int, height: int, limits: Limits, name: str) -> None:
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"{name} is {width}x{height} = {width * height:,} pixels; this demo takes at most "
            f"{limits.max_pixels:,} pixels (e.g. 1920x1080). Resize it, or start the server with a larger "
            "--max-pixels",
        )
    try:
        container.check_size(width, height)
    except LimitError as e:
        raise UploadError(413, f"{name}: {e}") from None


def probe_sodec(data: bytes, limits: Limits, name: str = "upload") -> Header:
    """Parse and verify a `.sodec` upload (CRC included) and check its declared size against the limits.

    Raises:
        UploadError: 400 empty, 415 not a .sodec file, 400 corrupted/truncated/unknown version, 413 too large.
    """
    if not data:
        raise UploadError(400, f"{name}: the upload is empty")
    if not is_sodec(data):
        raise UploadError(415, f"{name} is not a .sodec file (it does not start with the SDC magic bytes)")
    try:
        header = container.unpack(data).header
    except LimitError as e:
        raise UploadError(413, f"{name}: {e}") from None
    except FormatError as e:
        raise UploadError(400, f"{name}: {e}") from None
    _check_pixels(header.width, header.height, limits, name)
    return header


def open_image(data: bytes, limits: Limits, name: str = "upload") -> tuple[np.ndarray, ColorMode, Image.Image,
                                                                          list[str]]:
    """Decode an uploaded image with the colour policy of ``sodec compress`` (EXIF orientation applied).

    Returns the ``(H, W, 3)`` uint8 RGB array, the mode to restore, the upright Pillow image and the policy's
    warnings (alpha dropped, 16-bit reduced, animation) as messages for the page.
    """
    probe_image(data, limits, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data)) as im:
                if getattr(im, "n_frames", 1) > 1:
                    warnings.warn(f"{name}: animated image, only the first frame is coded", stacklevel=2)
                im.load()
                im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise UploadError(415, f"{name} could not be decoded ({e.__class__.__name__}: {e})") from None
        try:
            rgb, mode = to_rgb_array(im, name)  # refuses float images; warns about alpha, 16-bit
        except ImageInputError as e:
            raise UploadError(415, str(e)) from None
    return rgb, mode, im, _messages(caught)


def _messages(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    return list(dict.fromkeys(str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)))


# ---------------------------------------------------------------------------------------------------- models


def _family(model: str) -> tuple[Path, bool]:
    """The folder ``model`` names and whether it is a single model folder (not a family of rate points)."""
    from sodec import api
    from sodec.models.config import CONFIG_NAME

    path = Path(model)
    folder = path if path.is_dir() else api.bundled_models().get(str(model))
    if folder is None:
        api.resolve_model_folder(model)  # raises ModelError naming the bundled models
    return folder, (folder / CONFIG_NAME).is_file()


def available_rates(model: str) -> list[int]:
    """The rate points of ``model`` (a bundled family name, a family folder or a single model folder)."""
    from sodec import api
    from sodec.models.config import CONFIG_NAME

    folder, single = _family(model)
    if single:
        return [int(json.loads((folder / CONFIG_NAME).read_text()).get("rate_point", 0))]
    rates = sorted(int(p.name[5:]) for p in folder.glob("rate-*") if p.name[5:].isdigit())
    if not rates:
        api.resolve_model_folder(model)  # raises ModelError: no model in the folder
    return rates


def _png(rgb_or_image: np.ndarray | Image.Image) -> bytes:
    im = Image.fromarray(rgb_or_image) if isinstance(rgb_or_image, np.ndarray) else rgb_or_image
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


Publish = Callable[[str, dict], None]  # (stage text, partial result)


@dataclass
class Engine:
    """The demo's codec engine: one model family, its baselines and metrics (built once, on the worker)."""

    model: str = "nano"
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    metrics: tuple[str, ...] = DEFAULT_METRICS
    device: str = "cpu"
    limits: Limits = field(default_factory=Limits)
    rates: list[int] = field(default_factory=list)
    default_rate: int | None = None
    _suite: object = field(default=None, repr=False)
    _codecs: dict = field(default_factory=dict, repr=False)
    _unavailable_codecs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in IMAGE_METRICS]
        if unknown:
            raise SodecError(f"unknown or unsupported demo metric(s) {', '.join(unknown)} "
                             f"(known: {', '.join(IMAGE_METRICS)})")
        unknown = [b for b in self.baselines if b not in CODEC_LABELS]
        if unknown:
            raise SodecError(f"unknown baseline(s) {', '.join(unknown)} (known: {', '.join(CODEC_LABELS)})")
        self.rates = available_rates(self.model)
        if self.default_rate is None:
            self.default_rate = self.rates[0]
        if self.default_rate not in self.rates:
            raise ModelError(f"model {self.model!r} has no rate point {self.default_rate} "
                             f"(available: {', '.join(map(str, self.rates))})")

    # ----------------------------------------------------------------------------------------------- set-up

    def load(self, rate: int):
        from sodec import api

        if rate not in self.rates:
            raise UploadError(400, f"rate point {rate} does not exist (available: {', '.join(map(str, self.rates))})")
        return api.load_model(self.model, None if _family(self.model)[1] else rate, self.device)

    def warm_up(self) -> None:
        """Load the default rate point, the baselines and the metric networks (the first job is then quick)."""
        self.load(self.default_rate)
        self.codecs()
        self.suite()

    def codecs(self) -> dict:
        from sodec.eval import baselines as bl

        if not self._codecs and not self._unavailable_codecs:
            codecs, unavailable = {}, {}
            for name in self.baselines:
                try:
                    codecs[name] = bl.get_codec(name)
                except bl.BaselineUnavailable as e:
                    unavailable[name] = str(e)
            self._unavailable_codecs, self._codecs = unavailable, codecs  # another thread reads these
        return self._codecs

    def suite(self):
        if self._suite is None:
            from sodec.eval.metrics import MetricSuite

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._suite = MetricSuite(self.metrics, self.device)
        return self._suite

    def metric_info(self) -> list[dict]:
        """Each metric: name, label, direction, and whether it runs here (with the reason if not)."""
        from sodec.eval.metrics import METRICS, availability

        unavailable = self._suite.unavailable if self._suite is not None else {}
        out = []
        for name in self.metrics:
            reason = unavailable.get(name) if self._suite is not None else availability(name)
            out.append({"name": name, "label": METRIC_LABELS[name], "higher_is_better": METRICS[name].higher_is_better,
                        "available": reason is None, "reason": reason})
        return out

    def baseline_info(self) -> list[dict]:
        from sodec.eval import baselines as bl

        out = []
        for name in self.baselines:
            if self._codecs or self._unavailable_codecs:
                reason = self._unavailable_codecs.get(name)
            else:
                try:
                    bl.get_codec(name)
                    reason = None
                except bl.BaselineUnavailable as e:
                    reason = str(e)
            out.append({"name": name, "label": CODEC_LABELS[name], "available": reason is None, "reason": reason})
        return out

    # -------------------------------------------------------------------------------------------- compress

    def compress(self, data: bytes, name: str, rate: int, publish: Publish,
                 outputs: dict[str, Output] | None = None) -> dict[str, Output]:
        """Code an uploaded photo with SODEC, then each baseline at SODEC's file size, then measure them all.

        Files are added to ``outputs`` as soon as they exist (the page shows them while the job runs).
        """
        from sodec import api

        stem = Path(name).stem or "image"
        outputs = {} if outputs is None else outputs
        rgb, mode, im, notes = open_image(data, self.limits, name)
        height, width = rgb.shape[:2]
        result: dict = {
            "kind": "compress",
            "name": name,
            "width": width,
            "height": height,
            "pixels": width * height,
            "upload_bytes": len(data),
            "color_mode": mode.name,
            "warnings": notes,
            "rate": rate,
            "codecs": [],
            "metrics": self.metric_info(),
            "original": "original.png",
        }
        outputs["original.png"] = Output(_png(rgb), "image/png", f"{stem}-original.png")
        publish("loading the model", result)
        model = self.load(rate)
        result["model"] = {"name": model.config.name, "rate": model.config.rate_point, "folder": str(self.model)}

        publish("SODEC: encoding", result)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the colour-policy warnings were collected above
            t0 = time.perf_counter()
            sodec_bytes = api.compress_image(model, im if mode == ColorMode.GRAY else rgb)
            t1 = time.perf_counter()
        publish("SODEC: decoding", result)
        decoded, _ = api.decompress_bytes(sodec_bytes, model, self.device)
        t2 = time.perf_counter()
        sodec_rgb = np.asarray(decoded.convert("RGB"))
        bpp = container.bits_per_pixel(len(sodec_bytes), width, height)
        result["target"] = {"bytes": len(sodec_bytes), "bpp": bpp}
        outputs["sodec.sodec"] = Output(sodec_bytes, "application/octet-stream", f"{stem}.sodec")
        outputs["sodec.png"] = Output(_png(decoded), "image/png", f"{stem}-sodec.png")
        recon = {"sodec": sodec_rgb}
        result["codecs"].append({
            "id": "sodec",
            "label": f"SODEC ({model.config.name}, rate {model.config.rate_point})",
            "library": f"sodec, model {model.config.name} rate {model.config.rate_point} (hash "
                       f"{api.model_id(model).hex()})",
            "status": "ok",
            "bytes": len(sodec_bytes),
            "bpp": bpp,
            "encode_ms": _ms(t1 - t0),
            "decode_ms": _ms(t2 - t1),
            "setting": f"rate point {model.config.rate_point}",
            "note": "",
            "file": "sodec.sodec",
            "download_name": f"{stem}.sodec",
            "image": "sodec.png",
            "metrics": {},
            "metric_notes": {},
        })  # fmt: skip

        codecs = self.codecs()
        for bname in self.baselines:
            entry = self._baseline(bname, codecs.get(bname), rgb, bpp, len(sodec_bytes), stem, outputs, recon,
                                   result, publish)
            result["codecs"].append(entry)
        self._measure(rgb, recon, result, publish)
        publish("done", result)
        return outputs

    def _baseline(self, name: str, codec, rgb: np.ndarray, bpp: float, target_bytes: int, stem: str,
                  outputs: dict[str, Output], recon: dict, result: dict, publish: Publish) -> dict:
        from sodec.eval import baselines as bl

        label = CODEC_LABELS[name]
        entry = {"id": name, "label": label, "status": "unavailable", "bytes": None, "bpp": None,
                 "encode_ms": None, "decode_ms": None, "setting": "", "note": "", "file": None,
                 "download_name": None, "image": None, "metrics": {}, "metric_notes": {}, "library": ""}
        if codec is None:
            entry["note"] = f"unavailable: {self._unavailable_codecs.get(name, 'not installed')}"
            return entry
        publish(f"{label}: searching for the setting that gives {target_bytes:,} bytes", result)
        try:
            e = bl.encode_at_bpp(codec, rgb, bpp)
        except Exception as exc:  # a codec library failing on one image must not lose SODEC's result
            entry["note"] = f"failed on this image ({exc.__class__.__name__}: {exc})"
            return entry
        suffix, media = CODEC_FILES[name]
        value = int(e.value) if codec.integer else round(e.value, 3)
        entry.update(status=e.status, bytes=e.n_bytes, bpp=e.bpp, encode_ms=_ms(e.encode_s), decode_ms=_ms(e.decode_s),
                     setting=f"{codec.knob} {value}", file=f"{name}{suffix}", download_name=f"{stem}-{name}{suffix}",
                     image=f"{name}.png", library=codec.library)
        if e.status == "below_floor":
            entry["note"] = (f"cannot get as small as SODEC's {target_bytes:,} bytes: its smallest file "
                             f"({codec.knob} {value}) is {e.n_bytes:,} bytes, {e.n_bytes / target_bytes:.2f}x SODEC's")
        elif e.status == "above_ceiling":
            entry["note"] = f"even its best setting stays below SODEC's size ({e.n_bytes:,} bytes)"
        else:
            entry["note"] = f"largest file not above SODEC's {target_bytes:,} bytes ({e.n_encodes} encodes tried)"
        outputs[entry["file"]] = Output(e.data, media, entry["download_name"])
        outputs[entry["image"]] = Output(_png(e.decoded), "image/png", f"{stem}-{name}.png")
        recon[name] = e.decoded
        return entry

    def _measure(self, rgb: np.ndarray, recon: dict, result: dict, publish: Publish) -> None:
        """Every metric on every reconstruction, cheapest metric first, publishing each value."""
        from sodec.eval.metrics import MetricUnavailable

        suite = self.suite()
        result["metrics"] = self.metric_info()
        entries = {c["id"]: c for c in result["codecs"]}
        for name in self.metrics:
            fn = suite.image.get(name)
            if fn is None:
                continue
            for cid, dist in recon.items():
                publish(f"measuring {METRIC_LABELS[name]} of {entries[cid]['label']}", result)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        value = float(fn(rgb, dist))
                    entries[cid]["metrics"][name] = value if math.isfinite(value) else None
                    if not math.isfinite(value):
                        entries[cid]["metric_notes"][name] = "identical to the original" if value == math.inf else "NaN"
                except MetricUnavailable as e:
                    entries[cid]["metrics"][name] = None
                    entries[cid]["metric_notes"][name] = str(e)
                except (RuntimeError, ValueError) as e:  # e.g. a network's kernel larger than a tiny image
                    entries[cid]["metrics"][name] = None
                    entries[cid]["metric_notes"][name] = f"cannot be computed on this image ({e})"

    # ---------------------------------------------------------------------------------------------- decode

    def decode(self, data: bytes, name: str, publish: Publish,
               outputs: dict[str, Output] | None = None) -> dict[str, Output]:
        """Decode an uploaded `.sodec` file with the model named in it (this server's, else a bundled one)."""
        from sodec import api

        header = probe_sodec(data, self.limits, name)
        stem = Path(name).stem or "image"
        result = {
            "kind": "decode",
            "name": name,
            "header": {
                "format_version": header.version,
                "model": header.model_name,
                "model_hash": header.model_hash.hex(),
                "rate_point": header.rate_point,
                "width": header.width,
                "height": header.height,
                "color_mode": header.color_mode.name,
                "bytes": len(data),
                "bpp": container.bits_per_pixel(len(data), header.width, header.height),
                "checksum": "ok",
            },
        }
        publish("finding the model", result)
        model = None
        if header.rate_point in self.rates:
            candidate = self.load(header.rate_point)
            if api.model_id(candidate) == header.model_hash:
                model = candidate
        try:
            model = api.model_for(header, model, self.device)
        except ModelError as e:
            raise UploadError(422, f"{name}: {e}") from None
        publish("decoding", result)
        t0 = time.perf_counter()
        image, _ = api.decompress_bytes(data, model, self.device)
        result["decode_ms"] = _ms(time.perf_counter() - t0)
        result["image"] = "decoded.png"
        result["download_name"] = f"{stem}.png"
        outputs = {} if outputs is None else outputs
        outputs["decoded.png"] = Output(_png(image), "image/png", f"{stem}.png")
        publish("done", result)
        return outputs
