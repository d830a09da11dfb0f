"""The stages of the recipe, each an ``nn.Module`` whose ``forward(x, lmbda)`` returns the loss and its terms.

==============  ==========================================================  ==================================
stage           trains                                                      loss
==============  ==========================================================  ==================================
prior-vae       nano's KL autoencoder (1/8, 4 channels)                     mse/l1 + lpips + kl·KL
prior-unet      nano's UNet, ε-prediction on the VAE's latents, image-      ‖ε − ε_θ(√ᾱ·z + √(1−ᾱ)·ε, t, c)‖²
                conditioned through F and a projector (warm-starts Fp)
rd (1)          E, Ha, P with Da                                            λ·R + mse + lpips on x̂_f
warmup (2)      Hs, Ts, Da, Fp, LoRA (compression module frozen)            mse + lpips on x̂ (+ alignment)
anneal (3)      everything SODEC trains                                     λ(t)·R + mse + lpips + α·align
adversarial(4)  everything SODEC trains, with a conditional PatchGAN        anneal's + β·L_G
==============  ==========================================================  ==================================

Frozen parts (the bases, LPIPS, the guidance backbone) never change and are not checkpointed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sodec.errors import ModelError
from sodec.models import SodecModel, preset_config
from sodec.models.config import SodecConfig
from sodec.train.config import TrainConfig
from sodec.train.losses import bits_per_pixel, l1_255, mse255, psnr, rate_weight
from sodec.train.widen import fit_vae_state, widen_unet_latent

PROJECTOR_WEIGHTS = "projector.safetensors"
# What ``model.train_base`` trains besides the LoRA: the whole UNet and the VAE's decoder side (Dm).
BASE_TRAINED_PREFIXES = ("denoiser.unet.", "latent_decoder.vae.decoder.", "latent_decoder.vae.post_quant_conv.")
BASE_FOLDER = "base"  # final/base: the trained base, named relatively by the exported model's config


def _final_folder(path: str | os.PathLike) -> Path:
    """A run folder's ``final/`` (what a stage exports), or the folder itself."""
    path = Path(path)
    return path / "final" if (path / "final").is_dir() else path


def _copy_matching(module: nn.Module, state: dict[str, Tensor]) -> set[str]:
    """Copy tensors of ``state`` whose name and shape match ``module``'s; returns the names copied."""
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(matching, strict=False)
    return set(matching)


class Stage(nn.Module):
    """Common interface of the stages (see the module docstring)."""

    #: channels of the discriminator's condition (the adversarial term), None if the stage has none.
    cond_channels: int | None = None

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.lpips = None
        loss = config.loss
        if loss.lpips > 0 or loss.alignment_lpips > 0:
            from sodec.eval.lpips import LPIPS

            self.lpips = LPIPS(loss.lpips_net)

    def train(self, mode: bool = True) -> Stage:
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()  # frozen metric: no dropout
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.endswith("quantiles")]

    def aux_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and n.endswith("quantiles")]

    def aux_loss(self) -> Tensor | None:
        return None

    def last_layer(self) -> nn.Parameter | None:
        """The weight of the layer that outputs x̂, if it trains (the adversarial term's adaptive weight)."""
        return None

    def frozen_bases(self) -> list[nn.Module]:
        """The frozen pre-trained networks (UNet, VAE, guidance backbone) whose frozen weights may be cast to
        the training precision on a GPU (:func:`cast_frozen_bases`); trainable tensors in them stay float32."""
        return []

    def checkpoint_state(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        missing = set(self.checkpoint_state()) - set(state)
        if missing:
            raise ModelError(f"checkpoint does not fit this stage: missing {sorted(missing)[:3]}")
        self.load_state_dict(state, strict=False)

    def distortion(self, x: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
        """The weighted distortion terms on ``x̂`` (mse, l1, lpips, ms_ssim, lowpass) that are switched on."""
        loss, terms = self.config.loss, {}
        if loss.mse > 0:
            terms["mse"] = loss.mse * mse255(x_hat, x)
        if loss.lowpass_mse > 0:  # colour and brightness of each block, which LPIPS barely sees
            k = loss.lowpass_size
            terms["lowpass"] = loss.lowpass_mse * mse255(F.avg_pool2d(x_hat.float(), k), F.avg_pool2d(x.float(), k))
        if loss.l1 > 0:
            terms["l1"] = loss.l1 * l1_255(x_hat, x)
        if loss.lpips > 0:
            terms["lpips"] = loss.lpips * self.lpips(x_hat.float().clamp(0, 1), x).mean()
        if loss.ms_ssim > 0:
            from pytorch_msssim import ms_ssim

            terms["ms_ssim"] = loss.ms_ssim * (1 - ms_ssim(x_hat.float().clamp(0, 1), x, data_range=1.0))
        return terms

    @torch.no_grad()
    def validate(self, x: Tensor) -> tuple[dict[str, float], dict[str, Tensor]]:
        raise NotImplementedError

    def export(self, folder: Path, batches: list[Tensor]) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ stage 0
class PriorVAEStage(Stage):
    """Stage 0a: nano's KL autoencoder, built from the preset's ``diffusion.vae`` config."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        from diffusers import AutoencoderKL

        self.model_config = _model_config(config)
        self.vae = AutoencoderKL(**self.model_config.diffusion.vae)
        self.cond_channels = self.vae.config.latent_channels
        self.init_scaling_factor: float | None = None
        if config.model.init:  # a narrower latent is widened, a shallower VAE deepened: both decode as before
            try:
                state = fit_vae_state(_load_vae_state(config.model.init), self.vae.state_dict(), config.seed)
            except ValueError as e:  # a deeper VAE of other widths: no exact start exists
                raise ModelError(f"model.init: {e}") from None
            _copy_matching(self.vae, state)
            self.init_scaling_factor = _vae_scaling_factor(config.model.init)
        if not config.model.train_vae_encoder:
            if self.init_scaling_factor is None:
                raise ModelError("model.train_vae_encoder: false needs model.init (the trained encoder to keep)")
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)
        if config.model.gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()

    def last_layer(self) -> nn.Parameter:
        return self.vae.decoder.conv_out.weight

    def forward(self, x: Tensor, lmbda: float = 0.0) -> dict[str, Tensor]:
        posterior = self.vae.encode(x * 2 - 1).latent_dist
        z = posterior.sample()
        x_hat = (self.vae.decode(z).sample + 1) / 2
        terms = self.distortion(x, x_hat)
        terms["kl"] = self.config.loss.kl * posterior.kl().mean()
        out = {"loss": sum(terms.values()), **terms, "psnr": psnr(x_hat, x).detach()}
        return {**out, "x_hat": x_hat, "cond": z.detach()}

    def checkpoint_state(self) -> dict[str, Tensor]:
        return {f"vae.{k}": v for k, v in self.vae.state_dict().items()}

    @torch.no_grad()
    def validate(self, x: Tensor) -> tuple[dict[str, float], dict[str, Tensor]]:
        x_hat = ((self.vae.decode(self.vae.encode(x * 2 - 1).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)
        metrics = {"psnr": psnr(x_hat, x).item()}
        if self.lpips is not None:
            metrics["lpips"] = self.lpips(x_hat, x).mean().item()
        return metrics, {"x_hat": x_hat}

    @torch.no_grad()
    def export(self, folder: Path, batches: list[Tensor]) -> None:
        """``folder/vae/`` (diffusers layout), with ``scaling_factor`` = 1 / std of the latents (as SD's 0.18215),
        or the init's where the encoder was frozen (its latents, and the UNet trained on them, are unchanged)."""
        if self.config.model.train_vae_encoder:
            latents = torch.cat([self.vae.encode(b * 2 - 1).latent_dist.mode().flatten() for b in batches])
            self.vae.register_to_config(scaling_factor=float(1.0 / latents.float().std()))
        else:
            self.vae.register_to_config(scaling_factor=self.init_scaling_factor)
        self.vae.save_pretrained(folder / "vae")


def _vae_scaling_factor(path: str | os.PathLike) -> float:
    return float(json.loads((_final_folder(path) / "vae" / "config.json").read_text())["scaling_factor"])


def _load_vae_state(path: str | os.PathLike) -> dict[str, Tensor]:
    folder = _final_folder(path)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"no trained VAE at {folder}/vae (run the prior-vae stage first)")
    return load_file(str(weights))


class PriorUNetStage(Stage):
    """Stage 0b: nano's UNet as an ε-prediction denoiser on the frozen VAE's (scaled) latents.

    The condition is what SODEC will give it: tokens of the frozen guidance backbone F, here of the clean
    image, through a projector (dropped with ``uncond_prob``).  The projector warm-starts SODEC's Fp.
    ``model.init`` is the prior-vae run (its ``final/vae``), or a list of folders: the VAE comes from the last
    one that holds ``vae/``; an earlier base folder with ``unet/`` (and ``projector.safetensors``) warm-starts the
    UNet (its latent widened to the VAE's if narrower, :mod:`sodec.train.widen`) and the projector.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        from diffusers import AutoencoderKL, UNet2DConditionModel

        from sodec.models.diffusion import alphas_cumprod
        from sodec.models.guidance import GuidanceBackbone, GuidanceProjector

        if not config.model.init:
            raise ModelError("stage prior-unet needs model.init: the prior-vae run (its final/vae)")
        self.model_config = _model_config(config)
        d = self.model_config.diffusion
        inits = [config.model.init] if isinstance(config.model.init, str) else config.model.init
        folders = [_final_folder(path) for path in inits]
        vae_folders = [f / "vae" for f in folders if (f / "vae").is_dir()]
        if not vae_folders:
            raise ModelError(f"no trained VAE in {', '.join(map(str, folders))} (run the prior-vae stage first)")
        self.vae = AutoencoderKL.from_pretrained(vae_folders[-1]).requires_grad_(False).eval()
        self.scaling_factor = float(self.vae.config.scaling_factor)
        latent = self.vae.config.latent_channels
        self.unet = UNet2DConditionModel(**{**d.unet_build_config(), "in_channels": latent, "out_channels": latent})
        if unets := [f / "unet" / "diffusion_pytorch_model.safetensors" for f in folders if (f / "unet").is_dir()]:
            _copy_matching(self.unet, widen_unet_latent(load_file(str(unets[-1])), latent))
        self.guidance_weights = None if config.model.random_bases else d.guidance_weights
        if not config.model.random_bases and self.guidance_weights is None:
            raise ModelError("stage prior-unet needs the guidance backbone's weights (model.guidance_weights)")
        self.guidance = GuidanceBackbone.from_timm(
            d.guidance_backbone, weights=self.guidance_weights, random_weights=self.guidance_weights is None,
            **d.guidance_kwargs,
        )  # fmt: skip
        self.projector = GuidanceProjector(self.guidance.token_dim, d.cross_attention_dim, d.guidance_tokens)
        if projectors := [f / PROJECTOR_WEIGHTS for f in folders if (f / PROJECTOR_WEIGHTS).is_file()]:
            _copy_matching(self.projector, load_file(str(projectors[-1])))
        self.register_buffer("alphas_cumprod", alphas_cumprod(d.num_train_timesteps, d.beta_start, d.beta_end).float())
        if config.model.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def train(self, mode: bool = True) -> PriorUNetStage:
        super().train(mode)
        self.vae.eval()
        return self

    def frozen_bases(self) -> list[nn.Module]:
        return [self.vae, self.guidance]

    def _latents(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.vae.encode(x * 2 - 1).latent_dist.sample() * self.scaling_factor

    def _eps_loss(self, z: Tensor, tokens: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        eps = self.unet(noisy, t, encoder_hidden_states=tokens).sample
        return torch.mean((eps.float() - noise) ** 2), (noisy - (1 - a).sqrt() * eps) / a.sqrt()

    def forward(self, x: Tensor, lmbda: float = 0.0) -> dict[str, Tensor]:
        z = self._latents(x)
        tokens = self.projector(self.guidance(x))
        keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.config.loss.uncond_prob).to(tokens.dtype)
        t = torch.randint(0, len(self.alphas_cumprod), (x.shape[0],), device=x.device)
        loss, _ = self._eps_loss(z, tokens * keep, t, torch.randn_like(z))
        return {"loss": loss, "eps_mse": loss.detach()}

    def checkpoint_state(self) -> dict[str, Tensor]:
        return {
            **{f"unet.{k}": v for k, v in self.unet.state_dict().items()},
            **{f"projector.{k}": v for k, v in self.projector.state_dict().items()},
        }

    @torch.no_grad()
    def validate(self, x: Tensor) -> tuple[dict[str, float], dict[str, Tensor]]:
        """ε-MSE at t = 999 / 500 / 100 with fixed noise; the decoded x₀ estimate from t = 999 (SODEC's step)."""
        z = self._latents(x)
        tokens = self.projector(self.guidance(x))
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0)).to(z)
        metrics, images = {}, {}
        for t in (999, 500, 100):
            loss, z0 = self._eps_loss(z, tokens, torch.full((z.shape[0],), t, device=z.device), noise)
            metrics[f"eps_mse_t{t}"] = loss.item()
            if t == 999:
                images["x0_from_t999"] = ((self.vae.decode(z0 / self.scaling_factor).sample + 1) / 2).clamp(0, 1)
        return metrics, images

    def export(self, folder: Path, batches: list[Tensor]) -> None:
        """A complete base folder: ``unet/``, ``vae/``, ``guidance.safetensors`` (unless the backbone is rebuilt
        from a package), ``projector.safetensors``."""

        from sodec.models.bases import FrozenBases, save_bases
        from sodec.models.guidance import CONVERTED_WEIGHTS

        dtype = getattr(torch, self.config.export_dtype)
        bases = FrozenBases(self.unet, self.vae, self.guidance)
        # a converter-named backbone (efficientnet-lite0) is rebuilt from its package at load: not stored
        save_bases(bases, folder, None if dtype == torch.float32 else dtype,
                   guidance=self.guidance_weights not in CONVERTED_WEIGHTS)  # fmt: skip
        save_file({k: v.detach().cpu().contiguous() for k, v in self.projector.state_dict().items()},
                  str(folder / PROJECTOR_WEIGHTS))  # fmt: skip


def _guidance_weights(config: TrainConfig) -> str | None:
    """``model.guidance_weights`` as the model config stores it: a converter name or an absolute path."""
    from sodec.models.guidance import CONVERTED_WEIGHTS

    name = config.model.guidance_weights
    if config.model.random_bases or name is None:
        return None
    return name if name in CONVERTED_WEIGHTS else os.path.abspath(name)


# ---------------------------------------------------------------------------------------------- stages 1-4
def _model_config(config: TrainConfig) -> SodecConfig:
    """The SodecConfig a run trains: the preset, its overrides, and the base folder."""
    m = config.model
    overrides = dict(m.overrides)
    if config.stage == "rd":
        overrides["diffusion"] = None  # stage 1 is the compression module with the fidelity decoder only
    model_config = preset_config(m.preset, **overrides)
    d = model_config.diffusion
    if d is not None and m.base is not None:
        d.base = m.base if _is_hub_id(m.base) else os.path.abspath(m.base)
    if d is not None and m.guidance is not None:
        d.guidance = m.guidance
    if d is not None and m.guidance_weights is not None:
        d.guidance_weights = _guidance_weights(config)
    if d is not None and m.base is not None and not m.random_bases:
        from sodec.models.bases import base_prediction_type

        # train for what the base's UNet predicts (SD 2.1-base: ε; SD 2.1 768: v); the export records it
        d.prediction_type = base_prediction_type(d.base) or d.prediction_type
    return model_config


def _is_hub_id(name: str) -> bool:
    """``owner/name`` that is not an existing local path (e.g. stabilityai/stable-diffusion-2-1-base)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)


class SodecStage(Stage):
    """Stages rd / warmup / anneal / adversarial on a :class:`SodecModel`."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        model_config = _model_config(config)
        if config.stage != "rd" and model_config.diffusion is None:
            raise ModelError(f"stage {config.stage} needs a preset with a diffusion decoder")
        self.model = SodecModel(model_config, random_bases=config.model.random_bases)
        self.cond_channels = model_config.latent_channels
        self.initialised: set[str] = set()
        if config.model.init:
            self._init_from(config.model.init)
        if self.model.has_diffusion and config.model.init_projector and not config.model.random_bases:
            projector = Path(model_config.diffusion.base) / PROJECTOR_WEIGHTS
            if projector.is_file() and "projector.mlp.1.weight" not in self.initialised:
                _copy_matching(self.model.projector, load_file(str(projector)))
        freeze = config.model.freeze_compression
        self.freeze_compression = config.stage == "warmup" if freeze is None else freeze
        if self.freeze_compression:  # stage 2 (and the "frozen compression module" ablation of stage 3)
            self.model.compression.requires_grad_(False)
        self.train_base = config.model.train_base
        if self.train_base:
            for name, p in self.model.named_parameters():
                if name.startswith(BASE_TRAINED_PREFIXES):
                    p.requires_grad_(True)
        if config.model.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()

    def frozen_bases(self) -> list[nn.Module]:
        if not self.model.has_diffusion or self.train_base:  # a trained base is exported whole: keep it float32
            return []
        return [self.model.denoiser.unet, self.model.latent_decoder, self.model.guidance]

    def _init_from(self, paths: str | list[str]) -> None:
        """Copy matching tensors from each folder in turn (later folders win)."""
        for path in [paths] if isinstance(paths, str) else paths:
            folder = _final_folder(path)
            weights = folder / "model.safetensors"
            if not weights.is_file():
                raise ModelError(f"model.init: no model folder at {folder} (needs model.safetensors)")
            self.initialised |= _copy_matching(self.model, self.model.expand_stored_state(load_file(str(weights))))
        needed = [k for k in self.model.state_dict() if k.startswith(("compression.encoder.", "fidelity."))]
        if not set(needed) <= self.initialised:
            raise ModelError(f"model.init: {paths} does not fit this model (widths differ?)")

    def train(self, mode: bool = True) -> SodecStage:
        super().train(mode)
        if self.freeze_compression:
            self.model.compression.eval()  # frozen: ẑ rounded as at test time, not noised
        return self

    def last_layer(self) -> nn.Parameter | None:
        """Dm's output convolution where Dm trains (``model.train_base``); x̂_f's where there is no diffusion."""
        layer = self.model.latent_decoder.vae.decoder.conv_out if self.model.has_diffusion else None
        weight = layer.weight if layer is not None else None
        return weight if weight is not None and weight.requires_grad else None

    def aux_loss(self) -> Tensor | None:
        if self.freeze_compression:
            return None
        return self.model.compression.entropy_bottleneck.loss()

    def forward(self, x: Tensor, lmbda: float = 0.0) -> dict[str, Tensor]:
        loss_cfg = self.config.loss
        with torch.autocast(x.device.type, enabled=False):  # likelihoods in fp32 under mixed precision
            out = self.model.compression(x.float())
        out.update(self.model.synthesize(out["y_hat"], out["z_hat"]))
        bpp = bits_per_pixel(out["likelihoods"], x.shape[0] * x.shape[2] * x.shape[3])
        terms = self.distortion(x, out["x_hat"])
        if not self.freeze_compression:
            terms["rate"] = rate_weight(loss_cfg, lmbda, bpp) * bpp
        if self.model.has_diffusion and loss_cfg.alignment > 0:
            terms["align"] = loss_cfg.alignment * mse255(out["x_f"], x)
        if self.model.has_diffusion and loss_cfg.alignment_lpips > 0:
            terms["align_lpips"] = loss_cfg.alignment_lpips * self.lpips(out["x_f"].clamp(0, 1), x).mean()
        # a likelihood estimate of the rate, not the bytes of a file: named so in log.csv and the progress bar
        logs = {"bpp_estimate": bpp.detach(), "psnr": psnr(out["x_hat"], x).detach()}
        if self.model.has_diffusion:
            logs["psnr_f"] = psnr(out["x_f"], x).detach()
        return {"loss": sum(terms.values()), **terms, **logs, "x_hat": out["x_hat"], "cond": out["y_hat"].detach()}

    def checkpoint_state(self) -> dict[str, Tensor]:
        state = self.model.trainable_state_dict()
        if self.train_base:
            state |= {k: v for k, v in self.model.state_dict().items() if k.startswith(BASE_TRAINED_PREFIXES)}
        return {f"model.{k}": v for k, v in state.items()}

    @torch.no_grad()
    def validate(self, x: Tensor) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Estimated bpp (likelihoods of the rounded latents), PSNR of x̂ and x̂_f, LPIPS if configured."""
        with torch.autocast(x.device.type, enabled=False):  # likelihoods in fp32 under mixed precision
            out = self.model.compression(x.float())
        out.update(self.model.synthesize(out["y_hat"], out["z_hat"]))
        bpp = bits_per_pixel(out["likelihoods"], x.shape[2] * x.shape[3]).item()
        x_hat = out["x_hat"].float().clamp(0, 1)
        metrics = {"bpp_estimate": bpp, "psnr": psnr(x_hat, x).item()}
        images = {"x_hat": x_hat}
        if self.model.has_diffusion:
            metrics["psnr_f"] = psnr(out["x_f"], x).item()
            images["x_f"] = out["x_f"].float().clamp(0, 1)
        if self.lpips is not None:
            metrics["lpips"] = self.lpips(x_hat, x).mean().item()
        return metrics, images

    def export(self, folder: Path, batches: list[Tensor]) -> None:
        """A model folder (``config.json`` + ``model.safetensors`` with the coder tables)."""
        from sodec.train.losses import lmbda_at

        model = self.model
        model.config.lmbda = lmbda_at(self.config.loss, self.config.steps, self.config.steps)
        model.config.extra = {
            "trained_by": "sodec train",
            "stage": self.config.stage,
            "steps": self.config.steps,
            "data": self.config.data.train,
            "train_config": self.config.to_dict(),
        }
        model.eval()
        model.update()
        dtype = getattr(torch, self.config.export_dtype)
        dtype = None if dtype == torch.float32 else dtype
        if self.train_base:
            self._export_base(folder / BASE_FOLDER, dtype)
        model.save_pretrained(folder, dtype)

    def _export_base(self, folder: Path, dtype: torch.dtype | None) -> None:
        """Write the trained UNet (LoRA folded in) and VAE as a base folder; the model then names it.

        The weights are rounded to ``dtype`` in this model first, so the base hash recorded in the exported
        model is that of the base loaded back.  Fresh adapters (B = 0, an identity) replace the folded ones, so
        the exported model folder has the usual layout and a later stage adds its own LoRA on this base.
        """
        from sodec.models.bases import FrozenBases, bases_hash, save_bases

        model, d = self.model, self.model.config.diffusion
        model.denoiser.merge_lora()
        bases = FrozenBases(model.denoiser.unet, model.latent_decoder.vae, model.guidance)
        if dtype is not None:
            with torch.no_grad():
                for p in [*bases.unet.parameters(), *bases.vae.parameters()]:
                    p.copy_(p.to(dtype))
        save_bases(bases, folder, dtype, guidance=d.guidance_weights is None)
        model._bases_hash = bases_hash(bases)
        d.base = f"./{BASE_FOLDER}"  # resolved against the model folder (final/), wherever it moves
        bases.unet.requires_grad_(False)
        model.denoiser.add_lora(d.lora_rank, d.lora_alpha, d.lora_targets)


STAGE_CLASSES: dict[str, type[Stage]] = {
    "prior-vae": PriorVAEStage,
    "prior-unet": PriorUNetStage,
    "rd": SodecStage,
    "warmup": SodecStage,
    "anneal": SodecStage,
    "adversarial": SodecStage,
}


def build_stage(config: TrainConfig) -> Stage:
    return STAGE_CLASSES[config.stage](config)


def cast_frozen_bases(stage: Stage, dtype: torch.dtype) -> int:
    """Cast the frozen parameters of the stage's pre-trained bases to ``dtype`` (fp16/bf16 training on a GPU:
    half the memory of SD 2.1 and ViT-H/14, no fp32 copies to convert at every step under autocast).  LoRA and
    anything else that trains stays float32.  Returns the number of parameters cast."""
    count = 0
    for module in stage.frozen_bases():
        for p in module.parameters():
            if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
                count += p.numel()
    return count
