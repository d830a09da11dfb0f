"""Model configuration: a plain dataclass stored as ``config.json`` in every model folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
# LoRA targets: attention projections and resnet convolutions (DESIGN.md; rank 16 by default).
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")
WEIGHTS_NAME = "model.safetensors"


def model_folder_files(folder: Path) -> tuple[Path, Path]:
    """``folder``'s config and weights files; :class:`~sodec.errors.ModelError` unless both exist."""
    from sodec.errors import ModelError

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{folder} is not a sodec model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    return config_path, weights_path
GUIDANCE_MODES = ("fgm", "none", "hyperprior", "prompt")
GUIDANCE_LAYOUTS = ("sequence", "grid")
# What the UNet predicts (diffusers' scheduler ``prediction_type``): SD 2.1-base ε, SD 2.1 (768) v.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class DiffusionConfig:
    """The one-step diffusion decoder: frozen bases (UNet, VAE, guidance backbone) and what SODEC trains.

    ``base`` is a diffusers folder or hub id with ``unet/`` and ``vae/`` subfolders (the
    ``stabilityai/stable-diffusion-2-1-base`` layout).  ``unet`` / ``vae`` are the configs the bases are
    built from when they are created rather than loaded (tests, benchmarks, nano's own prior before training).
    """

    base: str | None = None
    base_hash: str | None = None  # SHA-256 of the frozen bases the model was trained on (checked at load)
    unet: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    timestep: int = 999
    beta_start: float = 0.00085  # Stable Diffusion's "scaled_linear" schedule
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    lora_rank: int = 16
    lora_alpha: float | None = None  # None: equal to the rank
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    side_channels: int = 320  # w = Hs(ẑ) at 1/16
    transform_channels: int = 320  # Ts width
    transform_blocks: int = 2
    guidance_backbone: str = "vit_huge_patch14_clip_224"  # any timm model name
    guidance_weights: str | None = None  # safetensors file of the backbone
    guidance_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments
    guidance_tokens: int = 77
    # c_g's source: "fgm" (the paper: x̂_f through F and Fp) or an ablation: "none" (null tokens),
    # "hyperprior" (tokens from Hs(ẑ), DiffEIC-style), "prompt" (a learned constant token set, PerCo-style)
    guidance: str = "fgm"
    # How F's tokens become c_g (docs/decisions.md, "guidance tokens"): "sequence" squashes x̂_f to the backbone's
    # square input and resamples its tokens linearly, in raster order, to ``guidance_tokens`` (nano, and every
    # model folder written before the field); "grid" keeps the aspect (letterbox), keeps the prefix (CLS) tokens
    # and the patch grid of the image's content, 2-D average-pooled to ``guidance_grid`` tokens on its longer side
    # (None: not pooled) — the paper preset's
    guidance_layout: str = "sequence"
    guidance_grid: int | None = None
    # The UNet's output: "epsilon" (SD 2.1-base), "v_prediction" (SD 2.1 768-v) or "sample"; read from the base's
    # scheduler/scheduler_config.json when training, and checked against it when a model is loaded
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        self.lora_targets = tuple(self.lora_targets)
        if self.guidance not in GUIDANCE_MODES:
            raise ValueError(f"diffusion.guidance must be one of {', '.join(GUIDANCE_MODES)} (got {self.guidance!r})")
        if self.guidance_layout not in GUIDANCE_LAYOUTS:
            raise ValueError(
                f"diffusion.guidance_layout must be one of {', '.join(GUIDANCE_LAYOUTS)} (got {self.guidance_layout!r})"
            )
        if self.guidance_grid is not None and self.guidance_grid < 1:
            raise ValueError(f"diffusion.guidance_grid must be a positive number of tokens (got {self.guidance_grid})")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"diffusion.prediction_type must be one of {', '.join(PREDICTION_TYPES)} (got {self.prediction_type!r})"
            )

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.get("cross_attention_dim", 1024))

    def unet_build_config(self) -> dict[str, Any]:
        """``unet`` with its input and output channels set to the VAE's latent channels (unless it names them):
        a preset that widens the latent changes one field, not three."""
        channels = self.vae.get("latent_channels", 4)
        return {"in_channels": channels, "out_channels": channels, **self.unet}


@dataclass
class SodecConfig:
    """Widths and identity of one SODEC model (one rate point).

    ``name`` identifies the model family (it is written into every `.sodec` file so that the decoder can
    find the model again); ``rate_point`` is the index of this member of the family, 0 = lowest rate.
    """

    name: str = "nano"
    rate_point: int = 0
    latent_channels: int = 220  # C, ŷ at 1/16
    hyper_channels: int = 320  # N, ẑ at 1/64
    encoder_channels: tuple[int, ...] = (60, 120, 240, 480, 960)  # E: 7x7 conv, then 4 stride-2 convs
    decoder_channels: tuple[int, ...] = (960, 480, 240, 120, 60)  # Da: 1/16 width, then 4 upsamplings
    decoder_res_blocks: int = 9
    # E and Da: "hific" (the paper's HiFiC shapes, the widths above) or "gdn" (Ballé et al. 2018: four 5x5
    # stride-2 convolutions with GDN / IGDN at ``gdn_channels``; the widths above are then unused)
    transforms: str = "hific"
    gdn_channels: int = 128
    lmbda: float = 0.0  # rate weight this model was trained with (informative)
    diffusion: DiffusionConfig | None = None  # None: the fidelity decoder Da is the decoder
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (training run, data, ...)

    def __post_init__(self) -> None:
        if isinstance(self.diffusion, dict):
            self.diffusion = DiffusionConfig(**self.diffusion)
        self.encoder_channels = tuple(self.encoder_channels)
        self.decoder_channels = tuple(self.decoder_channels)
        if len(self.encoder_channels) != 5 or len(self.decoder_channels) != 5:
            raise ValueError("encoder_channels and decoder_channels need 5 widths (one per scale)")
        if self.transforms not in ("hific", "gdn"):
            raise ValueError(f"transforms must be hific or gdn, not {self.transforms!r}")

    @property
    def downsampling(self) -> int:
        """Input sides must be multiples of this (ŷ at 1/16, ẑ two more stride-2 steps down)."""
        return 64

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        d["decoder_channels"] = list(self.decoder_channels)
        if self.transforms == "hific":  # every model folder written before the option stays byte-identical
            del d["transforms"], d["gdn_channels"]
        if self.diffusion is None:
            del d["diffusion"]  # keep fidelity-only configs (and their files) exactly as before
        else:
            d["diffusion"]["lora_targets"] = list(self.diffusion.lora_targets)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SodecConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if isinstance(d.get("diffusion"), dict):
            unknown |= {
                f"diffusion.{k}" for k in set(d["diffusion"]) - {f.name for f in dataclasses.fields(DiffusionConfig)}
            }
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)
