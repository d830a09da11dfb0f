"""The assembled model: ``forward`` (training) · ``compress`` → streams · ``decompress`` → image.

    x ──E──▶ y ──▶ ŷ ──Da──▶ x̂_f ──F──▶ tokens ──Fp──▶ c_g
            Ha ──▶ ẑ ──Hs──▶ w;  (ŷ, w) ──Ts──▶ ŷ_t ──one UNet step (c_g)──▶ ŷ_0 ──Dm──▶ x̂

A config without a ``diffusion`` section is the compression module with Da as its decoder.

A model folder (diffusers style) holds ``config.json`` and ``model.safetensors`` with only what SODEC trains
(E, Ha, P, Hs, Ts, Da, Fp, the LoRA) plus the coder's frozen tables (integer P, CDFs); the frozen bases
(UNet, VAE, guidance backbone) are named by the config and loaded from their own folder or hub id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sodec.errors import ModelError
from sodec.models.compression import CompressionModule, LatentStreams
from sodec.models.config import CONFIG_NAME, WEIGHTS_NAME, SodecConfig, model_folder_files
from sodec.models.encoder import EncodingMixin
from sodec.models.fidelity import FidelityDecoder, GDNFidelityDecoder

Decoder = Literal["auto", "diffusion", "fidelity"]
_FROZEN_PREFIXES = ("denoiser.unet.", "latent_decoder.", "guidance.")
_P = "compression.entropy_parameters."


def _pack_cdfs(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Store each ``(M, L)`` CDF table as its rows' used entries, concatenated ``(Σ cdf_length,)``.

    The tables are padded to their longest row (3133 entries for the Gaussian's 64 scales, ~9 % used); the
    stored form is lossless: a table is packed only if unpacking gives it back bit for bit.
    """
    out = dict(state)
    for key, table, lengths in _cdf_tables(state):
        if table.dim() == 2:
            packed = torch.cat([row[:n] for row, n in zip(table, lengths.tolist())])
            if torch.equal(_unpack_cdf(packed, lengths), table):
                out[key] = packed
    return out


def _cdf_tables(state: dict[str, Tensor]) -> list[tuple[str, Tensor, Tensor]]:
    """``(key, table, row lengths)`` of every entropy model's CDF table in a state dict."""
    found = []
    for key, table in state.items():
        lengths = state.get(key.removesuffix("_quantized_cdf") + "_cdf_length")
        if key.endswith("._quantized_cdf") and lengths is not None:
            found.append((key, table, lengths))
    return found


def _unpack_cdf(packed: Tensor, lengths: Tensor) -> Tensor:
    table = packed.new_zeros(len(lengths), int(lengths.max()) if len(lengths) else 0)
    for row, chunk in zip(table, packed.split(lengths.tolist())):
        row[: len(chunk)] = chunk
    return table


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad ``(B,C,H,W)`` on the right and bottom so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class SodecModel(EncodingMixin, nn.Module):
    """One rate point of a SODEC model.

    Args:
        config: widths and, optionally, the diffusion decoder.
        folder: where relative base paths in the config are resolved (the model folder).
        random_bases: build the frozen bases from their configs with random weights instead of loading
            them (tests; timing the graph with ``--random-weights``; works on the ``meta`` device).
    """

    def __init__(self, config: SodecConfig, folder: Path | None = None, random_bases: bool = False) -> None:
        super().__init__()
        self.config = config
        self.compression = CompressionModule(config)
        if config.transforms == "gdn":
            self.fidelity: nn.Module = GDNFidelityDecoder(config.latent_channels, config.gdn_channels)
        else:
            self.fidelity = FidelityDecoder(config.latent_channels, config.decoder_channels, config.decoder_res_blocks)
        self._bases_hash: str | None = None
        self._random_bases = None
        self._frozen_content_hash: str | None = None
        d = config.diffusion
        if d is None:
            return
        from sodec.models.bases import cached_bases_hash, load_bases
        from sodec.models.diffusion import LatentDecoder, OneStepDenoiser, alphas_cumprod
        from sodec.models.guidance import ConstantTokens, GuidanceProjector, HyperpriorTokens
        from sodec.models.transform import HyperSynthesis, LatentTransform

        bases = load_bases(d, folder, random=random_bases)
        # Loaded bases: hashed once per set of base files (cached), before LoRA renames the UNet's weights.
        # Random bases are hashed only when the identity is asked for (saving, coding): a build costs no
        # multi-GB host copy (eight builds in the GPU check's training phase).
        self._random_bases = bases if random_bases else None
        self._bases_hash = None if random_bases else cached_bases_hash(bases, d, folder)
        if d.base_hash is not None and not random_bases and self._bases_hash != d.base_hash:
            raise ModelError(
                f"the diffusion bases at {d.base!r} are not the ones this model was trained on "
                f"(content hash {self._bases_hash[:16]}…, expected {d.base_hash[:16]}…)"
            )
        self.hyper_synthesis = HyperSynthesis(config.hyper_channels, d.side_channels)
        self.transform = LatentTransform(
            config.latent_channels, d.side_channels, d.transform_channels, d.transform_blocks,
            bases.unet.config.in_channels,
        )  # fmt: skip
        self.guidance = bases.guidance
        if d.guidance == "fgm":  # the paper's fidelity guidance; the others are its ablations
            n_tokens = d.guidance_tokens if d.guidance_layout == "sequence" else None  # grid: F's own tokens
            self.projector = GuidanceProjector(bases.guidance.token_dim, d.cross_attention_dim, n_tokens)
        elif d.guidance == "hyperprior":
            self.projector = HyperpriorTokens(d.side_channels, d.cross_attention_dim)
        else:
            self.projector = ConstantTokens(d.guidance_tokens, d.cross_attention_dim, learned=d.guidance == "prompt")
        alpha_bar = alphas_cumprod(d.num_train_timesteps, d.beta_start, d.beta_end)[d.timestep].item()
        self.denoiser = OneStepDenoiser(bases.unet, alpha_bar, d.timestep, d.prediction_type)
        self.denoiser.add_lora(d.lora_rank, d.lora_alpha, d.lora_targets)
        self.latent_decoder = LatentDecoder(bases.vae)

    @property
    def has_diffusion(self) -> bool:
        return self.config.diffusion is not None

    # ----------------------------------------------------------------------------------------- training
    def synthesize(self, y_hat: Tensor, z_hat: Tensor, decoder: Decoder = "auto") -> dict[str, Tensor]:
        """Decoder side from the latents: ``x_f`` (Da) always; ``y_t``, ``y_0``, ``x_hat`` on the diffusion path.

        ŷ ``(B,C,h,w)``, ẑ ``(B,N,h/4,w/4)`` → images ``(B,3,16h,16w)``, latents ``(B,4,2h,2w)``.
        """
        dtype = self.fidelity.tail[-1].weight.dtype  # synthesis may run in half precision on a GPU
        y_hat, z_hat = y_hat.to(dtype), z_hat.to(dtype)
        x_f = self.fidelity(y_hat)
        if decoder == "fidelity" or (decoder == "auto" and not self.has_diffusion):
            return {"x_f": x_f, "x_hat": x_f}
        if not self.has_diffusion:
            raise ModelError("this model has no diffusion decoder (use the fidelity decoder)")
        w = self.hyper_synthesis(z_hat)
        y_t = self.transform(y_hat, w)
        tokens = self._guidance_tokens(x_f, w)
        y_0 = self.denoiser(y_t, tokens)
        return {"x_f": x_f, "y_t": y_t, "y_0": y_0, "x_hat": self.latent_decoder(y_0)}

    def _guidance_tokens(self, x_f: Tensor, w: Tensor) -> Tensor:
        """c_g ``(B,L,D)``: from x̂_f through F and Fp (``fgm``), from w = Hs(ẑ), or a constant token set."""
        mode = self.config.diffusion.guidance
        if mode == "fgm":
            return self.projector(self.guidance(x_f.clamp(0, 1)))
        if mode == "hyperprior":
            return self.projector(w)
        return self.projector(x_f.shape[0])

    def forward(self, x: Tensor, decoder: Decoder = "auto") -> dict:
        """``x`` ``(B,3,H,W)`` in [0,1], sides multiples of 64 → ``x_hat`` (same shape), ``x_f``, likelihoods."""
        out = self.compression(x)
        out.update(self.synthesize(out["y_hat"], out["z_hat"], decoder))
        return out

    def enable_gradient_checkpointing(self) -> list[str]:
        """Recompute activations in the backward pass (training memory): Da (torch.utils.checkpoint), the UNet
        and Dm (diffusers), the guidance backbone (timm, where it supports it).  Returns what was switched on."""
        self.fidelity.gradient_checkpointing = True
        done = ["Da"]
        if self.has_diffusion:
            self.denoiser.unet.enable_gradient_checkpointing()
            self.latent_decoder.vae.enable_gradient_checkpointing()
            done += ["UNet", "Dm"]
            if self.guidance.set_grad_checkpointing(True):
                done.append("F")
        return done

    def set_synthesis_dtype(self, dtype: torch.dtype) -> None:
        """Run every decoder-side network in ``dtype`` (fp16/bf16 on GPU); the coder stays exact."""
        synthesis = ["fidelity", "hyper_synthesis", "transform", "guidance", "projector", "denoiser", "latent_decoder"]
        for name in synthesis:
            if hasattr(self, name):
                getattr(self, name).to(dtype)

    # ------------------------------------------------------------------------------------------- coding
    def update(self) -> None:
        """Derive the coder's frozen tables from the trained weights (call once after training)."""
        self.compression.update()

    @torch.no_grad()
    def decompress(
        self,
        streams: LatentStreams,
        height: int,
        width: int,
        decoder: Decoder = "auto",
        tile: int = 64,
        overlap: int = 8,
    ) -> Tensor:
        """Decode to ``(1,3,height,width)`` float RGB in [0,1]; ``decoder`` picks the diffusion or Da path.

        Latents larger than ``tile`` ŷ pixels (16·tile image pixels) are synthesised in overlapping tiles
        (``overlap`` ŷ pixels, blended), which bounds peak memory; smaller ones in one piece.
        """
        from sodec.models.tiling import synthesize_tiled

        y_hat, z_hat = self.compression.decompress(streams, self.latent_size(height, width))
        device = next(self.fidelity.parameters()).device
        x_hat = synthesize_tiled(
            lambda y, z: self.synthesize(y, z, decoder)["x_hat"], y_hat.to(device), z_hat.to(device), tile, overlap
        )
        return x_hat[..., :height, :width].float().clamp_(0, 1)  # in place: at 8K each copy is 0.4 GB

    # ---------------------------------------------------------------------------------------- identity
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What a model folder stores: everything but the frozen bases, LoRA adapters included."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if not k.startswith(_FROZEN_PREFIXES) or (k.startswith("denoiser.unet.") and "lora_" in k)
        }

    def content_hash(self) -> str:
        """SHA-256 (hex) identifying the decoder: the stored tensors (names, dtypes, shapes, bytes, in name
        order) and, with a diffusion decoder, the frozen bases.  `.sodec` files store its first 4 bytes."""
        if self._frozen_content_hash is not None:  # LoRA merged: the adapters are no longer separate tensors
            return self._frozen_content_hash
        from sodec.models.bases import tensors_hash

        digest = tensors_hash(self.trainable_state_dict())
        if self.has_diffusion:
            self._hash_random_bases()
            if self._bases_hash is None:
                raise ModelError("bases without content (meta device) have no hash")
            digest = tensors_hash(
                {"sodec": torch.frombuffer(bytearray.fromhex(digest + self._bases_hash), dtype=torch.uint8)}
            )
        return digest

    def _hash_random_bases(self) -> None:
        """Hash random bases on first need, as they were built: LoRA's wrapped names mapped back, its adapters
        left out.  Bases cast since (a GPU's training precision) have lost that content: an error."""
        bases, self._random_bases = self._random_bases, None
        if bases is None or self._bases_hash is not None:
            return
        from sodec.models.bases import bases_hash

        state = {}
        for prefix, module in vars(bases).items():
            for k, v in module.state_dict().items():
                if "lora_" not in k:
                    state[f"{prefix}.{k.replace('.base_layer.', '.')}"] = v
        if any(v.is_floating_point() and v.dtype != torch.float32 and not v.is_meta for v in state.values()):
            raise ModelError("random bases cast to a lower precision have no content hash (hash before casting)")
        self._bases_hash = bases_hash(state)

    def merge_lora(self) -> None:
        """Fold the LoRA into the UNet for inference (the content hash is kept from before)."""
        if self.has_diffusion and self._frozen_content_hash is None:
            self._frozen_content_hash = self.content_hash()
            self.denoiser.merge_lora()

    # ------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created if needed).

        ``dtype`` (e.g. ``torch.float16``) stores the floating-point parameters at that precision; they are
        rounded to it in this model first, so this model and the one loaded back (in float32) are the same
        model, with the same content hash.  The coder's tables are stored exactly (CDFs without their
        padding); P only as its integer copy, to which its float weights are first set in this model.
        """
        if not self.compression.entropy_parameters.is_exact_ready:
            raise ModelError("call update() before save_pretrained(): the coder tables are not derived yet")
        if self._frozen_content_hash is not None:
            raise ModelError("cannot save a model whose LoRA was merged; save before merge_lora()")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.has_diffusion:
            self._hash_random_bases()
            self.config.diffusion.base_hash = self._bases_hash
        stored = self.trainable_state_dict()
        parameters = {n for n, p in self.named_parameters() if p.is_floating_point()} & set(stored)  # not bases
        if dtype is not None:
            with torch.no_grad():
                for name, p in self.named_parameters():
                    if name in parameters:
                        p.copy_(p.to(dtype))
        # P is stored once, as the integers that coding uses; its float path is rebuilt from them on load.
        self.compression.entropy_parameters.snap_to_integer()
        state = {
            k: (v.to(dtype) if dtype is not None and k in parameters else v).detach().cpu().contiguous()
            for k, v in stored.items()
            if not k.startswith(_P + "layers.")
        }
        save_file(_pack_cdfs(state), str(folder / WEIGHTS_NAME),
                  metadata={"format": "pt", "sha256": self.content_hash()})  # fmt: skip
        (folder / CONFIG_NAME).write_text(self.config.to_json())

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, device: str | torch.device = "cpu", merge_lora: bool = True
    ) -> SodecModel:
        """Load a model folder written by :meth:`save_pretrained` (safetensors only, never pickle).

        The frozen bases are loaded from where the config names them; ``merge_lora`` folds the adapters
        into the UNet (faster inference; the model can then not be trained or saved).
        """
        folder = Path(folder)
        config_path, weights_path = model_folder_files(folder)
        try:
            config = SodecConfig.from_dict(json.loads(config_path.read_text()))
            state = load_file(str(weights_path))
            model = cls(config, folder=folder)
        except (ValueError, TypeError, OSError, RuntimeError, SafetensorError) as e:  # bad JSON, widths, file
            raise ModelError(f"cannot load model from {folder}: {e}") from None
        model.load_coder_state(state)
        if merge_lora:
            model.merge_lora()
        return model.to(device).eval()

    def expand_stored_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A stored ``model.safetensors`` state as :meth:`trainable_state_dict` tensors: packed CDF tables
        unpacked, P's float weights rebuilt from its integer copy (folders written before both are kept)."""
        state = dict(state)
        for key, table, lengths in _cdf_tables(state):
            if table.dim() == 1:
                state[key] = _unpack_cdf(table, lengths)
        ints = {k.removeprefix(_P): v for k, v in state.items() if k.startswith(_P + "int_")}
        if ints and not any(k.startswith(_P + "layers.") for k in state):
            try:
                floats = self.compression.entropy_parameters.float_state_from_integer(ints)
            except KeyError as e:
                raise ModelError(f"weights do not match the config: missing {_P}{e.args[0]}") from None
            state |= {_P + k: v for k, v in floats.items()}
        return state

    def load_coder_state(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`trainable_state_dict` tensors (or their stored form, see :meth:`expand_stored_state`),
        first resizing the coder's table buffers (empty until ``update()``); every trainable tensor must be
        present and no other."""
        state = self.expand_stored_state(state)
        buffers = dict(self.named_buffers())
        for key, value in state.items():
            if key in buffers and buffers[key].shape != value.shape:
                module_path, _, attr = key.rpartition(".")
                setattr(self.get_submodule(module_path), attr, torch.empty_like(value))
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ModelError(
                f"weights do not match the config: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        try:
            self.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ModelError(f"weights do not match the config: {str(e).splitlines()[-1].strip()}") from None
