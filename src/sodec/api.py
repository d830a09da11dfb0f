"""The public API: what the CLI, the demo and users call.

model = load_model("nano", rate=0)
data = compress_image(model, "photo.png")          # bytes of a .sodec file
image, header = decompress_bytes(data, model)      # a Pillow image

encoder = load_model("nano", rate=0, for_encoding=True)   # compress only: no decoder, no diffusion bases
data = compress_image(model, "photo.png", effort=2)  # slower encode, better latents; same format and decoder
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sodec import container
from sodec.container import ColorMode, Header, SodecFile, bits_per_pixel
from sodec.errors import ModelError, OutputExistsError, SodecError
from sodec.imageio import atomic_write, from_rgb_array, load_image, to_rgb_array
from sodec.models import SodecModel
from sodec.models.compression import LatentStreams
from sodec.models.config import CONFIG_NAME
from sodec.models.encoder import SodecEncoder
from sodec.models.refine import MAX_EFFORT, MAX_EFFORT_PIXELS, compress_refined

DEFAULT_MODEL = "nano"


def bundled_models() -> dict[str, Path]:
    """Model families shipped inside the package: name → folder holding ``rate-N`` model folders."""
    root = Path(str(resources.files("sodec") / "weights"))
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}


def example_image() -> Path:
    """The photo shipped with the package (768x512, CC0, "seeding" by Clemens Engelhardt)."""
    return Path(str(resources.files("sodec") / "assets" / "dandelions.png"))


def available_rates(family: str | os.PathLike) -> list[int]:
    """The rate points of a model family folder: the sorted ``N`` of its ``rate-N`` subfolders.

    Only folders whose suffix is all digits count (``rate-2`` yes; ``rate-x``, ``rate-`` or a file named
    ``rate-3`` no).  A folder that is not a family (or does not exist) has none: ``[]``.
    """
    family = Path(family)
    if not family.is_dir():
        return []
    return sorted(
        int(p.name[5:]) for p in family.iterdir() if p.is_dir() and p.name.startswith("rate-") and p.name[5:].isdigit()
    )


def resolve_model_folder(model: str | os.PathLike, rate: int | None = None) -> Path:
    """Find the folder of one model (one rate point).

    ``model`` is a bundled family name (``nano``), a model folder (``config.json`` + ``model.safetensors``),
    or a family folder holding ``rate-0``, ``rate-1``, ... model folders, from which ``rate`` picks one
    (default 0).
    """
    path = Path(model)
    if path.is_dir():
        family = path
    elif str(model) in bundled_models():
        family = bundled_models()[str(model)]
    else:
        names = ", ".join(bundled_models()) or "none"
        raise ModelError(f"model {str(model)!r} is neither a model folder nor a bundled model (bundled: {names})")
    if (family / CONFIG_NAME).is_file():
        return family
    rates = available_rates(family)
    if not rates:
        raise ModelError(f"{family} holds no model ({CONFIG_NAME} or rate-N/{CONFIG_NAME})")
    rate = rates[0] if rate is None else rate
    if rate not in rates:
        raise ModelError(f"model {str(model)!r} has no rate point {rate} (available: {', '.join(map(str, rates))})")
    return family / f"rate-{rate}"


@lru_cache(maxsize=8)
def _load_cached(folder: str, device: str, for_encoding: bool) -> SodecModel | SodecEncoder:
    if for_encoding:
        return SodecEncoder.from_pretrained(folder, device=device)
    return SodecModel.from_pretrained(folder, device=device)


def load_model(
    model: str | os.PathLike = DEFAULT_MODEL, rate: int | None = None, device: str = "cpu", for_encoding: bool = False
) -> SodecModel | SodecEncoder:
    """Load one rate point of a model (cached: loading the same folder twice returns the same object).

    ``for_encoding=True`` loads only what :func:`compress_image` needs (E, Ha, P, the coder tables): a
    :class:`~sodec.models.encoder.SodecEncoder`, without the decoder and the diffusion bases (≈ 7 GB at paper
    scale), which writes the same bytes as the full model.
    """
    return _load_cached(str(resolve_model_folder(model, rate).resolve()), device, for_encoding)


def model_id(model: SodecModel | SodecEncoder) -> bytes:
    """The 4-byte model hash written into files (recomputed each time: a few ms for nano)."""
    return bytes.fromhex(model.content_hash()[: 2 * container.MODEL_HASH_BYTES])


def _to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(1,3,H,W)`` uint8, sharing ``rgb``'s memory on the CPU: the model converts to float (tile by tile)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only array (from Pillow): the tensor is only read
        return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.uint8)).to(device).permute(2, 0, 1)[None]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x[0].mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _check_tile(tile: int) -> None:
    if tile < 8 or tile % 4:
        raise SodecError(f"tile must be a multiple of 4 and at least 8 latent pixels, got {tile}")


def check_effort(effort: int) -> None:
    """Raise :class:`SodecError` unless ``effort`` is an encode-effort level (0..3)."""
    if isinstance(effort, bool) or not isinstance(effort, int) or not 0 <= effort <= MAX_EFFORT:
        raise SodecError(f"effort must be an integer from 0 to {MAX_EFFORT}, got {effort!r}")


def compress_image(
    model: SodecModel | SodecEncoder,
    image: str | os.PathLike | Image.Image | np.ndarray,
    tile: int = 64,
    effort: int = 0,
) -> bytes:
    """Compress an image file, Pillow image or ``(H, W, 3)`` uint8 array to the bytes of a `.sodec` file.

    Images larger than ``tile`` latent pixels (16·tile image pixels) on a side are analysed in tiles with an
    exact context halo, which bounds memory (:meth:`SodecModel.compress`).

    ``effort`` 1..3 refines the latents against the rate and the fidelity decoder Da (more encode time, same
    format, same decoder; :mod:`sodec.models.refine`).  It needs the full model (not ``for_encoding``), and
    images above ``MAX_EFFORT_PIXELS`` are coded at effort 0 with a warning.
    """
    _check_tile(tile)
    check_effort(effort)
    if effort and not isinstance(model, SodecModel):
        raise ModelError(
            "effort > 0 refines the latents against the decoder Da, which an encoder "
            "(load_model(..., for_encoding=True)) does not hold: load the full model"
        )
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("arrays must be (H, W, 3) uint8 RGB")
        rgb, mode = image, ColorMode.RGB
    elif isinstance(image, Image.Image):
        rgb, mode = to_rgb_array(image)
    else:
        rgb, mode = load_image(image)
    height, width = rgb.shape[:2]
    container.check_size(width, height)
    device = next(model.parameters()).device
    if effort and height * width > MAX_EFFORT_PIXELS:
        warnings.warn(f"{width}x{height} is above {MAX_EFFORT_PIXELS} pixels: encode effort {effort} not applied "
                      "(coded at effort 0)", stacklevel=2)
        effort = 0
    if effort:
        streams, _ = compress_refined(model, _to_tensor(rgb, device), effort, tile=tile)
    else:
        streams = model.compress(_to_tensor(rgb, device), tile=tile)
    cfg = model.config
    header = Header(cfg.name, model_id(model), cfg.rate_point, width, height, mode, streams.latent_check)
    return container.pack(SodecFile(header, streams.z_stream, streams.y_stream))


def check_model_matches(model: SodecModel, header: Header) -> None:
    """Raise :class:`ModelError` unless ``model`` is exactly the one the file was made with."""
    cfg = model.config
    if header.model_hash != model_id(model) or header.rate_point != cfg.rate_point:
        raise ModelError(
            f"model mismatch: the file needs model {header.model_name!r} rate {header.rate_point} "
            f"(hash {header.model_hash.hex()}), the given model is {cfg.name!r} rate {cfg.rate_point} "
            f"(hash {model_id(model).hex()})"
        )


def model_for(header: Header, model: str | os.PathLike | SodecModel | None = None, device: str = "cpu") -> SodecModel:
    """The model that decodes a file: ``model`` if given, else the bundled model named in its header."""
    if model is None:
        if header.model_name not in bundled_models():
            raise ModelError(
                f"the file was made with model {header.model_name!r} (rate {header.rate_point}, "
                f"hash {header.model_hash.hex()}), which is not bundled: pass its folder with --model"
            )
        model = header.model_name
    if isinstance(model, SodecEncoder):
        raise ModelError("an encoder (load_model(..., for_encoding=True)) cannot decode: load the full model")
    if not isinstance(model, SodecModel):
        model = load_model(model, header.rate_point, device)
    check_model_matches(model, header)
    return model


def decompress_bytes(
    data: bytes,
    model: str | os.PathLike | SodecModel | None = None,
    device: str = "cpu",
    decoder: str = "auto",
    tile: int = 64,
) -> tuple[Image.Image, Header]:
    """Decode the bytes of a `.sodec` file to a Pillow image (RGB or L, per the header).

    ``decoder``: ``auto`` (the model's diffusion decoder if it has one), ``diffusion`` or ``fidelity`` (x̂_f:
    faster, more faithful, blurrier).  Latents beyond ``tile`` pixels (16·tile image pixels) are
    decoded in overlapping tiles, which bounds memory.
    """
    _check_tile(tile)
    file = container.unpack(data)
    header = file.header
    net = model_for(header, model, device)
    streams = LatentStreams(file.z_stream, file.y_stream, header.latent_check)
    x_hat = net.decompress(streams, header.height, header.width, decoder, tile=tile, overlap=min(8, tile // 8 * 4))
    return from_rgb_array(_to_uint8(x_hat), header.color_mode), header


@dataclass(frozen=True)
class FileResult:
    """What one compress/decompress of a file did."""

    source: Path
    output: Path
    n_bytes: int  # size of the .sodec file
    width: int
    height: int

    @property
    def bpp(self) -> float:
        return bits_per_pixel(self.n_bytes, self.width, self.height)


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite)")


def compress_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model: SodecModel | SodecEncoder,
    force: bool = False,
    tile: int = 64,
    effort: int = 0,
) -> FileResult:
    """Compress an image file to a `.sodec` file, written atomically (``effort``: :func:`compress_image`)."""
    source, output = Path(source), Path(output)
    _check_output(output, force)
    data = compress_image(model, source, tile, effort)
    atomic_write(output, data=data)
    header = container.unpack(data).header
    return FileResult(source, output, output.stat().st_size, header.width, header.height)


def decompress_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model: str | os.PathLike | SodecModel | None = None,
    force: bool = False,
    device: str = "cpu",
    decoder: str = "auto",
    tile: int = 64,
) -> FileResult:
    """Decode a `.sodec` file to a PNG, written atomically."""
    source, output = Path(source), Path(output)
    _check_output(output, force)
    data = source.read_bytes()
    image, header = decompress_bytes(data, model, device, decoder, tile)
    atomic_write(output, image=image)
    return FileResult(source, output, len(data), header.width, header.height)
