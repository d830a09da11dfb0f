"""Discriminators for the adversarial terms, their losses and DiffAugment.

``patch`` is HiFiC's conditional PatchGAN; ``projected`` is a Projected GAN discriminator (Sauer et al., NeurIPS
2021): frozen ImageNet features (EfficientNet-Lite0, the one pretrained network that installs offline) at four
scales, mixed by fixed random 1×1 (cross-channel) and top-down (cross-scale) convolutions, each scale judged by
a small spectral-norm patch head.  Only the heads train, so D starts from features that already separate
texture from blur and learns from few photos (the paper reaches earlier FIDs up to 40× faster).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sodec.errors import ModelError

DISCRIMINATORS = ("patch", "projected")
ADVERSARIAL_LOSSES = ("ns", "hinge")
DIFFAUGMENT_OPS = ("color", "translation", "cutout")


def _spectral(conv: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(conv)


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (HiFiC's D): image ``(B,3,H,W)`` + condition ``(B,C,h,w)`` → logits ``(B,1,H/16,W/16)``.

    The condition (the coded latent ŷ, detached) is reduced to 12 channels and upsampled to the image size.
    """

    def __init__(self, cond_channels: int, width: int = 64, cond_width: int = 12) -> None:
        super().__init__()
        self.cond = nn.Sequential(nn.Conv2d(cond_channels, cond_width, 3, padding=1), nn.LeakyReLU(0.2))
        layers, c_in = [], 3 + cond_width
        for i, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            conv = nn.Conv2d(c_in, c, 4, stride=2, padding=1)
            layers += [_spectral(conv) if i else conv, nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor, cond: Tensor) -> Tensor:
        c = F.interpolate(self.cond(cond), size=image.shape[-2:], mode="nearest")
        return self.net(torch.cat([image * 2 - 1, c], dim=1))

    def checkpoint_state(self) -> dict[str, Tensor]:
        return self.state_dict()


class ProjectedDiscriminator(nn.Module):
    """Projected GAN D on a frozen EfficientNet-Lite0.  Image ``(B,3,H,W)`` in [0,1] (H, W multiples of 32) +
    condition ``(B,C,h,w)`` → logits ``(B, Σ_s h_s·w_s)``: one patch logit per position of the four feature maps
    (strides 4, 8, 16, 32), concatenated.

    Lite0's stages ``blocks[0:2]``, ``[2:3]``, ``[3:5]``, ``[5:7]`` (24, 40, 112, 320 channels) are projected by
    fixed random 1×1 convolutions to ``width × (1, 2, 4, 8)`` channels (cross-channel mixing), then mixed top-down
    (cross-scale: each scale adds the upsampled deeper one through a fixed random 3×3 convolution), as in Sauer
    et al.  Each scale's head (trained, spectral norm) sees the projection plus the condition reduced to
    ``cond_width`` channels and resized to that scale, so D judges realism *given* the coded latent.
    ``backbone_weights=None`` builds Lite0 with random weights (tests).
    """

    STAGES = ((0, 2), (2, 3), (3, 5), (5, 7))

    def __init__(
        self,
        cond_channels: int | None,
        width: int = 32,
        cond_width: int = 16,
        backbone_weights: str | None = "efficientnet-lite0",
        seed: int = 0,
    ) -> None:
        super().__init__()
        from sodec.models.guidance import GuidanceBackbone

        backbone = GuidanceBackbone.from_timm(
            "efficientnet_lite0", weights=backbone_weights, random_weights=backbone_weights is None
        )
        net = backbone.model
        self.register_buffer("mean", backbone.mean.clone(), persistent=False)
        self.register_buffer("std", backbone.std.clone(), persistent=False)
        stem = nn.Sequential(net.conv_stem, net.bn1)
        self.stages = nn.ModuleList(
            nn.Sequential(*([stem] if i == 0 else []), *net.blocks[a:b]) for i, (a, b) in enumerate(self.STAGES)
        )
        self.stages.eval().requires_grad_(False)
        channels = [stage[-1][-1].conv_pwl.out_channels for stage in self.stages]
        widths = [width * 2**i for i in range(len(channels))]
        generator = torch.Generator().manual_seed(seed)  # the fixed random mixing is a function of the seed

        def fixed(conv: nn.Conv2d) -> nn.Conv2d:
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            with torch.no_grad():
                # drawn on the CPU (the generator's device) whatever torch's default device: the same mixing
                # on every machine, and no CPU-generator/CUDA-tensor error when built on a GPU (build_on)
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator, device="cpu") / fan_in**0.5)
                conv.bias.zero_()
            return conv.requires_grad_(False)

        self.channel_mix = nn.ModuleList(fixed(nn.Conv2d(c, w, 1)) for c, w in zip(channels, widths))
        self.scale_mix = nn.ModuleList(fixed(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1))
                                       for i in range(len(widths) - 1))  # fmt: skip
        self.cond = None
        if cond_channels:
            self.cond = nn.Sequential(nn.Conv2d(cond_channels, cond_width, 3, padding=1), nn.LeakyReLU(0.2))
        extra = cond_width if cond_channels else 0
        self.heads = nn.ModuleList(
            nn.Sequential(_spectral(nn.Conv2d(w + extra, w, 3, padding=1)), nn.LeakyReLU(0.2),
                          _spectral(nn.Conv2d(w, 1, 1)))
            for w in widths
        )  # fmt: skip

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.stages.eval()  # frozen: BatchNorm statistics stay ImageNet's
        return self

    def features(self, image: Tensor) -> list[Tensor]:
        """The mixed features, one ``(B, width·2^s, H/2^(s+2), W/2^(s+2))`` map per scale s."""
        x = (image - self.mean) / self.std
        projected = []
        for stage, mix in zip(self.stages, self.channel_mix):
            x = stage(x)
            projected.append(mix(x))
        mixed = [projected[-1]]
        for i in range(len(projected) - 2, -1, -1):
            up = F.interpolate(mixed[0], size=projected[i].shape[-2:], mode="bilinear", align_corners=False)
            mixed.insert(0, projected[i] + self.scale_mix[i](up))
        return mixed

    def forward(self, image: Tensor, cond: Tensor | None = None) -> Tensor:
        if image.shape[-1] % 32 or image.shape[-2] % 32:
            raise ModelError(f"the projected discriminator needs sides divisible by 32, got {tuple(image.shape)}")
        c = self.cond(cond) if self.cond is not None else None
        logits = []
        for feats, head in zip(self.features(image), self.heads):
            if c is not None:
                feats = torch.cat([feats, F.interpolate(c, size=feats.shape[-2:], mode="nearest")], dim=1)
            logits.append(head(feats).flatten(1))
        return torch.cat(logits, dim=1)

    def checkpoint_state(self) -> dict[str, Tensor]:
        """What trains (the heads, the condition's convolution): the backbone and the fixed mixing are rebuilt."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("heads.", "cond."))}


def build_discriminator(kind: str, cond_channels: int | None, random_weights: bool = False) -> nn.Module:
    """``kind`` is one of :data:`DISCRIMINATORS`; ``random_weights`` gives the projected D a random backbone."""
    if kind == "patch":
        if cond_channels is None:
            raise ModelError("the patch discriminator needs a condition")
        return PatchDiscriminator(cond_channels)
    if kind == "projected":
        return ProjectedDiscriminator(cond_channels, backbone_weights=None if random_weights else "efficientnet-lite0")
    raise ModelError(f"unknown discriminator {kind!r} (choose from {', '.join(DISCRIMINATORS)})")


def generator_loss(logits_fake: Tensor, kind: str = "ns") -> Tensor:
    """G's loss: non-saturating ``−log D(x̂)`` (``ns``) or hinge ``−D(x̂)``."""
    if kind == "hinge":
        return -logits_fake.mean()
    return F.softplus(-logits_fake).mean()


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor, kind: str = "ns") -> Tensor:
    """D's loss: ``−log D(x) − log(1 − D(x̂))`` (``ns``) or hinge ``max(0, 1 − D(x)) + max(0, 1 + D(x̂))``."""
    if kind == "hinge":
        return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def parse_diffaugment(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` → the ops, checked; ``""`` → none."""
    ops = tuple(op.strip() for op in policy.split(",") if op.strip())
    unknown = [op for op in ops if op not in DIFFAUGMENT_OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment op(s) {unknown} (choose from {', '.join(DIFFAUGMENT_OPS)})")
    return ops


def diffaugment(x: Tensor, ops: tuple[str, ...]) -> Tensor:
    """DiffAugment (Zhao et al., NeurIPS 2020): differentiable random augmentations applied to *both* real and fake
    images before D, so D cannot memorise a small training set.  ``x`` ``(B,3,H,W)`` in [0,1]; the randomness comes
    from torch's global generator (the training loop reseeds it every step).

    - ``color``: brightness ±0.25, saturation ×[0, 2], contrast ×[0.5, 1.5], per image;
    - ``translation``: shift by up to 1/8 of each side, zero padding, per image;
    - ``cutout``: a zeroed square of half each side at a random place, per image.
    """
    b = x.shape[0]

    def rand() -> Tensor:
        return torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype)

    if "color" in ops:
        x = x + (rand() - 0.5) * 0.5
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (rand() * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (rand() + 0.5) + mean
    h, w = x.shape[-2:]
    if "translation" in ops:
        shift = (torch.rand(b, 2, device=x.device) * 2 - 1) * torch.tensor([w / 8, h / 8], device=x.device)
        shift = shift.round() * torch.tensor([2 / w, 2 / h], device=x.device)  # whole pixels, in grid units
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = -shift.to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if "cutout" in ops:
        ch, cw = h // 2, w // 2
        top = (torch.rand(b, 1, 1, device=x.device) * (h - ch + 1)).floor()
        left = (torch.rand(b, 1, 1, device=x.device) * (w - cw + 1)).floor()
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x


def adaptive_weight(reconstruction: Tensor, adversarial: Tensor, last_layer: Tensor, limit: float = 1e4) -> Tensor:
    """VQGAN's balance (Esser et al. 2021): ‖∇_w L_rec‖ / (‖∇_w L_G‖ + 1e-4) at the generator's last layer ``w``,
    detached and clamped to [0, ``limit``], so the adversarial gradient there is as large as the reconstruction's
    (times β) whatever the losses' scales."""
    g_rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, limit).detach()
