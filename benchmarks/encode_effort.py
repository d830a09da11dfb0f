"""Encode effort 0..3 (``sodec compress --effort N``): bytes, quality and encode time per level.

Per rate point and effort level, over 768x512 centre crops of a folder of photos: mean bytes and bpp of the
`.sodec` file, PSNR and LPIPS-VGG of x̂_f (Da) and of the default (diffusion) decoder's x̂, encode seconds,
and how many files kept the refined latent.  Every file is decoded by the unchanged decoder.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/encode_effort.py --photos data/nano/val --rates 0,2

Tuning (training photos only): ``--lmbda`` / ``--iters`` / ``--lr`` override the shipped settings,
``--no-diffusion`` and ``--no-lpips`` skip the slow columns.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sodec import api, container
from sodec.models import refine
from sodec.models.compression import LatentStreams


def centre_crop(path: Path, width: int = 768, height: int = 512) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = max(width / im.width, height / im.height)
        if scale > 1:  # smaller photos are enlarged to cover the crop
            im = im.resize((round(im.width * scale + 0.5), round(im.height * scale + 0.5)), Image.BICUBIC)
        left, top = (im.width - width) // 2, (im.height - height) // 2
        return np.asarray(im.crop((left, top, left + width, top + height))).copy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def decode(model, data: bytes, decoder: str) -> np.ndarray:
    image, _ = api.decompress_bytes(data, model, decoder=decoder)
    return np.asarray(image.convert("RGB"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--n", type=int, default=0, help="first N photos (sorted by name; 0: all)")
    p.add_argument("--rates", default="0,2")
    p.add_argument("--efforts", default="0,1,2,3")
    p.add_argument("--lmbda", default=None, help="comma-separated λ values to try (default: the shipped one)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--no-diffusion", action="store_true")
    p.add_argument("--no-lpips", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    paths = sorted(q for q in args.photos.iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    paths = paths[: args.n] if args.n else paths
    crops = [centre_crop(q) for q in paths]
    lpips = None
    if not args.no_lpips:
        from sodec.eval.lpips import LPIPS

        lpips = LPIPS("vgg")

    def lp(a: np.ndarray, b: np.ndarray) -> float:
        t = [torch.from_numpy(v).permute(2, 0, 1)[None].float() / 255 for v in (a, b)]
        with torch.no_grad():
            return float(lpips(t[0], t[1]).mean())

    print(f"{len(crops)} photos from {args.photos}: {', '.join(q.name for q in paths)}")
    header = ("| rate | effort | iters | λ | bytes | bpp | PSNR x̂_f | LPIPS x̂_f | PSNR x̂ | LPIPS x̂ | encode s "
              "| encode CPU s | refined |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for rate in map(int, args.rates.split(",")):
        model = api.load_model("nano", rate=rate)
        runs = []
        for effort in map(int, args.efforts.split(",")):
            shipped = refine.settings_for(effort, rate) if effort else refine.RefineSettings(0, 0.0)
            lmbdas = [float(v) for v in args.lmbda.split(",")] if args.lmbda and effort else [shipped.lmbda]
            for lmbda in lmbdas:
                runs.append((effort, refine.RefineSettings(
                    args.iters if args.iters is not None and effort else shipped.iterations,
                    lmbda,
                    args.lr if args.lr is not None else shipped.lr,
                )))
        for effort, s in runs:
            rows, kept = [], 0
            for rgb in crops:
                t0, c0 = time.perf_counter(), time.process_time()
                if effort:
                    x = api._to_tensor(rgb, torch.device("cpu"))
                    streams, rep = refine.compress_refined(model, x, effort, settings=s)
                    kept += rep["refined"]
                    data = _pack(model, streams, rgb)
                else:
                    data = api.compress_image(model, rgb)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                x_f = decode(model, data, "fidelity")
                row = [len(data), container.bits_per_pixel(len(data), 768, 512), psnr(x_f, rgb)]
                row.append(lp(x_f, rgb) if lpips else float("nan"))
                if args.no_diffusion:
                    row += [float("nan"), float("nan")]
                else:
                    x_hat = decode(model, data, "auto")
                    row += [psnr(x_hat, rgb), lp(x_hat, rgb) if lpips else float("nan")]
                rows.append(row + [dt, dc])
            m = np.mean(np.array(rows), axis=0)
            print(
                f"| {rate} | {effort} | {s.iterations} | {s.lmbda:g} | {m[0]:.0f} | {m[1]:.4f} | {m[2]:.2f} | "
                f"{m[3]:.4f} | {m[4]:.2f} | {m[5]:.4f} | {m[6]:.1f} | {m[7]:.1f} | {kept}/{len(crops)} |",
                flush=True,
            )


def _pack(model, streams: LatentStreams, rgb: np.ndarray) -> bytes:
    """The `.sodec` bytes of streams, as :func:`sodec.api.compress_image` writes them."""
    cfg = model.config
    h = container.Header(cfg.name, api.model_id(model), cfg.rate_point, rgb.shape[1], rgb.shape[0],
                         container.ColorMode.RGB, streams.latent_check)
    return container.pack(container.SodecFile(h, streams.z_stream, streams.y_stream))


if __name__ == "__main__":
    main()
