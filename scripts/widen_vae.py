"""Write a copy of a trained diffusers ``AutoencoderKL`` with some blocks twice as wide, decoding exactly as before.

    python scripts/widen_vae.py runs/nano/stage3-v3-more3-rate3/final/base/vae runs/nano/base-w128/vae \
        --widths 8,16,32,128

Issue 22: Dm's capacity is the ceiling of the diffusion path.  ``sodec.train.widen.widen_vae_blocks`` doubles
the channels of whole blocks (Net2WiderNet, GroupNorm-exact), so a stage can go on training a wider Dm from where
the narrow one stopped; this script writes such a VAE folder (float32) for a base's ``vae/``.  Every other field
of the config is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    from diffusers import AutoencoderKL

    from sodec.train.widen import fit_vae_state

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vae", type=Path, help="a diffusers AutoencoderKL folder")
    ap.add_argument("out", type=Path, help="where to write the wider one (must not exist)")
    ap.add_argument("--widths", required=True, help="the new block_out_channels, each the old or twice it")
    ap.add_argument("--seed", type=int, default=0, help="seed of the ±ε that split the copies")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists")
    narrow = AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32)
    config = dict(narrow.config) | {"block_out_channels": [int(w) for w in args.widths.split(",")]}
    wide = AutoencoderKL.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    try:
        wide.load_state_dict(fit_vae_state(narrow.state_dict(), wide.state_dict(), args.seed))
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}".splitlines()[0]) from None
    wide.save_pretrained(args.out)
    print(f"{args.out}: block_out_channels {narrow.config.block_out_channels} -> {wide.config.block_out_channels}")


if __name__ == "__main__":
    main()
