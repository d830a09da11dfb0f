"""Probe: how far each shape of nano's autoencoder (Dm's ceiling) gets per CPU-second.

    python benchmarks/probe_vae_ceiling.py --latent 4 --widths 8,16,32,64 --out runs/probes/vae-c4
    python benchmarks/probe_vae_ceiling.py --latent 16 --widths 8,16,32,64 --out runs/probes/vae-c16
    python benchmarks/probe_vae_ceiling.py --latent 16 --init src/sodec/weights/nano/base/vae --out runs/probes/w16
    python benchmarks/probe_vae_ceiling.py --latent 16 --layers 2 --init runs/nano/prior-vae-v3/final/vae \
        --decoder-only --out runs/probes/deep2
    python benchmarks/probe_vae_ceiling.py --latent 16 --widths 8,16,32,128 --init runs/nano/prior-vae-v3/final/vae \
        --decoder-only --lr 2e-4 --out runs/probes/dmw-128

The diffusion path decodes through the VAE decoder Dm, so x̂ can be no better than Dm's own round trip of an
uncompressed photo (issue 22, hypothesis 2).  Each run trains a diffusers ``AutoencoderKL`` from scratch with
stage 0a's loss (configs/nano/stage0a-prior-vae.yaml: 0.01 · L1₂₅₅ + 0.5 · LPIPS-Alex + 1e-6 · KL, 8 × 128²
crops of data/nano/train, AdamW 5e-4 after 100 warm-up steps) and differs only in the latent channels, the
block widths and the resnets per block.  The budget is **CPU time of this process** (``time.process_time``), so
runs that share the cores with other work still compare at equal compute; evaluation is not counted.

Every ``--eval-every`` CPU-minutes it round-trips the data/nano/dev photos (4 centre crops of 512×768, the
posterior's mode, as the decoder sees a latent) and appends PSNR, LPIPS-VGG and DISTS to OUT/val.csv; at the
start it prints Dm's parameters and its multiply-accumulates at 768×512, the decode-time cost of the shape.
``--init`` starts from a trained VAE instead (a narrower latent widened, the last widths doubled, a shallower
one deepened, so that it decodes as before), and ``--decoder-only`` then trains Dm alone on the init's latents;
``--adversarial β`` adds the projected hinge GAN of ``sodec.train.discriminators`` (adaptive weight, DiffAugment).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from sodec.eval.dists import DISTS
from sodec.eval.lpips import LPIPS
from sodec.train.data import RandomCrops, validation_crops
from sodec.train.discriminators import (
    ProjectedDiscriminator,
    adaptive_weight,
    diffaugment,
    discriminator_loss,
    generator_loss,
)
from sodec.train.losses import l1_255, psnr
from sodec.train.widen import fit_vae_state


def build_vae(latent: int, widths: list[int], layers: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=widths, down_block_types=["DownEncoderBlock2D"] * len(widths),
        up_block_types=["UpDecoderBlock2D"] * len(widths), latent_channels=latent, layers_per_block=layers,
        norm_num_groups=4, mid_block_add_attention=False,
    )  # fmt: skip


def decoder_macs(vae, height: int = 512, width: int = 768) -> float:
    """Multiply-accumulates of Dm (post_quant_conv + decoder) for one ``height × width`` image."""
    from torch.utils.flop_counter import FlopCounterMode

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.zeros(1, vae.config.latent_channels, height // factor, width // factor)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(z)
    return counter.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, required=True, help="latent channels")
    ap.add_argument("--widths", default="8,16,32,64", help="block_out_channels (Dm mirrors them)")
    ap.add_argument("--layers", type=int, default=1, help="layers_per_block")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-minutes", type=float, default=20)
    ap.add_argument("--eval-every", type=float, default=5, help="CPU-minutes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--init", type=Path, help="start from this trained VAE folder (diffusers layout)")
    ap.add_argument("--decoder-only", action="store_true", help="freeze the encoder (needs --init)")
    ap.add_argument("--adversarial", type=float, default=0.0, help="β of a projected hinge GAN (0: none)")
    ap.add_argument("--adv-start", type=int, default=0, help="G's adversarial term starts at this step")
    ap.add_argument("--disc-lr", type=float, default=2e-4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    vae = build_vae(args.latent, [int(w) for w in args.widths.split(",")], args.layers)
    if args.init:  # a trained VAE: a narrower latent widened, doubled widths Net2Wider, new resnets as identities
        own = vae.state_dict()
        state = fit_vae_state(load_file(str(args.init / "diffusion_pytorch_model.safetensors")), own)
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        vae.load_state_dict(fitting, strict=False)
        print(f"init: {len(fitting)} of {len(own)} tensors from {args.init}", flush=True)
    if args.decoder_only:  # the latent space stays the init's (stage 0a's model.train_vae_encoder: false)
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    dm = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    shape = f"latent {args.latent}, widths {args.widths}, layers {args.layers}"
    size = f"Dm {sum(p.numel() for p in dm) / 1e6:.3f} M parameters, {decoder_macs(vae) / 1e9:.2f} GMAC at 768x512"
    print(f"{shape}: {size}", flush=True)
    lpips_alex, lpips_vgg, dists = LPIPS("alex"), LPIPS("vgg"), DISTS()
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.lr)
    disc = None
    if args.adversarial:  # the training loop's set-up (loss.discriminator: projected, hinge, adaptive, DiffAugment)
        disc = ProjectedDiscriminator(args.latent)
        disc_opt = torch.optim.Adam(
            [p for p in disc.parameters() if p.requires_grad], lr=args.disc_lr, betas=(0.5, 0.999)
        )
        augment = ("color", "translation", "cutout")
    data = RandomCrops("data/nano/train", 128, 1024, 0.5, True, seed=0)
    val = validation_crops("data/nano/dev", 4, (512, 768), 1024)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "val.csv").open("w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "cpu_seconds", "psnr", "lpips_vgg", "dists", "train_loss", "d_loss", "adv_weight"])

    budget, next_eval, step, recent, recent_d, recent_w = args.cpu_minutes * 60, 0.0, 0, [], [], []
    cpu, evaluating = 0.0, 0.0  # CPU seconds of training so far; of evaluation (not counted)
    while True:
        cpu = time.process_time() - evaluating
        if cpu >= next_eval or cpu >= budget:
            e0 = time.process_time()
            vae.eval()
            with torch.no_grad():
                rows = []
                for _, x in val:
                    x_hat = ((vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)
                    rows.append((psnr(x_hat, x).item(), lpips_vgg(x_hat, x).item(), dists(x_hat, x).item()))
            db, lv, ds = (sum(r[k] for r in rows) / len(rows) for k in range(3))
            loss, d_loss, adv_w = (sum(r) / len(r) if r else float("nan") for r in (recent, recent_d, recent_w))
            writer.writerow([step, round(cpu, 1), f"{db:.3f}", f"{lv:.4f}", f"{ds:.4f}", f"{loss:.4f}", f"{d_loss:.4f}",
                             f"{adv_w:.4g}"])  # fmt: skip
            log.flush()
            print(f"{cpu:7.0f} cpu-s  step {step:6d}  psnr {db:.2f}  lpips-vgg {lv:.4f}  dists {ds:.4f}  "
                  f"loss {loss:.4f}  d {d_loss:.4f}  w {adv_w:.3g}", flush=True)  # fmt: skip
            recent, recent_d, recent_w, next_eval = [], [], [], next_eval + args.eval_every * 60
            vae.train()
            evaluating += time.process_time() - e0
            if cpu >= budget:
                break
        x = torch.stack([data[step * 8 + k] for k in range(8)])
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 100)
        posterior = vae.encode(x * 2 - 1).latent_dist
        z = posterior.sample()
        x_hat = (vae.decode(z).sample + 1) / 2
        loss = 0.01 * l1_255(x_hat, x) + 0.5 * lpips_alex(x_hat.clamp(0, 1), x).mean() + 1e-6 * posterior.kl().mean()
        recent.append(loss.item())
        if disc is not None and step >= args.adv_start:
            g = generator_loss(disc(diffaugment(x_hat, augment), z.detach()), "hinge")
            weight = args.adversarial * adaptive_weight(loss, g, vae.decoder.conv_out.weight)
            loss = loss + weight * g
            recent_w.append(float(weight))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if disc is not None:
            disc_opt.zero_grad()
            fake = diffaugment(x_hat.detach(), augment)
            d = discriminator_loss(disc(diffaugment(x, augment), z.detach()), disc(fake, z.detach()), "hinge")
            d.backward()
            disc_opt.step()
            recent_d.append(d.item())
        step += 1
    vae.save_pretrained(args.out / "vae")


if __name__ == "__main__":
    main()
