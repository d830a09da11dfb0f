"""The one-step diffusion decoder: a frozen UNet with LoRA, and the frozen VAE decoder Dm.

ŷ_0 = (ŷ_t − √(1−ᾱ_t)·ε_θ(ŷ_t, t, c_g)) / √ᾱ_t        one UNet evaluation, t fixed (999); ε-prediction (SD 2.1-base)
ŷ_0 = √ᾱ_t·ŷ_t − √(1−ᾱ_t)·v_θ(ŷ_t, t, c_g)           v-prediction (SD 2.1 768-v)
x̂   = Dm(ŷ_0 / scaling_factor)

At t = 999, 1/√ᾱ ≈ 14.6: the ε-formula multiplies every rounding error of ŷ_t and ε by that, so under mixed
precision it is evaluated in float32 (the UNet itself still runs in fp16/bf16).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig
from torch import Tensor, nn

from sodec.models.config import DEFAULT_LORA_TARGETS, PREDICTION_TYPES

ADAPTER_NAME = "sodec"


def alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """ᾱ of Stable Diffusion's "scaled_linear" schedule (the table of diffusers' DDPMScheduler), float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64, device="cpu") ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _autocast_enabled(x: Tensor) -> bool:
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type without autocast (meta)
        return False


class OneStepDenoiser(nn.Module):
    """The UNet at a fixed timestep, its output (ε, v or x₀: ``prediction_type``) turned into the x₀ estimate.

    ``(B,4,h,w)`` + tokens ``(B,L,D)`` → ``(B,4,h,w)``; float32 under autocast (see the module docstring).
    """

    def __init__(
        self, unet: UNet2DConditionModel, alpha_bar: float, timestep: int = 999, prediction_type: str = "epsilon"
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction type {prediction_type!r}; choose from {', '.join(PREDICTION_TYPES)}")
        self.unet = unet
        self.timestep = timestep
        self.prediction_type = prediction_type
        self.alpha_bar = float(alpha_bar)  # float64 coefficients for the mixed-precision path
        self.register_buffer("sqrt_alpha_bar", torch.tensor(alpha_bar**0.5, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "sqrt_one_minus_alpha_bar", torch.tensor((1 - alpha_bar) ** 0.5, dtype=torch.float32), persistent=False
        )

    def epsilon(self, y_t: Tensor, tokens: Tensor, timestep: int | None = None) -> Tensor:
        """The UNet's raw output at ``timestep`` (default: the fixed one): ε, v or x₀ per ``prediction_type``."""
        t = torch.full((y_t.shape[0],), self.timestep if timestep is None else timestep, device=y_t.device)
        return self.unet(y_t, t, encoder_hidden_states=tokens).sample

    def forward(self, y_t: Tensor, tokens: Tensor) -> Tensor:
        out = self.epsilon(y_t, tokens)
        if self.prediction_type == "epsilon" and y_t.dtype == out.dtype == torch.float32:
            return (y_t - self.sqrt_one_minus_alpha_bar * out) / self.sqrt_alpha_bar  # float32 throughout
        y_0 = self.x0_from_output(y_t.float(), out.float())
        # Under autocast the next module (Dm) takes float32; half-precision weights without autocast do not.
        return y_0 if _autocast_enabled(y_t) else y_0.to(y_t.dtype)

    def x0_from_output(self, y_t: Tensor, out: Tensor) -> Tensor:
        """x₀ from ŷ_t and the UNet's output, in the inputs' precision, with float64-derived coefficients."""
        a, b = self.alpha_bar**0.5, (1 - self.alpha_bar) ** 0.5
        if self.prediction_type == "epsilon":
            return (y_t - b * out) / a
        if self.prediction_type == "v_prediction":
            return a * y_t - b * out
        return out

    def add_lora(self, rank: int = 16, alpha: float | None = None, targets: Sequence[str] = DEFAULT_LORA_TARGETS):
        """Freeze the base UNet and add trainable LoRA adapters (peft) on ``targets``."""
        self.unet.requires_grad_(False)
        config = LoraConfig(
            r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=list(targets), init_lora_weights=True
        )
        self.unet.add_adapter(config, adapter_name=ADAPTER_NAME)

    @torch.no_grad()
    def merge_lora(self) -> None:
        """Fold the adapters into the base weights (inference: no per-step LoRA overhead).

        Done here rather than with peft's ``merge``: peft computes a conv adapter's delta with a
        convolution whose result depends on the thread count, so merged weights (and decoded pixels)
        would too.  W += scale · Σ_k B[:, k] ⊗ A[k] is summed over the rank in a fixed order with
        element-wise operations only: the same bits with any number of threads.
        """
        from peft.tuners.lora import LoraLayer

        deltas = {}
        for name, module in self.unet.named_modules():
            if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
                a = module.lora_A[ADAPTER_NAME].weight.flatten(1)  # (r, in·kh·kw)
                b = module.lora_B[ADAPTER_NAME].weight.flatten(1)  # (out, r)
                delta = torch.zeros(b.shape[0], a.shape[1], dtype=a.dtype, device=a.device)
                for k in range(a.shape[0]):
                    delta += b[:, k : k + 1] * a[k : k + 1]
                base = module.get_base_layer().weight
                deltas[name] = (delta * module.scaling[ADAPTER_NAME]).view(base.shape)
        self.unet.unload_lora()
        modules = dict(self.unet.named_modules())
        for name, delta in deltas.items():
            modules[name].weight += delta

    def lora_state_dict(self) -> dict[str, Tensor]:
        """Only the adapter weights (what a SODEC model folder stores of the UNet)."""
        return {k: v for k, v in self.unet.state_dict().items() if "lora_" in k}


class LatentDecoder(nn.Module):
    """Dm: the frozen diffusion-VAE decoder.  Latent ``(B,4,h,w)`` in UNet scale → RGB ``(B,3,8h,8w)`` in [0,1]."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False)
        self.scaling_factor = float(vae.config.scaling_factor)

    def forward(self, latent: Tensor) -> Tensor:
        return (self.vae.decode(latent / self.scaling_factor).sample + 1) / 2
