"""Model configuration: a plain dataclass stored as ``config.json`` in every model folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class SodecConfig:
    """Widths and identity of one SODEC model (one rate point).

    ``name`` identifies the model family (it is written into every `.sodec` file so that the decoder can
    find the model again); ``rate_point`` is the index of this member of the family, 0 = lowest rate.
    """

    name: str = "nano"
    rate_point: int = 0
    latent_channels: int = 220  # C, ŷ at 1/16
    hyper_channels: int = 320  # N, ẑ at 1/64
    encoder_channels: tuple[int, ...] = (60, 120, 240, 480, 960)  # E: 7x7 conv, then 4 stride-2 convs
    decoder_channels: tuple[int, ...] = (960, 480, 240, 120, 60)  # Da: 1/16 width, then 4 upsamplings
    decoder_res_blocks: int = 9
    lmbda: float = 0.0  # rate weight this model was trained with (informative)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (training run, data, ...)

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(self.encoder_channels)
        self.decoder_channels = tuple(self.decoder_channels)
        if len(self.encoder_channels) != 5 or len(self.decoder_channels) != 5:
            raise ValueError("encoder_channels and decoder_channels need 5 widths (one per scale)")

    @property
    def downsampling(self) -> int:
        """Input sides must be multiples of this (ŷ at 1/16, ẑ two more stride-2 steps down)."""
        return 64

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SodecConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)
