"""The assembled model: ``forward`` (training) · ``compress`` → streams · ``decompress`` → image.

A model folder (diffusers style) holds ``config.json`` and ``model.safetensors``; the safetensors file
includes the coder's frozen tables (integer P, CDFs), so a loaded model codes without re-deriving them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sodec.errors import ModelError
from sodec.models.compression import CompressionModule, LatentStreams
from sodec.models.config import CONFIG_NAME, WEIGHTS_NAME, SodecConfig
from sodec.models.fidelity import FidelityDecoder


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad ``(B,C,H,W)`` on the right and bottom so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class SodecModel(nn.Module):
    """One rate point of a SODEC model.  (At this stage: compression module + fidelity decoder Da.)"""

    def __init__(self, config: SodecConfig) -> None:
        super().__init__()
        self.config = config
        self.compression = CompressionModule(config)
        self.fidelity = FidelityDecoder(config.latent_channels, config.decoder_channels, config.decoder_res_blocks)

    # ----------------------------------------------------------------------------------------- training
    def forward(self, x: Tensor) -> dict:
        """``x`` ``(B,3,H,W)`` in [0,1], sides multiples of 64 → ``x_hat`` (same shape) and the likelihoods."""
        out = self.compression(x)
        out["x_hat"] = self.fidelity(out["y_hat"])
        return out

    # ------------------------------------------------------------------------------------------- coding
    def update(self) -> None:
        """Derive the coder's frozen tables from the trained weights (call once after training)."""
        self.compression.update()

    @torch.no_grad()
    def compress(self, x: Tensor) -> LatentStreams:
        """Code ``x`` ``(1,3,H,W)`` in [0,1] of any size (padded here; the decoder crops back)."""
        x = pad_to_multiple(x, self.config.downsampling)
        streams, _ = self.compression.compress(x)
        return streams

    @torch.no_grad()
    def decompress(self, streams: LatentStreams, height: int, width: int) -> Tensor:
        """Decode to ``(1,3,height,width)`` float RGB in [0,1]."""
        m = self.config.downsampling
        latent_hw = (-(-height // m) * m // 16, -(-width // m) * m // 16)
        y_hat = self.compression.decompress(streams, latent_hw)
        device = next(self.fidelity.parameters()).device
        x_hat = self.fidelity(y_hat.to(device))
        return x_hat[..., :height, :width].clamp(0, 1)

    # ---------------------------------------------------------------------------------------- identity
    def content_hash(self) -> str:
        """SHA-256 (hex) of every tensor of the model: names, dtypes, shapes and bytes, in name order.

        A `.sodec` file stores its first 4 bytes, so a file is never decoded with other weights.
        """
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    # ------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created if needed)."""
        if not self.compression.entropy_parameters.is_exact_ready:
            raise ModelError("call update() before save_pretrained(): the coder tables are not derived yet")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "sha256": self.content_hash()})
        (folder / CONFIG_NAME).write_text(self.config.to_json())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> SodecModel:
        """Load a model folder written by :meth:`save_pretrained` (safetensors only, never pickle)."""
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise ModelError(f"{folder} is not a sodec model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            config = SodecConfig.from_dict(json.loads(config_path.read_text()))
            state = load_file(str(weights_path))
            model = cls(config)
        except (ValueError, TypeError, OSError, RuntimeError, SafetensorError) as e:  # bad JSON, widths, file
            raise ModelError(f"cannot load model from {folder}: {e}") from None
        model.load_coder_state(state)
        return model.to(device).eval()

    def load_coder_state(self, state: dict[str, Tensor]) -> None:
        """``load_state_dict`` that first resizes the coder's table buffers (empty until ``update()``)."""
        buffers = dict(self.named_buffers())
        for key, value in state.items():
            if key in buffers and buffers[key].shape != value.shape:
                module_path, _, attr = key.rpartition(".")
                setattr(self.get_submodule(module_path), attr, torch.empty_like(value))
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelError(f"weights do not match the config: {str(e).splitlines()[0]}") from None
