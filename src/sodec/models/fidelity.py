"""Da, the fidelity decoder: ŷ → x̂_f (HiFiC generator shape).  Later also the fidelity branch of SODEC."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from sodec.models.layers import ChannelNorm2d, ResidualBlock, conv_norm_relu, gdn


class FidelityDecoder(nn.Module):
    """3x3 conv C→c0, residual blocks at 1/16, four stride-2 transposed convs, 7x7 conv to RGB.

    ``(B,C,h,w)`` → ``(B,3,16h,16w)``, RGB in about [0, 1] (not clamped, so training gets gradients).
    ``gradient_checkpointing`` (training only) recomputes each residual block and each upsampling stage in the
    backward pass instead of keeping their activations: the same values and gradients, less memory.
    """

    gradient_checkpointing = False

    def __init__(self, latent_channels: int, channels: tuple[int, ...], res_blocks: int) -> None:
        super().__init__()
        self.head = nn.Sequential(conv_norm_relu(latent_channels, channels[0], 3))
        self.res_blocks = nn.Sequential(*[ResidualBlock(channels[0]) for _ in range(res_blocks)])
        ups = []
        for a, b in zip(channels[:-1], channels[1:]):
            ups += [
                nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1),
                ChannelNorm2d(b),
                nn.ReLU(inplace=True),
            ]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(channels[-1], 3, 7))

    def forward(self, y_hat: Tensor) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._checkpointed(y_hat)
        x = self.head(y_hat)
        x = x + self.res_blocks(x)  # HiFiC's global skip around the residual stack
        return (self.tail(self.up(x)) + 1) / 2

    def _checkpointed(self, y_hat: Tensor) -> Tensor:
        """:meth:`forward`, segment by segment under ``torch.utils.checkpoint`` (same operations, same order)."""
        x = self.head(y_hat)
        r = x
        for block in self.res_blocks:
            r = checkpoint(block, r, use_reentrant=False)
        x = x + r
        for i in range(0, len(self.up), 3):  # (transposed conv, ChannelNorm, ReLU) per scale
            x = checkpoint(self.up[i : i + 3], x, use_reentrant=False)
        return (checkpoint(self.tail, x, use_reentrant=False) + 1) / 2


class GDNFidelityDecoder(nn.Module):
    """Da (Ballé et al. 2018): four 5x5 stride-2 transposed convs, IGDN after the first three.

    ``(B,C,h,w)`` → ``(B,3,16h,16w)``, RGB in about [0, 1] (not clamped).  ``tail`` holds the output layer (the
    synthesis precision is read from it); ``gradient_checkpointing`` recomputes each scale in the backward pass.
    """

    gradient_checkpointing = False

    def __init__(self, latent_channels: int, width: int) -> None:
        super().__init__()
        def deconv(a: int, b: int) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1)

        self.up = nn.ModuleList(
            nn.Sequential(deconv(a, width), gdn(width, inverse=True)) for a in (latent_channels, width, width)
        )
        self.tail = nn.Sequential(deconv(width, 3))

    def forward(self, y_hat: Tensor) -> Tensor:
        x = y_hat
        for stage in self.up:
            use_checkpoint = self.gradient_checkpointing and torch.is_grad_enabled()
            x = checkpoint(stage, x, use_reentrant=False) if use_checkpoint else stage(x)
        return (self.tail(x) + 1) / 2
