"""Start a wider or deeper KL autoencoder (and its UNet) from trained smaller ones, computing the same function.

Nano's autoencoder (Dm's ceiling, issue 22) gains from more latent channels, but training one from scratch
throws away hours of CPU.  :func:`widen_vae_latent` maps a diffusers ``AutoencoderKL`` state dict with C latent
channels onto one with C' > C: the encoder's last convolution keeps its C mean and C log-variance rows in their
new places (diffusers splits the 2C' moments as C' means, then C' log-variances), and the decoder's first
convolution keeps its C input columns, with zeros for the new ones.  So the widened model decodes exactly as the
old one at the start, and training lets the new channels carry what the old ones could not (Net2Net-style).
:func:`widen_unet_latent` does the same for the denoiser that works on those latents: the new input channels are
read with zero weights, and the new output channels are predicted as zero, so the old channels' predictions are
unchanged and stage 0b learns the new ones.
:func:`deepen_vae` adds resnets to every block (a larger ``layers_per_block``): each new resnet is an identity at
the start (its second convolution is zero, and diffusers' ``ResnetBlock2D`` adds its input back), so Dm gains
depth without forgetting what it learnt.
:func:`widen_vae_blocks` doubles the channels of some blocks (Net2WiderNet, Chen et al. 2016): every channel of a
doubled block is copied into two neighbours, ``2c`` and ``2c + 1``, so each GroupNorm group holds the copies of
exactly the channels it held before and its statistics do not change; a convolution that reads a doubled block
reads each pair with weights ``w/2 + ε`` and ``w/2 − ε``, the same sum on equal inputs, and the ±ε break the
symmetry between the copies so that training can tell them apart.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

ENCODER_OUT = "encoder.conv_out"  # (2C, width, 3, 3): C means, then C log-variances
QUANT = "quant_conv"  # 1×1 (2C, 2C) on the moments
POST_QUANT = "post_quant_conv"  # 1×1 (C, C) on the latent
DECODER_IN = "decoder.conv_in"  # (width, C, 3, 3)


def latent_channels_of(state: dict[str, Tensor]) -> int:
    return int(state[f"{DECODER_IN}.weight"].shape[1])


def widen_vae_latent(state: dict[str, Tensor], channels: int, seed: int = 0) -> dict[str, Tensor]:
    """``state`` (an ``AutoencoderKL`` state dict with C latent channels) widened to ``channels`` ≥ C.

    New mean rows of the encoder's output get a small random init (1/10 of its rows' scale), so they carry a
    signal the decoder can learn to read; new log-variance rows get the old rows' mean bias and no weights;
    the 1×1 moment and latent convolutions are extended as identities on the new channels; the decoder's new
    input columns are zero.  Every other tensor is returned unchanged.
    """
    old = latent_channels_of(state)
    if channels < old:
        raise ValueError(f"cannot narrow a VAE latent ({old} → {channels} channels)")
    if channels == old:
        return dict(state)
    state = {k: v.float() for k, v in state.items()}  # bases are stored in float16
    out, new = dict(state), channels - old
    generator = torch.Generator().manual_seed(seed)

    w, b = state[f"{ENCODER_OUT}.weight"], state[f"{ENCODER_OUT}.bias"]
    mean_w, logvar_w = w[:old], w[old:]
    noise = torch.randn((new, *w.shape[1:]), generator=generator) * 0.1 * mean_w.std()
    out[f"{ENCODER_OUT}.weight"] = torch.cat([mean_w, noise, logvar_w, torch.zeros_like(noise)])
    out[f"{ENCODER_OUT}.bias"] = torch.cat([b[:old], torch.zeros(new), b[old:],
                                            b[old:].mean().expand(new)])  # fmt: skip

    def extend_identity(weight: Tensor, bias: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        """A 1×1 convolution on ``blocks`` stacked groups of channels, each group widened by identities."""
        size = blocks * channels
        wide, wide_bias = torch.zeros(size, size, 1, 1), torch.zeros(size)
        for i in range(blocks):  # keep the old map between old channels of each group
            rows, old_rows = slice(i * channels, i * channels + old), slice(i * old, (i + 1) * old)
            for j in range(blocks):
                wide[rows, j * channels : j * channels + old] = weight[old_rows, j * old : (j + 1) * old]
            added = slice(i * channels + old, (i + 1) * channels)
            wide[added, added] = torch.eye(new).view(new, new, 1, 1)
            wide_bias[rows] = bias[old_rows]
        return wide, wide_bias

    for name, groups in ((QUANT, 2), (POST_QUANT, 1)):
        if f"{name}.weight" in state:
            out[f"{name}.weight"], out[f"{name}.bias"] = extend_identity(
                state[f"{name}.weight"], state[f"{name}.bias"], groups
            )
    d = state[f"{DECODER_IN}.weight"]
    out[f"{DECODER_IN}.weight"] = torch.cat([d, torch.zeros((d.shape[0], new, *d.shape[2:]))], dim=1)
    return out


def widen_unet_latent(state: dict[str, Tensor], channels: int) -> dict[str, Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict whose latent (``conv_in`` input, ``conv_out`` output) is
    widened to ``channels`` with zero weights and biases; every other tensor unchanged, all as float32."""
    state = {k: v.float() for k, v in state.items()}
    old = int(state["conv_in.weight"].shape[1])
    if channels < old:
        raise ValueError(f"cannot narrow a UNet latent ({old} → {channels} channels)")
    new = channels - old
    w_in, w_out = state["conv_in.weight"], state["conv_out.weight"]
    state["conv_in.weight"] = torch.cat([w_in, torch.zeros((w_in.shape[0], new, *w_in.shape[2:]))], dim=1)
    state["conv_out.weight"] = torch.cat([w_out, torch.zeros((new, *w_out.shape[1:]))])
    state["conv_out.bias"] = torch.cat([state["conv_out.bias"], torch.zeros(new)])
    return state


_RESNET = re.compile(r"^(?P<block>.+\.resnets\.\d+)\.")


def deepen_vae(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` (a trained ``AutoencoderKL`` state dict) mapped onto ``target``'s (a fresh one of the same latent
    and widths with more resnets per block): tensors of ``state`` by name, the resnets it lacks from ``target``
    with their second convolution zeroed, so that every new resnet is an identity.  Returns float32 tensors.

    Raises ``ValueError`` if a tensor of ``state`` has no same-shaped place in ``target`` (other widths or latent:
    widen the latent first with :func:`widen_vae_latent`).
    """
    misfits = [k for k, v in state.items() if k not in target or target[k].shape != v.shape]
    if misfits:
        raise ValueError(f"the trained VAE does not fit the deeper one (other widths or latent?): {misfits[:3]}")
    out = {k: v.float() for k, v in target.items()} | {k: v.float() for k, v in state.items()}
    for block in {m["block"] for k in target.keys() - state.keys() if (m := _RESNET.match(k))}:
        for name in (f"{block}.conv2.weight", f"{block}.conv2.bias"):
            out[name] = torch.zeros_like(out[name])
    return out


def widen_vae_blocks(
    state: dict[str, Tensor], target: dict[str, Tensor], noise: float = 0.01, seed: int = 0
) -> dict[str, Tensor]:
    """``state`` (a trained ``AutoencoderKL`` state dict) mapped onto ``target``'s (a fresh one of the same latent
    and depth whose ``block_out_channels`` are each the same or twice as wide), computing the same function.

    Per tensor of ``state``: an output dimension (dim 0) that doubles has each row copied to ``2c`` and ``2c + 1``;
    an input dimension (dim 1 of a convolution) that doubles has each column split into ``w/2 ± ε``, with
    ε ~ N(0, (noise · std(w))²).  A resnet that was an identity shortcut and now changes width gets the 1×1
    ``conv_shortcut`` that copies (or sums) the pairs.  Tensors ``target`` lacks are kept; returns float32 tensors.

    Raises ``ValueError`` if a dimension grows by any other factor, or if a resnet's in and out widths become
    equal (diffusers then has no shortcut for its learnt 1×1 one; with widths that double per level, only a
    suffix of ``block_out_channels`` can be doubled): no exact start exists.
    """
    generator = torch.Generator().manual_seed(seed)

    def double(name: str, tensor: Tensor, want: torch.Size) -> Tensor:
        grows = [w == 2 * s for s, w in zip(tensor.shape, want)]
        if len(want) != tensor.dim() or any(w not in (s, 2 * s) for s, w in zip(tensor.shape, want)):
            raise ValueError(f"{name}: {tuple(tensor.shape)} → {tuple(want)} is not a doubling of whole blocks")
        if grows[0]:
            tensor = tensor.repeat_interleave(2, dim=0)
        if len(grows) > 1 and grows[1]:
            epsilon = torch.randn(tensor.shape, generator=generator) * noise * tensor.std()
            tensor = torch.stack([tensor / 2 + epsilon, tensor / 2 - epsilon], dim=2).flatten(1, 2)
        return tensor

    lost = sorted(k for k in state.keys() - target.keys() if ".conv_shortcut." in k)
    if lost:  # diffusers drops the 1×1 shortcut where a resnet's widths become equal: its function has no place
        raise ValueError(f"{lost[0]}: the resnet's widths become equal, its shortcut has no place (widen a suffix)")
    out = {
        name: double(name, t.float(), target[name].shape if name in target else t.shape) for name, t in state.items()
    }
    for name in target.keys() - state.keys():  # a resnet whose in and out widths now differ: its identity, widened
        block = name.removesuffix(".conv_shortcut.weight")
        if block != name and f"{block}.conv1.weight" in state:
            width = state[f"{block}.conv1.weight"].shape[1]
            out[name] = double(name, torch.eye(width).view(width, width, 1, 1), target[name].shape)
            out[f"{block}.conv_shortcut.bias"] = torch.zeros(target[name].shape[0])
    return out


def fit_vae_state(state: dict[str, Tensor], target: dict[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """``state`` (a trained ``AutoencoderKL``) made to fit ``target`` (a fresh one's state dict): its latent
    widened (:func:`widen_vae_latent`), its blocks widened (:func:`widen_vae_blocks`) and deepened
    (:func:`deepen_vae`) where ``target`` is larger, so that it decodes as before."""
    if latent_channels_of(state) < latent_channels_of(target):
        state = widen_vae_latent(state, latent_channels_of(target), seed)
    if any(k in target and target[k].shape != v.shape for k, v in state.items()):
        state = widen_vae_blocks(state, target, seed=seed)
    if target.keys() > state.keys():
        state = deepen_vae(state, target)
    return state
