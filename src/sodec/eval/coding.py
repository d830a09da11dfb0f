"""The coding stage of ``sodec eval``: each image coded by SODEC and the baselines, measured, one row per point.

The unit of work is one image.  :class:`ImageCoder` holds what is loaded once (the SODEC models, the baseline
codecs, the metric networks) and :meth:`ImageCoder.code_file` turns one image path into an
:class:`ImageResult` — its rows, FID patch features, timings and notes — without touching any shared state.
So the same step runs in this process (:func:`sodec.eval.run.run`) or on a Ray cluster (``sodec eval --ray``,
through :func:`code_image`), and :class:`EvalState` aggregates the results identically either way.

Files are written under ``cfg.out`` (``files/``, ``recon/``) by whoever codes the image: with Ray, the run
folder must be on a file system that every worker shares with the driver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sodec.container import bits_per_pixel
from sodec.errors import SodecError
from sodec.eval import baselines as bl
from sodec.eval.metrics import MetricSuite, parse_metrics
from sodec.eval.settings import EvalConfig, Preprocess
from sodec.imageio import PNG_COMPRESS_LEVEL

FILE_SUFFIX = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif", "heic": ".heic", "jxl": ".jxl", "j2k": ".j2k"}


@dataclass
class EvalImage:
    """One reference image: what every codec codes and is measured against (after preprocessing)."""

    name: str  # unique stem used for output files
    source: Path
    rgb: np.ndarray | None  # None where the pixels stayed on a Ray worker (reloaded for the crops)
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        if self.rgb is not None:
            self.height, self.width = self.rgb.shape[:2]


@dataclass
class ImageResult:
    """Everything the coding of one image produced (picklable: it travels back from Ray workers)."""

    name: str
    source: Path
    width: int = 0
    height: int = 0
    skipped: str | None = None  # why the image was not used (too small for the crop); then nothing else is set
    rows: list[dict] = field(default_factory=list)
    ref_features: object = None  # Tensor of the reference's FID patch features (None without FID/KID)
    fake_features: dict = field(default_factory=dict)  # (codec, rate) -> Tensor of that reconstruction's
    coding_s: dict = field(default_factory=lambda: {"sodec": 0.0, "baselines": 0.0, "metrics": 0.0})
    notes: list[str] = field(default_factory=list)  # a baseline failing on this image
    feature_notes: list[str] = field(default_factory=list)  # an image too small for an FID patch
    metric_skips: dict = field(default_factory=dict)  # {metric: {label: reason}}, as MetricSuite.skipped
    wall_s: float = 0.0  # the whole step: loading, reference features, coding, metrics


@dataclass
class EvalState:
    """The run so far: the images, their rows and features, notes; what analysis and the report read."""

    cfg: EvalConfig
    suite: MetricSuite | None
    images: list[EvalImage] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    failed_images: list[str] = field(default_factory=list)  # "path: why": the run went on without them
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ref_features: dict = field(default_factory=dict)  # image name -> Tensor
    fake_features: dict = field(default_factory=dict)  # (codec, rate) -> list[Tensor]
    sodec_info: dict = field(default_factory=dict)
    coding_s: dict = field(default_factory=lambda: {"sodec": 0.0, "baselines": 0.0, "metrics": 0.0})

    def add(self, result: ImageResult) -> None:
        """Merge one image's coding results (call in image order: FID features concatenate in that order)."""
        for key, feats in result.fake_features.items():
            self.fake_features.setdefault(key, []).append(feats)
        self.records.extend(result.rows)
        self.notes.extend(result.notes)
        for k, v in result.coding_s.items():
            self.coding_s[k] += v
        for metric, per in result.metric_skips.items():
            self.suite.skipped.setdefault(metric, {}).update(per)


# ------------------------------------------------------------------------------------------------ images


def list_images(folder: Path, limit: int | None) -> list[Path]:
    """The images of ``--data`` (a flat folder), sorted, the first ``limit`` of them."""
    from sodec.imageio import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise SodecError(f"--data {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SodecError(f"--data {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files[:limit] if limit else files


def image_names(paths: list[Path]) -> list[str]:
    """A unique output name per image: its stem, or ``stem_ext`` for a later file with the same stem.

    A function of the listing alone (not of which images preprocessing keeps), so that a worker can be told
    an image's name before anyone has opened the image.
    """
    used: set[str] = set()
    names = []
    for path in paths:
        name = path.stem if path.stem not in used else f"{path.stem}_{path.suffix.lstrip('.')}"
        used.add(name)
        names.append(name)
    return names


def load_reference(path: Path, pre: Preprocess) -> tuple[np.ndarray | None, tuple[int, int]]:
    """The preprocessed reference of one image (``None`` if it is too small for the crop) and its original
    ``(width, height)``."""
    from sodec.imageio import load_image

    rgb, _mode = load_image(path)
    return pre.apply(rgb), (rgb.shape[1], rgb.shape[0])


def _save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, compress_level=PNG_COMPRESS_LEVEL)


# ------------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelDescription:
    """What the report says about one rate point, read from its folder without loading any network:
    ``config.json`` and the content hash that ``save_pretrained`` records in ``model.safetensors``' header
    (the ``eval --ray`` driver, whose workers do the coding)."""

    config: object  # SodecConfig
    hash: str

    @property
    def has_diffusion(self) -> bool:
        return self.config.diffusion is not None

    def content_hash(self) -> str:
        return self.hash

    @classmethod
    def read(cls, folder: Path) -> ModelDescription:
        import json

        from safetensors import safe_open

        from sodec.models.config import CONFIG_NAME, WEIGHTS_NAME, SodecConfig
        from sodec.models.encoder import SodecEncoder

        config = SodecConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
            recorded = (f.metadata() or {}).get("sha256")
        # A folder written before the header recorded it: the encoder computes it (no decoder, no bases).
        return cls(config, recorded or SodecEncoder.from_pretrained(folder).content_hash())


def sodec_models(cfg: EvalConfig, describe: bool = False) -> list:
    """``[(rate label, model)]`` for the requested rate points; with ``describe``, ``[(label,
    ModelDescription)]``: nothing loaded but the configs."""
    from sodec import api
    from sodec.models.config import CONFIG_NAME

    def load(model, rate):
        if describe:
            return ModelDescription.read(api.resolve_model_folder(model, rate))
        return api.load_model(model, rate, cfg.device)

    path = Path(cfg.model)
    family = path if path.is_dir() else api.bundled_models().get(cfg.model)
    if family is None:
        api.resolve_model_folder(cfg.model)  # raises the standard "neither a folder nor bundled" error
    if (family / CONFIG_NAME).is_file():
        model = load(family, None)
        if cfg.rates and cfg.rates != [model.config.rate_point]:
            raise SodecError(f"{family} is a single model (rate point {model.config.rate_point}); --rates "
                             f"{','.join(map(str, cfg.rates))} does not apply")
        return [(f"r{model.config.rate_point}", model)]
    available = api.available_rates(family)
    rates = cfg.rates if cfg.rates is not None else available
    missing = [r for r in rates if r not in available]
    if missing:
        raise SodecError(f"model {cfg.model!r} has no rate point {','.join(map(str, missing))} (available: "
                         f"{','.join(map(str, available))})")
    return [(f"r{r}", load(cfg.model, r)) for r in rates]


# ------------------------------------------------------------------------------------------------- coder


class ImageCoder:
    """What coding an image needs, loaded once per process: SODEC models, baseline codecs, metric networks.

    Construction loads the models and checks ``--decoder`` against them (errors surface before anything is
    written); :meth:`load_metrics` then builds the metric networks, the slow part.
    """

    def __init__(self, cfg: EvalConfig, describe_only: bool = False) -> None:
        """``describe_only``: the models' descriptions (:class:`ModelDescription`) without their networks,
        for a driver whose workers code (``eval --ray``); such a coder codes nothing itself."""
        self.cfg = cfg
        self.pre = Preprocess.parse(cfg.preprocess)
        codecs, self.unavailable = bl.load_codecs(cfg.baselines)  # unavailable: baseline -> why not here
        self.codecs: list[bl.Codec] = list(codecs.values())
        self.models = sodec_models(cfg, describe_only) if cfg.model is not None else []
        self.sodec_info: dict[str, dict] = {}
        self.notes: list[str] = []  # about the models, once per run
        for label, model in self.models:
            self._decoders(label, model)
        self.suite: MetricSuite | None = None

    def load_metrics(self) -> MetricSuite:
        self.suite = MetricSuite(self.cfg.metrics or parse_metrics(None), self.cfg.device)
        return self.suite

    def _decoders(self, label: str, model) -> list[str]:
        cfg = self.cfg
        has_diffusion = model.has_diffusion
        if cfg.decoder == "both":
            decoders = ["diffusion", "fidelity"] if has_diffusion else ["fidelity"]
            if not has_diffusion:
                self.notes.append(f"sodec {model.config.name} {label}: the model has no diffusion decoder, so "
                                  "--decoder both gives the fidelity decoder only")
        elif cfg.decoder == "auto":
            decoders = ["diffusion" if has_diffusion else "fidelity"]
        elif cfg.decoder == "diffusion" and not has_diffusion:
            raise SodecError(f"model {model.config.name!r} {label} has no diffusion decoder (use --decoder fidelity)")
        else:
            decoders = [cfg.decoder]
        self.sodec_info[label] = {
            "model": model.config.name,
            "rate_point": model.config.rate_point,
            "hash": model.content_hash()[:16],
            "decoders": decoders,
            "has_diffusion": has_diffusion,
        }
        return decoders

    # ---- one image

    def load(self, source: Path, name: str) -> EvalImage | str:
        """The reference image, or the reason it is skipped."""
        ref, (w, h) = load_reference(source, self.pre)
        if ref is None:
            return f"{source.name} ({w}x{h}): smaller than the crop"
        return EvalImage(name, source, ref)

    def reference_features(self, image: EvalImage) -> tuple[object, list[str]]:
        """The reference's FID patch features (``None`` without FID/KID) and a note if it has no patch."""
        if not self.suite.set_metrics:
            return None, []
        feats = self.suite.patch_features(image.rgb)
        note = [f"{image.name} is smaller than 256 px: it adds no FID/KID patch"] if feats.shape[0] == 0 else []
        return feats, note

    def code_file(self, source: Path, name: str) -> ImageResult:
        """Load, preprocess and code one image: the whole per-image step, as run on a Ray worker."""
        t0 = time.perf_counter()
        image = self.load(source, name)
        if isinstance(image, str):
            return ImageResult(name, source, skipped=image)
        feats, note = self.reference_features(image)
        result = self.code(image)
        result.ref_features, result.feature_notes = feats, note
        result.wall_s = time.perf_counter() - t0
        return result

    def code(self, image: EvalImage) -> ImageResult:
        """Every SODEC rate point and decoder, then every baseline at every target, each measured."""
        result = ImageResult(image.name, image.source, image.width, image.height)
        kept, self.suite.skipped = self.suite.skipped, {}  # this image's metric skips go into its result
        try:
            self._run_sodec(image, result)
            self._run_baselines(image, result)
        finally:
            result.metric_skips, self.suite.skipped = self.suite.skipped, kept
            self.suite.forget()
        return result

    def _measure(self, image: EvalImage, decoded: np.ndarray, row: dict, result: ImageResult) -> None:
        t0 = time.perf_counter()
        row.update(self.suite.per_image(image.rgb, decoded, label=image.name, ref_key=image.name))
        if self.suite.set_metrics:
            feats = self.suite.patch_features(decoded)
            result.fake_features[(row["codec"], row["rate"])] = feats
            row["fid_patches"] = int(feats.shape[0])
        result.coding_s["metrics"] += time.perf_counter() - t0

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.cfg.out).as_posix()

    def _row(self, image: EvalImage, codec: str, family: str, rate: str, n_bytes: int, file: Path,
             recon: Path) -> dict:
        return {
            "image": image.name,
            "width": image.width,
            "height": image.height,
            "codec": codec,
            "family": family,
            "rate": rate,
            "target_bpp": None,
            "bytes": n_bytes,
            "bpp": bits_per_pixel(n_bytes, image.width, image.height),
            "status": "ok",
            "floor_bpp": None,
            "knob": None,
            "knob_value": None,
            "encode_s": None,
            "decode_s": None,
            "file": self._rel(file),
            "recon": self._rel(recon),
        }

    def _run_sodec(self, image: EvalImage, result: ImageResult) -> None:
        from sodec import api

        cfg = self.cfg
        for label, model in self.models:
            t0 = time.perf_counter()
            data = api.compress_image(model, image.rgb)
            enc_s = time.perf_counter() - t0
            result.coding_s["sodec"] += enc_s  # once per file, however many decoders decode it
            file = cfg.out / "files" / f"sodec-{label}" / f"{image.name}.sodec"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
            n_bytes = file.stat().st_size
            for decoder in self.sodec_info[label]["decoders"]:
                t0 = time.perf_counter()
                pil, _header = api.decompress_bytes(data, model, cfg.device, decoder)
                dec_s = time.perf_counter() - t0
                result.coding_s["sodec"] += dec_s
                decoded = np.asarray(pil.convert("RGB"))
                codec = f"sodec-{decoder}"
                recon = cfg.out / "recon" / f"{codec}-{label}" / f"{image.name}.png"
                _save_png(recon, decoded)
                row = self._row(image, codec, "sodec", label, n_bytes, file, recon)
                row.update(knob="rate_point", knob_value=model.config.rate_point, encode_s=enc_s, decode_s=dec_s)
                self._measure(image, decoded, row, result)
                result.rows.append(row)

    def _baseline_targets(self, result: ImageResult) -> list[tuple[str, float]]:
        """``[(rate label, target bpp)]`` for one image (``match``: each SODEC rate point's file of it)."""
        out = []
        targets = self.cfg.targets if self.cfg.targets is not None else ["match"]
        for t in targets:
            if t == "match":
                seen = set()
                for r in result.rows:
                    if r["family"] == "sodec" and r["rate"] not in seen:
                        seen.add(r["rate"])
                        out.append((f"match-{r['rate']}", r["bpp"]))
            else:
                out.append((f"{t:g}", float(t)))
        return out

    def _run_baselines(self, image: EvalImage, result: ImageResult) -> None:
        cfg = self.cfg
        for codec in self.codecs:
            for label, target in self._baseline_targets(result):
                t0 = time.perf_counter()
                try:
                    enc = bl.encode_at_bpp(codec, image.rgb, target)
                except Exception as e:  # a codec library failing on one image must not lose the run
                    result.notes.append(f"{codec.name} on {image.name} at {target:.4f} bpp failed: "
                                        f"{e.__class__.__name__}: {e}")
                    continue
                finally:
                    result.coding_s["baselines"] += time.perf_counter() - t0
                file = cfg.out / "files" / f"{codec.name}-{label}" / f"{image.name}{FILE_SUFFIX[codec.name]}"
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(enc.data)
                recon = cfg.out / "recon" / f"{codec.name}-{label}" / f"{image.name}.png"
                _save_png(recon, enc.decoded)
                row = self._row(image, codec.name, "baseline", label, file.stat().st_size, file, recon)
                row.update(target_bpp=target, status=enc.status, floor_bpp=enc.floor_bpp, knob=enc.knob,
                           knob_value=enc.value, encode_s=enc.encode_s, decode_s=enc.decode_s,
                           n_encodes=enc.n_encodes)
                self._measure(image, enc.decoded, row, result)
                result.rows.append(row)


# A worker process codes many images with one coder: the models and metric networks load once per process.
_coder: tuple[EvalConfig, ImageCoder] | None = None


def coder_for(cfg: EvalConfig) -> ImageCoder:
    """This process's :class:`ImageCoder` for ``cfg`` (built, metrics included, on first use)."""
    global _coder
    if _coder is None or _coder[0] != cfg:
        coder = ImageCoder(cfg)
        coder.load_metrics()
        _coder = (cfg, coder)
    return _coder[1]


def code_image(cfg: EvalConfig, source: Path, name: str) -> ImageResult:
    """Code and measure one image of an evaluation: ``(config, image path) → rows``, in any process.

    ``name`` is the image's output name (:func:`image_names` of the whole listing).  The run folder
    ``cfg.out`` must exist and be shared with whoever aggregates the results.
    """
    return coder_for(cfg).code_file(Path(source), name)
