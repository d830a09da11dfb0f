"""Large images: `sodec compress` / `sodec decompress` of a 4K and an 8K photograph, time, peak memory, seams.

The photos are made from the largest real photograph available offline, "Kleiber" by Lukas Baubkus
(6028x3391, CC-BY-SA-3.0, Debian `lomiri-wallpapers-20.04`, fetched by `sodec data`; not one of the bundled
interim model's training photos): the 4K is it **downscaled** (LANCZOS) and centre-cropped to 3840x2160,
the 8K is it **upscaled** (LANCZOS, x1.27) and centre-cropped to 7680x4320, so the 8K has no more real
detail than the original.  Each command runs in a fresh child process; its peak resident memory is the
child's own ``ru_maxrss`` (``os.wait4``), its time the wall time of the whole command (process start,
imports and model load included, ≈ 2 s).

Seams: PSNR against the original of a band of ±``--band`` pixels along the decoder's tile borders
(:func:`sodec.models.tiling.border_band_mask`) vs the rest of the image.  Content differs between the band
and the rest, so a second, content-free measure is printed too: in a window around the first tile corner
the tiled decode is compared with a one-piece decode of the same latents ("band vs one-piece").

    python benchmarks/large_images.py [--photo PATH] [--sizes 4k,8k] [--model nano] [--work DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"4k": (3840, 2160), "8k": (7680, 4320)}
TILE, OVERLAP = 64, 8  # the decoder's defaults (sodec decompress --tile 64; overlap 8)
PHOTOS = (
    "debian/lomiri-wallpapers-20.04/root/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "debian/lomiri-wallpapers-16.04/root/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
)


def default_photo() -> Path:
    from sodec.train.sources import default_cache

    for rel in PHOTOS:
        if (default_cache() / rel).is_file():
            return default_cache() / rel
    sys.exit(f"no photo found in {default_cache()}: run `sodec data data/nano --sources lomiri` first, or --photo")


def make_image(photo: Path, width: int, height: int, out: Path) -> str:
    """Resize (LANCZOS) to cover width x height, centre-crop; returns 'downscaled'/'upscaled' xF."""
    from sodec.imageio import PNG_COMPRESS_LEVEL

    with Image.open(photo) as im:
        im = im.convert("RGB")
        scale = max(width / im.width, height / im.height)
        w, h = round(im.width * scale), round(im.height * scale)
        im = im.resize((w, h), Image.LANCZOS)
        left, top = (w - width) // 2, (h - height) // 2
        im.crop((left, top, left + width, top + height)).save(out, compress_level=PNG_COMPRESS_LEVEL)
    return f"{'upscaled' if scale > 1 else 'downscaled'} x{scale:.3f}"


def run_child(args: list[str]) -> tuple[float, float]:
    """Run ``python -m sodec.cli ARGS``; returns (wall s, peak RSS MiB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sodec.cli", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"sodec {' '.join(args)} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def one_piece_check(model_name: str, sodec_file: Path, decoded: np.ndarray, band: int) -> tuple[float, int]:
    """PSNR (dB) and max |diff| of the tiled decode vs a one-piece decode, in the tile-border band of a window
    around the first tile corner (windows of 80 ŷ pixels, compared 12 ŷ pixels away from their edges)."""
    import torch

    from sodec import api, container
    from sodec.models.compression import LatentStreams
    from sodec.models.tiling import border_band_mask, tile_borders

    data = sodec_file.read_bytes()
    f = container.unpack(data)
    hd = f.header
    model = api.model_for(hd, model_name)
    y_hat, z_hat = model.compression.decompress(
        LatentStreams(f.z_stream, f.y_stream, hd.latent_check), model.latent_size(hd.height, hd.width)
    )
    h, w = y_hat.shape[-2:]

    def window(length: int) -> tuple[int, int]:
        borders = tile_borders(length, TILE, OVERLAP)
        first = borders[0] if borders else length // 2
        a = max(0, min(length - 80, first - 28)) // 4 * 4
        return a, min(length, a + 80)

    (r0, r1), (c0, c1) = window(h), window(w)
    with torch.no_grad():
        x = model.synthesize(y_hat[..., r0:r1, c0:c1], z_hat[..., r0 // 4 : r1 // 4, c0 // 4 : c1 // 4])["x_hat"]
    one = api._to_uint8(x.float().clamp(0, 1))
    m = 12 * 16
    rows = slice(r0 * 16 + m, min(hd.height, r1 * 16 - m))
    cols = slice(c0 * 16 + m, min(hd.width, c1 * 16 - m))
    mask = border_band_mask(hd.height, hd.width, TILE, OVERLAP, band)[rows, cols]
    a = decoded[rows, cols].astype(np.int32)[mask]
    b = one[rows.start - r0 * 16 : rows.stop - r0 * 16, cols.start - c0 * 16 : cols.stop - c0 * 16].astype(np.int32)
    b = b[mask]
    mse = float(np.mean((a - b) ** 2)) if a.size else float("nan")
    psnr = float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
    return psnr, int(np.abs(a - b).max()) if a.size else 0


def machine() -> str:
    import torch

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu} · {os.cpu_count()} vCPU · {platform.machine()} · torch {torch.__version__} · "
        f"{torch.get_num_threads()} threads · load average {load:.1f} at start"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photo", type=Path, default=None, help="source photograph (default: Kleiber, see above)")
    ap.add_argument("--sizes", default="4k,8k", help="comma-separated: 4k, 8k (default both)")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--work", type=Path, default=None, help="keep the images and files here (default: a temp dir)")
    ap.add_argument("--band", type=int, default=8, help="half-width of the tile-border band in pixels (default 8)")
    args = ap.parse_args()
    photo = args.photo or default_photo()
    work = args.work or Path(tempfile.mkdtemp(prefix="sodec-large-"))
    work.mkdir(parents=True, exist_ok=True)
    from sodec.models.tiling import seam_psnr

    rows, notes = [], []
    for name in args.sizes.split(","):
        width, height = SIZES[name]
        src, coded, back = work / f"{name}.png", work / f"{name}.sodec", work / f"{name}.decoded.png"
        how = make_image(photo, width, height, src)
        notes.append(f"{name}: {photo.name} {how}, cropped to {width}x{height}")
        enc_s, enc_mib = run_child(["compress", str(src), "-o", str(coded), "--model", args.model, "-f", "-q"])
        dec_s, dec_mib = run_child(["decompress", str(coded), "-o", str(back), "--model", args.model, "-f", "-q"])
        with Image.open(src) as a, Image.open(back) as b:
            original, decoded = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
        seams = seam_psnr(original, decoded, TILE, OVERLAP, args.band)
        vs_one, max_diff = one_piece_check(args.model, coded, decoded, args.band)
        bpp = coded.stat().st_size * 8 / (width * height)
        rows.append(
            f"| {name} {width}x{height} | {enc_s:.1f} | {dec_s:.1f} | {enc_mib:.0f} | {dec_mib:.0f} | {bpp:.4f} | "
            f"{seams['psnr']:.2f} | {seams['border']:.2f} | {seams['interior']:.2f} | "
            f"{seams['border'] - seams['interior']:+.2f} | {vs_one:.1f} (max {max_diff}) |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"model {args.model} · {machine()}")
    print()
    for n in notes:
        print(f"- {n}")
    print(f"- band: ±{args.band} px along the decoder's tile borders (tile {TILE}, overlap {OVERLAP} ŷ pixels)")
    print()
    print(
        "| image | encode s | decode s | peak RSS compress (MiB) | peak RSS decompress (MiB) | bpp | PSNR (dB) | "
        "border band PSNR | interior PSNR | border − interior (dB) | band vs one-piece decode (dB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
