"""The encoder side of a model alone: E, Ha, P, the entropy models and the coder's tables, no decoder, no bases.

``sodec compress`` needs nothing else: at paper scale the full model also holds the frozen UNet, VAE and ViT
(≈ 7 GB), which encoding never runs.  :class:`SodecEncoder` loads a model folder without them and writes
byte-identical streams; the model identity that files carry (:meth:`content_hash`) is the full model's: the
stored tensors hashed as the full model holds them, and the bases by the hash their config records
(``diffusion.base_hash``, checked against the real bases whenever the full model loads them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from sodec.errors import ModelError
from sodec.models.compression import CompressionModule, LatentStreams
from sodec.models.config import SodecConfig, model_folder_files

_PREFIX = "compression."


class EncodingMixin:
    """``compress`` and ``latent_size`` for any module with ``config`` and ``compression`` (the full model and
    :class:`SodecEncoder` run this same code, so their streams are the same bytes)."""

    config: SodecConfig
    compression: CompressionModule

    @torch.no_grad()
    def compress(self, x: Tensor, tile: int | None = 64, halo: int = 4) -> LatentStreams:
        """Code ``x`` ``(1,3,H,W)`` of any size (padded here; the decoder crops back): float in [0,1] or uint8.

        Images whose ŷ exceeds ``tile`` pixels (16·tile image pixels) on a side are analysed in tiles with
        a context halo of ``halo`` ŷ pixels (:func:`sodec.models.tiling.analyze_tiled`: the same y up to
        float rounding, a bounded peak memory, and no float copy of the whole image); smaller ones, or any
        image with ``tile=None``, in one piece.  Either way the streams decode with the same decoder.
        """
        from sodec.models.sodec import pad_to_multiple
        from sodec.models.tiling import analyze_tiled

        h, w = self.latent_size(*x.shape[-2:])
        if tile is None or (h <= tile and w <= tile):
            if not x.is_floating_point():
                x = x.float().div(255)
            streams, _, _ = self.compression.compress(pad_to_multiple(x, self.config.downsampling))
            return streams
        y = analyze_tiled(self.compression.encoder, x, (h, w), tile, halo)
        streams, _, _ = self.compression.compress_latent(y)
        return streams

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """ŷ's (h, w) for an image of ``height`` x ``width``: padded to the model's multiple, then / 16."""
        m = self.config.downsampling
        return -(-height // m) * m // 16, -(-width // m) * m // 16


class SodecEncoder(EncodingMixin, nn.Module):
    """One rate point's encoder: ``compress`` as :meth:`SodecModel.compress`, the same ``content_hash``.

    Load it with :meth:`from_pretrained` (or ``sodec.api.load_model(..., for_encoding=True)``).
    """

    has_diffusion = False  # it decodes nothing

    def __init__(self, config: SodecConfig) -> None:
        super().__init__()
        self.config = config
        self.compression = CompressionModule(config)
        self._content_hash: str | None = None

    def content_hash(self) -> str:
        """The full model's :meth:`SodecModel.content_hash` (computed at load)."""
        if self._content_hash is None:
            raise ModelError("this encoder was not loaded from a model folder: it has no identity")
        return self._content_hash

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> SodecEncoder:
        """Load the encoder of a model folder written by :meth:`SodecModel.save_pretrained`.

        Reads ``config.json`` and, of ``model.safetensors``, the compression module's tensors; the others
        (Da, Hs, Ts, Fp, the LoRA) one at a time, only to hash them.  Never opens the bases.
        """
        from sodec.models.sodec import SodecModel

        folder = Path(folder)
        config_path, weights_path = model_folder_files(folder)
        try:
            config = SodecConfig.from_dict(json.loads(config_path.read_text()))
            encoder = cls(config)
            with safe_open(str(weights_path), framework="pt") as f:
                names = list(f.keys())
                state = {k: f.get_tensor(k) for k in names if k.startswith(_PREFIX)}
                # SodecModel's loader (tables unpacked and resized, P's floats rebuilt) on the compression part:
                SodecModel.load_coder_state(encoder, state)  # type: ignore[arg-type]
                encoder._content_hash = encoder._hash(f, names)
        except (ValueError, TypeError, OSError, RuntimeError, SafetensorError) as e:  # bad JSON, widths, file
            raise ModelError(f"cannot load the encoder from {folder}: {e}") from None
        return encoder.to(device).eval()

    # SodecModel.load_coder_state calls these on ``self``: the encoder's trainable state is its compression
    # module, and it stores no LoRA and no bases.
    def expand_stored_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        from sodec.models.sodec import SodecModel

        return SodecModel.expand_stored_state(self, state)  # type: ignore[arg-type]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return self.state_dict()

    def _hash(self, f, names: list[str]) -> str:
        """:meth:`SodecModel.content_hash` from the loaded compression module and the other stored tensors.

        The full model holds every stored float tensor outside the compression module in float32 (its
        parameters are built so; a float16 file is cast up at load), so they are hashed so.
        """
        from sodec.models.bases import tensors_hash_items

        own = self.state_dict()
        others = [k for k in names if not k.startswith(_PREFIX)]

        def items():
            for name in sorted([*own, *others]):
                if name in own:
                    yield name, own[name]
                else:
                    t = f.get_tensor(name)
                    yield name, t.float() if t.is_floating_point() else t

        digest = tensors_hash_items(items())
        d = self.config.diffusion
        if d is None:
            return digest
        if d.base_hash is None:
            raise ModelError(
                "the config records no diffusion.base_hash: the model's identity needs its bases (load the full "
                "model, sodec.api.load_model without for_encoding)"
            )
        return tensors_hash_items(
            [("sodec", torch.frombuffer(bytearray.fromhex(digest + d.base_hash), dtype=torch.uint8))]
        )
