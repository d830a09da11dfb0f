"""How far can decoded pixels drift when the float synthesis runs on other kernels?

The latents are exact on every machine (docs/format.md, "Determinism"); what follows them is float32 and
can differ across CPUs.  We cannot run on another CPU here, so we provoke the same kind of difference on
this one: the fidelity decoder is run on the same ŷ with different convolution back-ends, thread counts and
memory layouts, and against a float64 reference.  Prints a Markdown table.

    python benchmarks/float_drift.py [--model nano] [--image PATH]
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from sodec import api, container
from sodec.imageio import load_image
from sodec.models.compression import LatentStreams


def decode(model, y_hat, threads=2, mkldnn=True, channels_last=False, dtype=torch.float32) -> np.ndarray:
    torch.set_num_threads(threads)
    net = model.fidelity.to(dtype)
    y = y_hat.to(dtype)
    if channels_last:
        net, y = net.to(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    ctx = torch.backends.mkldnn.flags(enabled=mkldnn) if not mkldnn else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        out = net(y)
    model.fidelity.to(torch.float32, memory_format=torch.contiguous_format)
    return out.clamp(0, 1).mul(255).round().to(torch.uint8)[0].numpy().astype(int)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="nano")
    ap.add_argument("--image", default=None)
    args = ap.parse_args()
    model = api.load_model(args.model)
    rgb, _ = load_image(args.image or api.example_image())
    f = container.unpack(api.compress_image(model, rgb))
    h = f.header
    streams = LatentStreams(f.z_stream, f.y_stream, h.latent_check)
    y_hat, _ = model.compression.decompress(streams, model.latent_size(h.height, h.width))
    ref = decode(model, y_hat)
    variants = {
        "1 thread": dict(threads=1),
        "oneDNN off (ATen native conv)": dict(mkldnn=False),
        "oneDNN off, 1 thread": dict(mkldnn=False, threads=1),
        "channels_last": dict(channels_last=True),
        "float64 (reference arithmetic)": dict(dtype=torch.float64),
    }
    print(f"model {args.model} · {h.width}x{h.height} · torch {torch.__version__}")
    print()
    print("| variant vs default (oneDNN, 2 threads) | max abs diff (8-bit levels) | pixels differing |")
    print("|---|---:|---:|")
    for name, kw in variants.items():
        d = np.abs(decode(model, y_hat, **kw) - ref)
        print(f"| {name} | {d.max()} | {100 * (d > 0).mean():.3f} % |")


if __name__ == "__main__":
    main()
