"""A wider-latent autoencoder started from a narrower one decodes exactly as the narrower one did."""

from __future__ import annotations

import pytest
import torch

from sodec.train.widen import latent_channels_of, widen_vae_latent


def vae(latent: int, widths: tuple[int, ...] = (8, 8)):
    from diffusers import AutoencoderKL

    torch.manual_seed(latent)
    return AutoencoderKL(
        block_out_channels=list(widths), down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=latent, layers_per_block=1, norm_num_groups=4,
        mid_block_add_attention=False,
    ).eval()  # fmt: skip


def test_a_widened_latent_decodes_as_before_and_the_new_channels_carry_a_signal():
    narrow, wide = vae(4), vae(12)
    state = {k: v.half() for k, v in narrow.state_dict().items()}  # as a shipped float16 base
    narrow.load_state_dict(state)
    wide.load_state_dict(widen_vae_latent(state, 12))
    assert latent_channels_of(wide.state_dict()) == 12
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        old, new = narrow.encode(x).latent_dist, wide.encode(x).latent_dist
        assert torch.allclose(new.mean[:, :4], old.mean, atol=1e-5)
        assert torch.allclose(new.logvar[:, :4], old.logvar, atol=1e-5)
        assert new.mean[:, 4:].abs().mean() > 0  # the decoder has something to learn to read
        assert torch.allclose(wide.decode(new.mode()).sample, narrow.decode(old.mode()).sample, atol=1e-5)


def test_widening_refuses_to_narrow_and_leaves_an_equal_width_alone():
    state = vae(4).state_dict()
    with pytest.raises(ValueError, match="cannot narrow"):
        widen_vae_latent(state, 2)
    same = widen_vae_latent(state, 4)
    assert same.keys() == state.keys() and all(torch.equal(same[k], state[k]) for k in state)


def test_a_widened_unet_predicts_the_old_channels_as_before_and_zero_for_the_new():
    from diffusers import UNet2DConditionModel

    from sodec.train.widen import widen_unet_latent

    kwargs = dict(sample_size=8, block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4,
                  down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], cross_attention_dim=16,
                  up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], attention_head_dim=4)  # fmt: skip
    torch.manual_seed(0)
    narrow = UNet2DConditionModel(in_channels=4, out_channels=4, **kwargs).eval()
    wide = UNet2DConditionModel(in_channels=12, out_channels=12, **kwargs).eval()
    wide.load_state_dict(widen_unet_latent(narrow.state_dict(), 12))
    z, tokens, t = torch.randn(1, 12, 8, 8), torch.randn(1, 5, 16), torch.tensor([500])
    with torch.no_grad():
        old, new = narrow(z[:, :4], t, tokens).sample, wide(z, t, tokens).sample
    assert torch.allclose(new[:, :4], old, atol=1e-5) and torch.equal(new[:, 4:], torch.zeros_like(new[:, 4:]))


def test_a_deepened_vae_codes_as_before_and_its_new_resnets_can_learn():
    from diffusers import AutoencoderKL

    from sodec.train.widen import deepen_vae

    def build(layers: int):
        return AutoencoderKL(
            block_out_channels=[8, 8], down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=layers, norm_num_groups=4,
            mid_block_add_attention=False,
        ).eval()  # fmt: skip

    torch.manual_seed(0)
    shallow, deep = build(1), build(2)
    state = {k: v.half() for k, v in shallow.state_dict().items()}  # as a shipped float16 base
    shallow.load_state_dict(state)
    deepened = deepen_vae(state, deep.state_dict())
    added = deep.state_dict().keys() - state.keys()
    assert {"decoder.up_blocks.0.resnets.2.conv2.weight", "encoder.down_blocks.1.resnets.1.conv1.weight"} <= added
    deep.load_state_dict(deepened)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = shallow.encode(x).latent_dist.mode()
        assert torch.allclose(deep.encode(x).latent_dist.mode(), z, atol=1e-5)
        assert torch.allclose(deep.decode(z).sample, shallow.decode(z).sample, atol=1e-5)
    deep.decode(z).sample.square().mean().backward()  # a zero conv2 still gets a gradient: the resnet can learn
    assert deep.decoder.up_blocks[0].resnets[2].conv2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="does not fit"):
        deepen_vae(vae(8).state_dict(), deep.state_dict())


def test_doubled_blocks_code_as_before_and_their_copies_train_apart():
    from sodec.train.widen import fit_vae_state, widen_vae_blocks

    narrow, wide = vae(4, (8, 8)), vae(4, (8, 16))
    wide.load_state_dict(fit_vae_state(narrow.state_dict(), wide.state_dict()))
    assert wide.decoder.conv_in.weight.shape[0] == 16  # the low-resolution block (and the mid-block) doubled
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        old, new = narrow.encode(x).latent_dist, wide.encode(x).latent_dist
        assert torch.allclose(new.mean, old.mean, atol=1e-5) and torch.allclose(new.logvar, old.logvar, atol=1e-5)
        assert torch.allclose(wide.decode(old.mode()).sample, narrow.decode(old.mode()).sample, atol=1e-5)
    wide.train()
    ((wide.decode(old.mode()).sample - x) ** 2).mean().backward()
    grad = wide.decoder.mid_block.resnets[0].conv1.weight.grad
    assert not torch.allclose(grad[0::2], grad[1::2])  # the ±ε split the copies: they do not train as one
    with pytest.raises(ValueError, match="not a doubling"):
        widen_vae_blocks(narrow.state_dict(), vae(4, (8, 12)).state_dict())
    with pytest.raises(ValueError, match="shortcut has no place"):  # (8, 16) → (16, 16): a learnt 1×1 shortcut lost
        widen_vae_blocks(wide.state_dict(), vae(4, (16, 16)).state_dict())
