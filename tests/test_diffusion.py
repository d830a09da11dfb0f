"""One-step denoiser with LoRA and the VAE decoder Dm, at tiny width with random weights."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from sodec.models.diffusion import LatentDecoder, OneStepDenoiser, alphas_cumprod


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def test_alpha_table_is_the_schedulers():
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.allclose(alphas_cumprod().float(), sched.alphas_cumprod, rtol=1e-5, atol=0)


def test_one_step_is_the_x0_estimate_at_t999():
    a = alphas_cumprod()[999].item()
    den = OneStepDenoiser(tiny_unet(), a).eval()
    y_t, tokens = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 16)
    with torch.no_grad():
        eps = den.unet(y_t, torch.tensor([999, 999]), encoder_hidden_states=tokens).sample
        expected = (y_t - (1 - a) ** 0.5 * eps) / a**0.5
        assert torch.allclose(den(y_t, tokens), expected, atol=1e-5)


def test_lora_trains_only_adapters_and_merges_exactly():
    den = OneStepDenoiser(tiny_unet(), alphas_cumprod()[999].item()).eval()
    y_t, tokens = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 16)
    with torch.no_grad():
        base = den(y_t, tokens)
    den.add_lora(rank=4)
    trainable = {n for n, p in den.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("to_q" in n for n in trainable) and any("conv1" in n for n in trainable)
    with torch.no_grad():
        assert torch.allclose(den(y_t, tokens), base, atol=1e-6)  # LoRA starts as the identity
        for n, p in den.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        adapted = den(y_t, tokens)
        assert not torch.allclose(adapted, base, atol=1e-4)
        assert den.lora_state_dict() and all("lora_" in k for k in den.lora_state_dict())
        den.merge_lora()
        assert not any("lora_" in n for n, _ in den.named_parameters())
        assert torch.allclose(den(y_t, tokens), adapted, atol=1e-4)


@pytest.mark.parametrize("scaling", [0.18215, 1.0])
def test_latent_decoder_scales_and_maps_to_unit_range(scaling):
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=scaling,
    ).eval()
    dm = LatentDecoder(vae)
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = dm(z)
        assert torch.allclose(out, (vae.decode(z / scaling).sample + 1) / 2)
    assert out.shape == (1, 3, 16, 16)
    assert not any(p.requires_grad for p in dm.parameters())


def test_merged_weights_do_not_depend_on_the_thread_count():
    weights = []
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            den = OneStepDenoiser(tiny_unet(), 0.5)
            den.add_lora(rank=4)
            torch.manual_seed(1)
            with torch.no_grad():
                for n, p in den.named_parameters():
                    if "lora_" in n:
                        p.normal_(0, 0.1)
            den.merge_lora()
            weights.append(den.unet.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
