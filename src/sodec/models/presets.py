"""Named configurations: ``paper`` (HiFiC widths, GPU scale), ``nano`` (two CPU cores), ``tiny`` (tests)."""

from __future__ import annotations

from sodec.models.config import SodecConfig

PRESETS: dict[str, dict] = {
    "paper": dict(
        latent_channels=220,
        hyper_channels=320,
        encoder_channels=(60, 120, 240, 480, 960),
        decoder_channels=(960, 480, 240, 120, 60),
        decoder_res_blocks=9,
    ),
    "nano": dict(
        latent_channels=96,
        hyper_channels=96,
        encoder_channels=(16, 32, 64, 128, 192),
        decoder_channels=(128, 64, 32, 24, 16),
        decoder_res_blocks=3,
    ),
    "tiny": dict(
        latent_channels=8,
        hyper_channels=8,
        encoder_channels=(4, 4, 8, 8, 8),
        decoder_channels=(8, 8, 4, 4, 4),
        decoder_res_blocks=1,
    ),
}


def preset_config(preset: str, **overrides) -> SodecConfig:
    """The config of a named preset; ``overrides`` replace single fields (``name`` defaults to the preset)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return SodecConfig(**{"name": preset, **PRESETS[preset], **overrides})
