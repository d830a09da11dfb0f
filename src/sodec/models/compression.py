"""The compression module: analysis E, hyper-analysis Ha, entropy parameters P and the two entropy models.

x ──E──▶ y ──Q──▶ ŷ, coded with N(μ, σ) from P(ẑ);  y ──Ha──▶ z ──Q──▶ ẑ, coded with a factorized prior.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sodec._compressai import EntropyBottleneck, GaussianConditional
from sodec.errors import FormatError
from sodec.models.config import SodecConfig
from sodec.models.exact import ExactEntropyParameters
from sodec.models.layers import conv_norm_relu, gdn

# Scale table of the Gaussian conditional (compressai's default range: 64 levels, 0.11 .. 256).
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> list[float]:
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS, device="cpu")).tolist()


class Analysis(nn.Module):
    """E (HiFiC encoder): 7x7 conv, four stride-2 3x3 convs, 3x3 conv to C.  ``(B,3,H,W)`` → ``(B,C,H/16,W/16)``.

    Input is RGB in [0, 1].
    """

    def __init__(self, channels: tuple[int, ...], latent_channels: int) -> None:
        super().__init__()
        blocks = [conv_norm_relu(3, channels[0], 7)]
        blocks += [conv_norm_relu(a, b, 3, stride=2) for a, b in zip(channels[:-1], channels[1:])]
        blocks += [nn.ReflectionPad2d(1), nn.Conv2d(channels[-1], latent_channels, 3)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


class HyperAnalysis(nn.Module):
    """Ha: 3x3 conv, then two stride-2 5x5 convs.  ``(B,C,h,w)`` → ``(B,N,h/4,w/4)``."""

    def __init__(self, latent_channels: int, hyper_channels: int) -> None:
        super().__init__()
        c, n = latent_channels, hyper_channels
        self.net = nn.Sequential(
            nn.Conv2d(c, n, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
        )

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y)


def cdf_indexes(table: Tensor, scales: Tensor) -> Tensor:
    """Index of the smallest table scale >= each scale (int32, same shape as ``scales``).

    The same indexes as compressai's ``GaussianConditional.build_indexes``, which loops over the table in
    Python (1 s at 768x512 on two cores); one ``searchsorted`` of exact comparisons instead.
    """
    return torch.searchsorted(table[:-1].to(scales.device).contiguous(), scales.contiguous()).int()


@dataclass(frozen=True)
class LatentStreams:
    """What ``compress`` produces: the two rANS streams and the 16-bit check of the coded symbols."""

    z_stream: bytes
    y_stream: bytes
    latent_check: int


def latent_check(z_symbols: Tensor, y_symbols: Tensor) -> int:
    """Low 16 bits of CRC-32 over the int32 little-endian symbols of ẑ then ŷ."""
    crc = 0
    for s in (z_symbols, y_symbols):
        crc = zlib.crc32(s.detach().cpu().to(torch.int32).numpy().astype("<i4").tobytes(), crc)
    return crc & 0xFFFF


class GDNAnalysis(nn.Module):
    """E (Ballé et al. 2018): four 5x5 stride-2 convs, GDN after the first three.  ``(B,3,H,W)`` → ``(B,C,H/16,W/16)``.

    Input is RGB in [0, 1].  Chosen for nano by a side-by-side stage-1 probe (docs/decisions.md).
    """

    def __init__(self, width: int, latent_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a in (3, width, width):
            layers += [nn.Conv2d(a, width, 5, stride=2, padding=2), gdn(width)]
        layers.append(nn.Conv2d(width, latent_channels, 5, stride=2, padding=2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


class CompressionModule(nn.Module):
    """E, Ha, P and the entropy models, with the training ``forward`` and the exact coding path."""

    def __init__(self, config: SodecConfig) -> None:
        super().__init__()
        c, n = config.latent_channels, config.hyper_channels
        if config.transforms == "gdn":
            self.encoder: nn.Module = GDNAnalysis(config.gdn_channels, c)
        else:
            self.encoder = Analysis(config.encoder_channels, c)
        self.hyper_analysis = HyperAnalysis(c, n)
        self.entropy_parameters = ExactEntropyParameters(n, c)
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional(scale_table())

    def forward(self, x: Tensor) -> dict[str, Tensor | dict[str, Tensor]]:
        """Training path with additive-noise quantisation of z and ŷ = round(y − μ) + μ (straight-through).

        Returns ``y_hat`` ``(B,C,H/16,W/16)``, ``z_hat`` ``(B,N,H/64,W/64)`` and ``likelihoods`` of y and z.
        """
        y = self.encoder(x)
        z = self.hyper_analysis(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.entropy_parameters(z_hat)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        y_hat = y + (torch.round(y - means) + means - y).detach()
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def update(self) -> None:
        """Freeze everything the coder needs into buffers: the integer P, the CDF tables of both priors."""
        self.entropy_parameters.update()
        self.entropy_bottleneck.update(force=True)
        self.gaussian_conditional.update_scale_table(scale_table(), force=True)

    def _gaussian_params(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """CDF indexes and means of ŷ from ẑ, exact on every machine (CPU tensors)."""
        scales, means = self.entropy_parameters.exact(z_hat)
        return cdf_indexes(self.gaussian_conditional.scale_table, scales), means

    @torch.no_grad()
    def compress(self, x: Tensor) -> tuple[LatentStreams, Tensor, Tensor]:
        """Code one image.  ``x``: ``(1,3,H,W)`` in [0, 1], H and W multiples of 64.

        Returns the streams, and ŷ ``(1,C,H/16,W/16)`` and ẑ exactly as the decoder will reconstruct them.
        """
        if x.shape[0] != 1:
            raise ValueError("compress codes one image at a time")
        return self.compress_latent(self.encoder(x))

    @torch.no_grad()
    def compress_latent(self, y: Tensor, z: Tensor | None = None) -> tuple[LatentStreams, Tensor, Tensor]:
        """Code the analysis output ``y`` ``(1,C,h,w)`` (h, w multiples of 4): what :meth:`compress` does after E.

        The tiled encoder (:func:`sodec.models.tiling.analyze_tiled`) computes ``y`` in pieces and codes it here.
        ``z`` ``(1,N,h/4,w/4)``: the hyper-latent to code instead of Ha(y) (encode-time refinement,
        :mod:`sodec.models.refine`); the means and scales still come from the exact P on its ẑ.
        """
        if z is None:
            z = self.hyper_analysis(y)
        eb = self.entropy_bottleneck
        z_strings = eb.compress(z)
        # ẑ as the decoder will see it (same symbols, same medians, same float ops).
        z_hat = eb.decompress(z_strings, z.shape[-2:])
        z_symbols = eb.quantize(z_hat, "symbols", eb._get_medians())
        indexes, means = self._gaussian_params(z_hat)  # CPU from here on: the exact path
        y = y.cpu()
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        y_symbols = self.gaussian_conditional.quantize(y, "symbols", means)
        check = latent_check(z_symbols, y_symbols)
        return LatentStreams(z_strings[0], y_strings[0], check), y_symbols.float() + means, z_hat

    @torch.no_grad()
    def decompress(self, streams: LatentStreams, latent_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Decode ŷ ``(1,C,h,w)`` on the CPU and ẑ ``(1,N,h/4,w/4)`` (``latent_hw`` = (h, w), multiples of 4).

        Raises:
            FormatError: the decoded symbols do not match the encoder's check (corrupted streams, or a
                model/coder mismatch); nothing is returned then.
        """
        h, w = latent_hw
        eb = self.entropy_bottleneck
        z_hat = eb.decompress([streams.z_stream], (h // 4, w // 4))
        z_symbols = eb.quantize(z_hat, "symbols", eb._get_medians())
        indexes, means = self._gaussian_params(z_hat)
        y_symbols = self.gaussian_conditional.decompress([streams.y_stream], indexes).cpu()
        if latent_check(z_symbols, y_symbols) != streams.latent_check:
            raise FormatError(
                "latent check failed: the streams do not decode to what was encoded (corrupted file or model mismatch)"
            )
        return y_symbols + means, z_hat
