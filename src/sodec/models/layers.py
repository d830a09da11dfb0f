"""Building blocks shared by the SODEC modules (HiFiC-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sodec._compressai import GDN


class ChannelNorm2d(nn.Module):
    """HiFiC's ChannelNorm: normalise each pixel over its channels, then a per-channel affine.

    Unlike BatchNorm it has no running statistics and unlike InstanceNorm no spatial reduction, so a
    pixel's output never depends on the rest of the image (tiling-safe, batch-size independent).
    Shape: ``(B, C, H, W)`` → same.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # layer_norm over the last dim of a channels-last view: 3x faster on CPU than mean/var over dim 1.
        c = x.shape[1]
        y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), self.weight.view(c), self.bias.view(c), self.eps)
        return y.permute(0, 3, 1, 2)


def conv_norm_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Reflection-padded conv → ChannelNorm → ReLU; ``stride`` 2 halves the resolution."""
    return nn.Sequential(
        nn.ReflectionPad2d(kernel // 2) if kernel > 1 else nn.Identity(),
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride),
        ChannelNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """HiFiC generator block: x + CN(conv(ReLU(CN(conv(x))))).  Shape preserved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_relu(channels, channels, 3),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            ChannelNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)



class GDN32(GDN):
    """compressai's GDN / IGDN (Ballé et al.) with its normalisation in float32 under half precision.

    ``(B, C, H, W)`` → same.  GDN squares its input: in float16, ``|x| > 256`` overflows to inf and the output
    turns to NaN (shown in tests/test_gdn_precision.py); the trained nano GDN model's inputs peak at
    ``|x| ≈ 4`` (docs/decisions.md), but an untrained or diverging model's need not.  With float32 input,
    float32 weights and no autocast the call is compressai's own (the same bits); otherwise the input, β and γ
    are promoted to float32 with autocast off, and the output is cast back to the input's dtype.  A 1×1
    convolution over the channels: its cost is small next to the 5×5 convolutions around it.
    """

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        if x.dtype == self.gamma.dtype == torch.float32 and not torch.is_autocast_enabled(device):
            return super().forward(x)
        c = x.shape[1]
        with torch.autocast(device, enabled=False):
            x32 = x.float()
            # the reparametrisers' buffers may be half (a module cast with .to): promoted by the float32 terms
            beta = self.beta_reparam(self.beta.float()).float()
            gamma = self.gamma_reparam(self.gamma.float()).float().reshape(c, c, 1, 1)
            norm = F.conv2d(x32 * x32, gamma, beta)
            norm = torch.sqrt(norm) if self.inverse else torch.rsqrt(norm)
            return (x32 * norm).to(x.dtype)


def gdn(channels: int, inverse: bool = False) -> GDN32:
    """GDN (``inverse=False``, in E) or IGDN (in Da) over ``channels``: :class:`GDN32`."""
    return GDN32(channels, inverse=inverse)
