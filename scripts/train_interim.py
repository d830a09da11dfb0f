"""Interim stage-1 training of the nano compression module + fidelity decoder (MSE + λ·R).

This only exists so that the bundled ``nano`` weights decode to a recognisable image before the real
three-stage recipe (`sodec train`, the training issue) lands; it is replaced by that recipe.

    python scripts/train_interim.py PHOTO_DIR OUT_DIR --steps 3000 --lmbda 0.0018

Resumable: re-running with the same OUT_DIR continues from OUT_DIR/checkpoint.safetensors (weights only;
Adam's moments restart).  ``--export FOLDER`` writes the checkpoint as a model folder without training.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sodec.models import SodecModel, preset_config


def load_photos(folder: Path, max_side: int) -> list[torch.Tensor]:
    photos = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        im = Image.open(p).convert("RGB")
        s = max_side / max(im.size)
        if s < 1:  # never upscale
            im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
        photos.append(torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1))
    return photos


def batch(photos: list[torch.Tensor], size: int, crop: int, rng: random.Random) -> torch.Tensor:
    out = []
    for _ in range(size):
        p = photos[rng.randrange(len(photos))]
        top, left = rng.randrange(p.shape[1] - crop + 1), rng.randrange(p.shape[2] - crop + 1)
        c = p[:, top : top + crop, left : left + crop]
        out.append(c.flip(-1) if rng.random() < 0.5 else c)
    return torch.stack(out).float() / 255


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photos", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lmbda", type=float, default=0.0018)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--rate-point", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", type=Path, default=None, help="only export the checkpoint to this model folder")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    photos = load_photos(args.photos, 1024)
    config = preset_config(
        "nano",
        diffusion=None,  # stage 1 only: compression module + fidelity decoder
        rate_point=args.rate_point,
        lmbda=args.lmbda,
        extra={
            "trained_by": "scripts/train_interim.py",
            "steps": args.steps,
            "data": [p.name for p in sorted(args.photos.iterdir())],
        },
    )
    model = SodecModel(config)
    aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(main_params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    ckpt = args.out / "checkpoint.safetensors"
    step = 0
    if ckpt.exists():
        state = load_file(str(ckpt))
        step = int(state.pop("_step").item())
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("_")}, strict=False)
        rng.seed(args.seed + step)
    if args.export:
        model.config.extra["steps"] = step
        model.eval()
        model.update()
        model.save_pretrained(args.export)
        return
    log = (args.out / "log.jsonl").open("a")
    t0 = time.time()
    while step < args.steps:
        model.train()
        x = batch(photos, args.batch, args.crop, rng)
        out = model(x)
        n_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / n_pixels
        mse = torch.mean((out["x_hat"] - x) ** 2)
        loss = args.lmbda * 255**2 * mse + bpp
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux_loss = model.compression.entropy_bottleneck.loss()
        aux_opt.zero_grad()
        aux_loss.backward()
        aux_opt.step()
        step += 1
        if step % 10 == 0:
            psnr = -10 * torch.log10(mse).item()
            rec = {"step": step, "loss": loss.item(), "bpp": bpp.item(), "psnr": psnr, "s": time.time() - t0}
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % 100 == 0 or step == args.steps:
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if v.numel()}
            state["_step"] = torch.tensor(step)
            save_file(state, str(ckpt) + ".tmp")
            Path(str(ckpt) + ".tmp").replace(ckpt)
    model.eval()
    model.update()
    model.save_pretrained(args.out / f"rate-{args.rate_point}")


if __name__ == "__main__":
    main()
