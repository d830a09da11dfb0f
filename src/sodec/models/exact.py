"""Exact integer evaluation of the entropy-parameter network P (ẑ → means, scales).

The encoder and the decoder must derive *identical* CDF indexes and means from ẑ, on any CPU and with any
thread count, or the rANS decoder silently produces garbage.  Float convolutions do not give that: the order
of summation differs between kernels, thread counts and instruction sets.  We therefore quantise P after
training to integer weights and fixed-point activations (Ballé et al. 2019, "Integer networks") and evaluate
it in float64: every product and every partial sum is an integer below 2**53, so it is represented exactly,
and the result does not depend on the order of summation, on blocking, or on FMA.  Rescaling divides by
powers of two and rounds with ``floor(x + 0.5)``, both exact in IEEE arithmetic.

The float modules stay the trainable ones; :meth:`ExactEntropyParameters.update` derives the integer copy,
which is stored with the weights so that a decoder never re-derives it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Fixed-point formats.  Activations carry ACT_FRAC fractional bits and are clamped to ±ACT_LIMIT;
# weights are scaled per output channel by a power of two so that |w_int| < 2**WEIGHT_BITS.
ACT_FRAC = 8
ACT_LIMIT = 1 << 15
WEIGHT_BITS = 12
_MAX_SHIFT = 30
_EXACT_BOUND = 1 << 52  # strictly below 2**53 so that partial sums stay exact


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5)


class ExactEntropyParameters(nn.Module):
    """P: the hyper-synthesis that maps ẑ to the Gaussian means and scales of ŷ.

    Shapes: ẑ ``(B, N, h, w)`` at 1/64 → means, scales ``(B, C, 4h, 4w)`` at 1/16.

    Layers: 5x5 transposed conv (stride 2), ReLU, 5x5 transposed conv (stride 2), ReLU, 3x3 conv to 2C.
    ``forward`` is the float path used in training; :meth:`exact` is the integer path used by
    ``compress`` and ``decompress``.  The float path clamps activations like the integer path, so the
    two differ only by the fixed-point rounding.
    """

    def __init__(self, hyper_channels: int, latent_channels: int) -> None:
        super().__init__()
        n, c = hyper_channels, latent_channels
        mid = (n + 2 * c) // 2
        self.layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1),
                nn.ConvTranspose2d(n, mid, 5, stride=2, padding=2, output_padding=1),
                nn.Conv2d(mid, 2 * c, 3, padding=1),
            ]
        )
        with torch.no_grad():  # start with unit scales rather than ~0: sane rates from the first step
            self.layers[-1].bias[:c].fill_(1.0)
        for i, layer in enumerate(self.layers):
            out_ch = layer.weight.shape[1] if isinstance(layer, nn.ConvTranspose2d) else layer.weight.shape[0]
            self.register_buffer(f"int_weight_{i}", torch.zeros(0, dtype=torch.int16))
            self.register_buffer(f"int_bias_{i}", torch.zeros(out_ch, dtype=torch.int64))
            self.register_buffer(f"int_shift_{i}", torch.zeros(out_ch, dtype=torch.int32))

    def forward(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Float path.  Returns ``(scales, means)``, each ``(B, C, 4h, 4w)``."""
        x = z_hat
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.clamp(x, 0.0, float(ACT_LIMIT))  # ReLU, bounded as in the integer path
        scales, means = x.chunk(2, dim=1)
        return scales, means

    @property
    def is_exact_ready(self) -> bool:
        return self.int_weight_0.numel() > 0

    @torch.no_grad()
    def update(self) -> None:
        """Derive the integer weights from the float ones and check that no sum can lose exactness."""
        act_max = ACT_LIMIT << ACT_FRAC
        for i, layer in enumerate(self.layers):
            w = layer.weight.detach().double().cpu()
            transposed = isinstance(layer, nn.ConvTranspose2d)
            # Output channels live on dim 1 of a transposed-conv weight and dim 0 of a conv weight.
            w_oc = w.transpose(0, 1) if transposed else w
            max_abs = w_oc.abs().flatten(1).amax(1).clamp_min(1e-30)
            shift = torch.clamp((WEIGHT_BITS - 1) - torch.ceil(torch.log2(max_abs)), 0, _MAX_SHIFT).to(torch.int32)
            scale = torch.pow(2.0, shift.double())
            w_int_oc = _round_half_up(w_oc * scale.view(-1, 1, 1, 1)).clamp(-(2**WEIGHT_BITS - 1), 2**WEIGHT_BITS - 1)
            w_int = w_int_oc.transpose(0, 1) if transposed else w_int_oc
            b_int = _round_half_up(layer.bias.detach().double().cpu() * scale * 2.0**ACT_FRAC)
            in_max = act_max if i > 0 else ACT_LIMIT << ACT_FRAC
            fan_in = w_oc[0].numel()
            bound = fan_in * (2**WEIGHT_BITS) * in_max + b_int.abs().max().item()
            if bound >= _EXACT_BOUND:
                raise ValueError(f"layer {i} of P cannot be evaluated exactly (bound {bound:.3g} >= 2**52)")
            setattr(self, f"int_weight_{i}", w_int.to(torch.int16))
            setattr(self, f"int_bias_{i}", b_int.to(torch.int64))
            setattr(self, f"int_shift_{i}", shift)

    def float_state_from_integer(self, int_state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The float weights that the integer ones stand for: ``w_int · 2^-shift``, ``b_int · 2^-(shift+ACT_FRAC)``.

        ``int_state`` holds ``int_weight_i``, ``int_bias_i``, ``int_shift_i``; returns ``layers.i.weight`` and
        ``layers.i.bias`` (float32).  Model folders store P only as integers (they are what coding uses), and
        this rebuilds the float path from them, deterministically, for training and the rate estimate.
        """
        out = {}
        for i, layer in enumerate(self.layers):
            inv_scale = torch.pow(2.0, -int_state[f"int_shift_{i}"].to(torch.float64))
            view = (1, -1, 1, 1) if isinstance(layer, nn.ConvTranspose2d) else (-1, 1, 1, 1)
            weight = int_state[f"int_weight_{i}"].to(torch.float64) * inv_scale.view(view)
            bias = int_state[f"int_bias_{i}"].to(torch.float64) * inv_scale * 2.0**-ACT_FRAC
            out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = weight.float(), bias.float()
        return out

    @torch.no_grad()
    def snap_to_integer(self) -> None:
        """Set the float weights to what the integer copy stands for (see :meth:`float_state_from_integer`)."""
        if not self.is_exact_ready:
            raise RuntimeError("integer weights of P are missing: call update() first")
        ints = {k: v for k, v in self.state_dict().items() if k.startswith("int_")}
        self.load_state_dict(ints | self.float_state_from_integer(ints))

    @torch.no_grad()
    def exact(self, z_hat: Tensor, tile: int = 32, halo: int = 2) -> tuple[Tensor, Tensor]:
        """Integer path, bit-identical on every machine.  Returns float32 ``(scales, means)``.

        Always runs on the CPU in float64: the result is then exact whatever the BLAS or thread count.
        ẑ larger than ``tile`` pixels on a side is evaluated in tiles of ``tile`` ẑ pixels, each with
        ``halo`` pixels of context: an output at ŷ row o depends on ẑ rows (o-7)/4 .. (o+7)/4 only, so a halo
        of 2 is enough and, every value being an exact integer, the result is identical to the one-piece
        evaluation (tested), while the float64 activations and convolution buffers are those of one tile
        (a whole 8K image's take ≈ 2 GB).
        """
        if not self.is_exact_ready:
            raise RuntimeError("integer weights of P are missing: call update() after training")
        z_hat = z_hat.detach().to("cpu")
        h, w = z_hat.shape[-2:]
        if h <= tile and w <= tile:
            return self._exact(z_hat)
        scales = means = None
        for r in range(0, h, tile):
            for c in range(0, w, tile):
                th, tw = min(tile, h - r), min(tile, w - c)
                r0, c0 = max(0, r - halo), max(0, c - halo)
                s, m = self._exact(z_hat[..., r0 : min(h, r + th + halo), c0 : min(w, c + tw + halo)])
                f = s.shape[-1] // (min(w, c + tw + halo) - c0)  # 4: two stride-2 layers
                if scales is None:
                    scales, means = (s.new_empty(*s.shape[:2], f * h, f * w) for _ in range(2))
                dst = (..., slice(f * r, f * (r + th)), slice(f * c, f * (c + tw)))
                src = (..., slice(f * (r - r0), f * (r - r0 + th)), slice(f * (c - c0), f * (c - c0 + tw)))
                scales[dst], means[dst] = s[src], m[src]
        return scales, means

    def _exact(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        x = _round_half_up(z_hat.to(torch.float64) * 2.0**ACT_FRAC)
        x = x.clamp(-(ACT_LIMIT << ACT_FRAC), ACT_LIMIT << ACT_FRAC)
        for i, layer in enumerate(self.layers):
            # the integer tables go to the CPU too (a model moved to a GPU has them there)
            w = getattr(self, f"int_weight_{i}").to("cpu", torch.float64)
            b = getattr(self, f"int_bias_{i}").to("cpu", torch.float64)
            inv_scale = torch.pow(2.0, -getattr(self, f"int_shift_{i}").to("cpu", torch.float64)).view(1, -1, 1, 1)
            if isinstance(layer, nn.ConvTranspose2d):
                acc = F.conv_transpose2d(
                    x, w, b, stride=layer.stride, padding=layer.padding, output_padding=layer.output_padding
                )
            else:
                acc = F.conv2d(x, w, b, stride=layer.stride, padding=layer.padding)
            x = _round_half_up(acc * inv_scale)  # back to ACT_FRAC fractional bits
            low = 0 if i < len(self.layers) - 1 else -(ACT_LIMIT << ACT_FRAC)  # ReLU except after the last
            x = x.clamp(low, ACT_LIMIT << ACT_FRAC)
        out = (x * 2.0**-ACT_FRAC).to(torch.float32)  # |x| <= 2**23 after clamping: exact in float32
        scales, means = out.chunk(2, dim=1)
        return scales, means
