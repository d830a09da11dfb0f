"""What the web demo computes, without any web code: code an upload with SODEC and with classical codecs at
the same file size, measure them, and decode uploaded `.sodec` files.

Everything here runs on the demo's single worker thread (:mod:`sodec.serve.jobs`), one job at a time; the HTTP
layer (:mod:`sodec.serve.app`) only validates uploads (:mod:`sodec.serve.uploads`) and queues jobs.

A job publishes its partial result after every step, in the order that gets a useful page soonest: SODEC's file
and reconstruction first (what the visitor came for), then each classical codec as its search for SODEC's size
ends, then the metrics of every image, cheapest first.  Each codec entry carries a ``state`` (``waiting`` →
``coding`` → ``measuring`` → ``done``) and the job a ``progress`` fraction, so the page can say what is still
coming.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sodec import container
from sodec.container import ColorMode
from sodec.errors import ModelError, SodecError
from sodec.imageio import PNG_COMPRESS_LEVEL, from_rgb_array
from sodec.serve.uploads import Limits, UploadError, open_image, probe_sodec

DEFAULT_BASELINES = ("heic", "avif", "jpeg")
# LPIPS-VGG is the paper's LPIPS but costs about 10x LPIPS-Alex on a CPU; ask for it with --metrics.
DEFAULT_METRICS = ("psnr", "ms_ssim", "delta_e", "lpips_alex")  # DISTS: 2/3 of a job (docs/serve.md)

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

# Rough relative cost of each step (seconds on a 768x512 photo, two busy cores), used only to order the metrics
# (cheapest first) and to weight the progress bar so that it moves with time, not with the number of steps.
# LPIPS and DISTS are per distorted image: the reference's features are computed once per job.
STEP_COST = {"encode": 0.5, "decode": 4.0, "baseline": 1.0, "psnr": 0.02, "delta_e": 0.2, "ms_ssim": 0.8,
             "lpips_alex": 0.6, "dists": 4.0, "lpips_vgg": 6.0}
# Metrics cheap enough to compute as soon as an image exists, so that its row appears with them.
INSTANT_METRICS = ("psnr",)


@dataclass
class Output:
    """One file a job produced: served at ``/api/jobs/<id>/files/<key>``."""

    data: bytes
    media_type: str
    filename: str  # the name offered when downloading


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
    rates = api.available_rates(folder)
    if not rates:
        api.resolve_model_folder(model)  # raises ModelError: no model in the folder
    return rates


def _png(image: np.ndarray | Image.Image) -> bytes:
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)  # fast: the page needs it now
    return buf.getvalue()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# (stage text, partial result, share of the job's work done in 0..1 or None when unknown)
Publish = Callable[..., None]


class _Progress:
    """Publishes a job's partial result with the share of its expected work (:data:`STEP_COST`) done."""

    def __init__(self, publish: Publish, result: dict, total: float) -> None:
        self.publish, self.result, self.total, self.done = publish, result, total, 0.0

    def __call__(self, stage: str, cost: float = 0.0) -> None:
        """Count ``cost`` as done, then publish ``stage`` (what runs next) with the result so far."""
        self.done += cost
        self.publish(stage, self.result, min(1.0, round(self.done / self.total, 3)) if self.total else None)


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
    _codecs: dict | None = field(default=None, repr=False)
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
        """The model of rate point ``rate`` (cached by :func:`sodec.api.load_model`)."""
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
        """The baselines that work here, by name (the others, with the reason, in ``_unavailable_codecs``)."""
        if self._codecs is None:
            from sodec.eval.baselines import load_codecs

            codecs, unavailable = load_codecs(self.baselines)
            self._unavailable_codecs, self._codecs = unavailable, codecs  # another thread reads these
        return self._codecs

    def suite(self):
        """The metric networks, built once (:class:`sodec.eval.metrics.MetricSuite`)."""
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
        """Each baseline: name, label, and whether it runs here (with the reason if not)."""
        self.codecs()  # cheap: finds the libraries, loads nothing big
        return [{"name": name, "label": CODEC_LABELS[name], "available": name not in self._unavailable_codecs,
                 "reason": self._unavailable_codecs.get(name)} for name in self.baselines]

    # -------------------------------------------------------------------------------------------- compress

    def compress(self, data: bytes, name: str, rate: int, publish: Publish,
                 outputs: dict[str, Output] | None = None) -> dict[str, Output]:
        """Code an uploaded photo with SODEC, then each baseline at SODEC's file size, then measure them all.

        Files are added to ``outputs`` as soon as they exist, and the result is published after every step
        (the page shows SODEC's result while the baselines and metrics are still running).
        """
        stem = Path(name).stem or "image"
        outputs = {} if outputs is None else outputs
        rgb, mode, notes = open_image(data, self.limits, name)
        height, width = rgb.shape[:2]
        codecs = self.codecs()
        suite = self.suite()
        metrics = [m for m in self.metrics if m in suite.image]
        baselines = [b for b in self.baselines if b in codecs]
        entries = [self._entry("sodec", f"SODEC (rate {rate})")]
        entries += [self._entry(b, CODEC_LABELS[b]) for b in self.baselines]
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
            "codecs": entries,
            "metrics": self.metric_info(),
            "original": "original.png",
        }
        per_image = sum(STEP_COST.get(m, 1.0) for m in metrics)
        total = STEP_COST["encode"] + STEP_COST["decode"] + len(baselines) * STEP_COST["baseline"]
        progress = _Progress(publish, result, total + (1 + len(baselines)) * per_image)
        for entry in entries[1:]:
            if entry["id"] not in codecs:
                entry.update(state="done", status="unavailable",
                             note=f"unavailable: {self._unavailable_codecs.get(entry['id'])}")
        outputs["original.png"] = Output(_png(rgb), "image/png", f"{stem}-original.png")

        recon: dict[str, np.ndarray] = {}
        ref_key = object()  # names this job's original for the network metrics' feature cache
        try:
            recon["sodec"] = self._sodec(rgb, mode, rate, stem, entries[0], result, outputs, progress)
            self._measure(rgb, ref_key, recon, ["sodec"], INSTANT_METRICS, entries, progress)
            for entry in entries[1:]:
                if entry["id"] in codecs:
                    decoded = self._baseline(codecs[entry["id"]], rgb, result["target"]["bytes"], stem, entry,
                                             outputs, progress)
                    if decoded is not None:
                        recon[entry["id"]] = decoded
                        self._measure(rgb, ref_key, recon, [entry["id"]], INSTANT_METRICS, entries, progress)
                    else:  # failed (said in its entry): its search is over and its metrics will not run
                        progress.done += STEP_COST["baseline"] + per_image
            rest = sorted((m for m in metrics if m not in INSTANT_METRICS), key=lambda m: STEP_COST.get(m, 1.0))
            self._measure(rgb, ref_key, recon, list(recon), rest, entries, progress)
        finally:
            suite.forget()  # the reference's deep features (~200 MB for 768x512) are this job's only
        for entry in entries:
            entry["state"] = "done"
        progress("done")
        return outputs

    @staticmethod
    def _entry(cid: str, label: str) -> dict:
        """A codec's row before anything is known: shown at once as waiting."""
        return {"id": cid, "label": label, "state": "waiting", "status": "pending", "bytes": None, "bpp": None,
                "encode_ms": None, "decode_ms": None, "setting": "", "note": "", "file": None,
                "download_name": None, "image": None, "metrics": {}, "metric_notes": {}, "library": ""}

    def _sodec(self, rgb: np.ndarray, mode: ColorMode, rate: int, stem: str, entry: dict, result: dict,
               outputs: dict[str, Output], progress: _Progress) -> np.ndarray:
        """Code and decode with SODEC, publishing the file as soon as it exists; returns the decoded RGB."""
        from sodec import api

        entry["state"] = "coding"
        progress("SODEC: encoding")
        model = self.load(rate)
        cfg = model.config
        result["model"] = {"name": cfg.name, "rate": cfg.rate_point, "folder": str(self.model)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the colour-policy warnings were collected by open_image
            t0 = time.perf_counter()
            # a gray photo is passed as a gray image, so that the file says "decode to gray"
            sodec_bytes = api.compress_image(model, from_rgb_array(rgb, mode) if mode == ColorMode.GRAY else rgb)
            t1 = time.perf_counter()
        width, height = rgb.shape[1], rgb.shape[0]
        bpp = container.bits_per_pixel(len(sodec_bytes), width, height)
        result["target"] = {"bytes": len(sodec_bytes), "bpp": bpp}
        outputs["sodec.sodec"] = Output(sodec_bytes, "application/octet-stream", f"{stem}.sodec")
        entry.update(label=f"SODEC ({cfg.name}, rate {cfg.rate_point})", status="ok", bytes=len(sodec_bytes),
                     bpp=bpp, encode_ms=_ms(t1 - t0), setting=f"rate point {cfg.rate_point}", file="sodec.sodec",
                     download_name=f"{stem}.sodec",
                     library=f"sodec, model {cfg.name} rate {cfg.rate_point} (hash {api.model_id(model).hex()})")
        progress("SODEC: decoding", STEP_COST["encode"])
        t1 = time.perf_counter()
        decoded, _ = api.decompress_bytes(sodec_bytes, model, self.device)
        t2 = time.perf_counter()
        outputs["sodec.png"] = Output(_png(decoded), "image/png", f"{stem}-sodec.png")
        entry.update(decode_ms=_ms(t2 - t1), image="sodec.png", state="measuring")
        progress.done += STEP_COST["decode"]  # published with its first metric, a moment later
        return np.asarray(decoded.convert("RGB"))

    def _baseline(self, codec, rgb: np.ndarray, target_bytes: int, stem: str, entry: dict,
                  outputs: dict[str, Output], progress: _Progress) -> np.ndarray | None:
        """Drive one baseline to SODEC's size (:func:`~sodec.eval.baselines.encode_at_bpp`); its decoded RGB,
        or None when the codec failed on this image (said in the entry)."""
        from sodec.eval import baselines as bl

        name = codec.name
        entry["state"] = "coding"
        progress(f"{entry['label']}: searching for the setting that gives {target_bytes:,} bytes")
        width, height = rgb.shape[1], rgb.shape[0]
        try:
            e = bl.encode_at_bpp(codec, rgb, container.bits_per_pixel(target_bytes, width, height))
        except Exception as exc:  # a codec library failing on one image must not lose SODEC's result
            entry.update(state="done", status="failed",
                         note=f"failed on this image ({exc.__class__.__name__}: {exc})")
            return None
        suffix, media = CODEC_FILES[name]
        value = int(e.value) if codec.integer else round(e.value, 3)
        entry.update(status=e.status, bytes=e.n_bytes, bpp=e.bpp, encode_ms=_ms(e.encode_s), decode_ms=_ms(e.decode_s),
                     setting=f"{codec.knob} {value}", file=f"{name}{suffix}", download_name=f"{stem}-{name}{suffix}",
                     image=f"{name}.png", library=codec.library, state="measuring")
        if e.status == "below_floor":
            entry["note"] = (f"cannot get as small as SODEC's {target_bytes:,} bytes: its smallest file "
                             f"({codec.knob} {value}) is {e.n_bytes:,} bytes, {e.n_bytes / target_bytes:.2f}x SODEC's")
        elif e.status == "above_ceiling":
            entry["note"] = f"even its best setting stays below SODEC's size ({e.n_bytes:,} bytes)"
        else:
            entry["note"] = f"largest file not above SODEC's {target_bytes:,} bytes ({e.n_encodes} encodes tried)"
        outputs[entry["file"]] = Output(e.data, media, entry["download_name"])
        outputs[entry["image"]] = Output(_png(e.decoded), "image/png", f"{stem}-{name}.png")
        progress.done += STEP_COST["baseline"]  # published with its first metric
        return e.decoded

    def _measure(self, rgb: np.ndarray, ref_key: object, recon: dict[str, np.ndarray], ids: list[str], metrics,
                 entries: list[dict], progress: _Progress) -> None:
        """Each metric in ``metrics`` on each reconstruction in ``ids``, publishing every value.

        LPIPS and DISTS keep the features of the original ``rgb`` between calls with the same ``ref_key``: the
        original goes through the network once per job, not once per codec, with identical values.
        """
        from sodec.eval.metrics import MetricUnavailable

        suite = self.suite()
        by_id = {e["id"]: e for e in entries}
        for name in metrics:
            fn = suite.image.get(name)
            if fn is None:
                continue
            for cid in ids:
                entry = by_id[cid]
                progress(f"measuring {METRIC_LABELS[name]} of {entry['label']}")
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        # the network metrics (they have forget()) keep the reference's features
                        value = float(fn(rgb, recon[cid], ref_key) if hasattr(fn, "forget")
                                      else fn(rgb, recon[cid]))
                    entry["metrics"][name] = value if math.isfinite(value) else None
                    if not math.isfinite(value):
                        entry["metric_notes"][name] = "identical to the original" if value == math.inf else "NaN"
                except MetricUnavailable as e:
                    entry["metrics"][name] = None
                    entry["metric_notes"][name] = str(e)
                except (RuntimeError, ValueError) as e:  # e.g. a network's kernel larger than a tiny image
                    entry["metrics"][name] = None
                    entry["metric_notes"][name] = f"cannot be computed on this image ({e})"
                if all(m in entry["metrics"] for m in self.metrics if m in suite.image):
                    entry["state"] = "done"
                progress.done += STEP_COST.get(name, 1.0)

    # ---------------------------------------------------------------------------------------------- decode

    def decode(self, data: bytes, name: str, publish: Publish,
               outputs: dict[str, Output] | None = None) -> dict[str, Output]:
        """Decode an uploaded `.sodec` file with the model named in it (this server's, else a bundled one)."""
        from sodec import api

        header = probe_sodec(data, self.limits, name)  # verifies the CRC: "checksum ok" below is a fact
        stem = Path(name).stem or "image"
        result = {"kind": "decode", "name": name, "header": {**container.header_dict(header, len(data)),
                                                              "checksum": "ok"}}
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
        publish("done", result, 1.0)
        return outputs
