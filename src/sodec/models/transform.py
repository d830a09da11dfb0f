"""Hs and Ts: from the coded latents to a latent in the diffusion model's space.

ẑ ──Hs──▶ w                        global side features at 1/16
(ŷ, w) ──Ts──▶ ŷ_t                 4-channel latent at 1/8, the one-step UNet's input
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sodec.models.layers import ResidualBlock


class HyperSynthesis(nn.Module):
    """Hs: two stride-2 5x5 transposed convs.  ẑ ``(B,N,h/4,w/4)`` → w ``(B,out,h,w)``."""

    def __init__(self, hyper_channels: int, out_channels: int) -> None:
        super().__init__()
        n = hyper_channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(n, out_channels, 5, stride=2, padding=2, output_padding=1),
        )

    def forward(self, z_hat: Tensor) -> Tensor:
        return self.net(z_hat)


class LatentTransform(nn.Module):
    """Ts: merge ŷ and w, residual blocks at 1/16, 2x upsampling, 3x3 conv to the diffusion latent.

    ŷ ``(B,C,h,w)`` and w ``(B,Cw,h,w)`` → ŷ_t ``(B,latent_channels,2h,2w)``.
    """

    def __init__(
        self, latent_channels: int, side_channels: int, hidden: int, res_blocks: int, out_channels: int = 4
    ) -> None:
        super().__init__()
        self.merge = nn.Conv2d(latent_channels + side_channels, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(res_blocks)])
        self.up = nn.Sequential(nn.Conv2d(hidden, 4 * hidden, 3, padding=1), nn.PixelShuffle(2), nn.SiLU())
        self.out = nn.Conv2d(hidden, out_channels, 3, padding=1)

    def forward(self, y_hat: Tensor, w: Tensor) -> Tensor:
        x = self.merge(torch.cat([y_hat, w], dim=1))
        return self.out(self.up(x + self.blocks(x)))
