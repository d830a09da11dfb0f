"""Probe: which analysis/synthesis transforms learn fastest per CPU-second in stage 1 (MSE + rate).

    python benchmarks/probe_stage1_arch.py --arch hific --out runs/probes/arch-hific --minutes 30
    python benchmarks/probe_stage1_arch.py --arch gdn --out runs/probes/arch-gdn --minutes 30

Both variants keep nano's hyperprior (Ha, P, the entropy models, C = N = 64) and train E + Da with the stage-1
loss of configs/nano/stage1-rd.yaml (λ 0.5 · bpp + 0.00234 · MSE₂₅₅, AdamW 3e-4, 2 × 384² crops of
data/nano/train); only E and Da differ:

- ``hific``: nano's E and Da (ChannelNorm + ReLU, HiFiC's shapes, widths 16→192 / 96→16, 2 residual blocks);
- ``gdn``: Ballé et al. 2018's transforms, 5×5 stride-2 convolutions with GDN / IGDN at width ``--width``
  (default 96), the mean-scale hyperprior's E and D (CompressAI ``MeanScaleHyperprior``'s g_a / g_s).

Every ``--val-every`` seconds it validates on data/nano/dev (4 centre crops of 512×768: estimated bpp, PSNR) and
appends a row to OUT/val.csv with the elapsed seconds, so runs of equal wall time compare directly.  Run the
variants side by side with one thread each (the default) for a fair split of two cores.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch
from torch import nn

from sodec.models import SodecModel, preset_config
from sodec.train.data import RandomCrops, validation_crops
from sodec.train.losses import bits_per_pixel, mse255, psnr


def gdn_transforms(latent_channels: int, width: int) -> tuple[nn.Module, nn.Module]:
    from compressai.layers.gdn import GDN

    def conv(a, b):
        return nn.Conv2d(a, b, 5, stride=2, padding=2)

    def deconv(a, b):
        return nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1)

    n, c = width, latent_channels
    analysis = nn.Sequential(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, c))
    synthesis = nn.Sequential(deconv(c, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
                              deconv(n, n), GDN(n, inverse=True), deconv(n, 3))  # fmt: skip

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = analysis

        def forward(self, x):
            return self.net(x * 2 - 1)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = synthesis
            self.tail = nn.ModuleList([synthesis[-1]])  # SodecModel reads the output layer's dtype here

        def forward(self, y):
            return (self.net(y) + 1) / 2

    return Encoder(), Decoder()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["hific", "gdn"], required=True)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--val-every", type=float, default=180, help="seconds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = SodecModel(preset_config("nano", diffusion=None))
    if args.arch == "gdn":
        model.compression.encoder, model.fidelity = gdn_transforms(model.config.latent_channels, args.width)
    params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt, aux_opt = torch.optim.AdamW(params, lr=args.lr), torch.optim.Adam(aux, lr=1e-3)
    n_params = sum(p.numel() for p in [*model.compression.encoder.parameters(), *model.fidelity.parameters()])

    data = RandomCrops("data/nano/train", 384, 1024, 0.5, True, seed=0)
    val = validation_crops("data/nano/dev", 4, (512, 768), 1024)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "val.csv").open("w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "seconds", "bpp_estimate", "psnr", "train_loss"])
    print(f"{args.arch}: E + Da {n_params / 1e6:.2f} M parameters", flush=True)

    t0, next_val, step, i, recent = time.time(), 0.0, 0, 0, []
    end = args.minutes * 60
    while True:
        elapsed = time.time() - t0
        if elapsed >= next_val or elapsed >= end:
            model.eval()
            with torch.no_grad():
                rows = []
                for _, x in val:
                    out = model(x)
                    rows.append((bits_per_pixel(out["likelihoods"], x.shape[2] * x.shape[3]).item(),
                                 psnr(out["x_hat"], x).item()))  # fmt: skip
            bpp, db = (sum(r[k] for r in rows) / len(rows) for k in (0, 1))
            loss = sum(recent) / len(recent) if recent else math.nan
            writer.writerow([step, round(elapsed, 1), f"{bpp:.5f}", f"{db:.3f}", f"{loss:.4f}"])
            log.flush()
            print(f"{elapsed:7.0f} s  step {step:6d}  bpp {bpp:.4f}  psnr {db:.2f}  loss {loss:.4f}", flush=True)
            recent, next_val = [], next_val + args.val_every
            model.train()
            if elapsed >= end:
                break
        x = torch.stack([data[i + k] for k in range(2)])
        i += 2
        lr = args.lr * min(1.0, (step + 1) / 200)  # the stage-1 warm-up; constant after (a probe, not a schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        out = model(x)
        bpp = bits_per_pixel(out["likelihoods"], x.shape[0] * x.shape[2] * x.shape[3])
        loss = 0.5 * bpp + 0.00234375 * mse255(out["x_hat"], x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        aux_opt.zero_grad()
        model.compression.entropy_bottleneck.loss().backward()
        aux_opt.step()
        recent.append(loss.item())
        step += 1


if __name__ == "__main__":
    main()
