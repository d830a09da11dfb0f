"""Settings of ``sodec eval``: the run's configuration and the parsing of its options.

Nothing here loads a network or reads an image, so the CLI and Ray workers can build and ship an
:class:`EvalConfig` cheaply (it is a plain, picklable dataclass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sodec.errors import SodecError
from sodec.eval import baselines as bl


@dataclass
class EvalConfig:
    """Everything that defines a ``sodec eval`` run (the CLI's options; :func:`sodec.eval.run.command_line`)."""

    data: Path
    out: Path
    model: str | None = "nano"  # None: baselines only
    rates: list[int] | None = None  # None: every rate point of the model family
    decoder: str = "auto"  # auto · fidelity · both
    baselines: tuple[str, ...] = bl.BASELINES
    targets: list[float | str] | None = None  # floats and/or "match"; None: ["match"]
    preprocess: str = "none"
    metrics: tuple[str, ...] = ()
    limit: int | None = None
    anchor: str = "heic"
    log_bpp: bool = False
    crops: int = 4
    paper_points: bool = False
    device: str = "cpu"
    force: bool = False
    quiet: bool = False
    command: str = ""
    # Ray address for ``--ray``: None runs in this process; "local" starts a local cluster; "auto" joins the
    # running one; "ray://host:port" connects a client.  The results are the same either way.
    ray: str | None = None
    workers: int | None = None  # --ray: size of the worker pool (default: one per CPU, or per GPU)


def parse_rates(spec: str | None) -> list[int] | None:
    """``"2,0"`` → [0, 2]; ``None``, ``""`` or ``"all"`` → ``None`` (every rate point of the model)."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    try:
        rates = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SodecError(f"--rates: expected comma-separated integers, got {spec!r}") from None
    if not rates or any(r < 0 for r in rates):
        raise SodecError(f"--rates: expected rate points >= 0, got {spec!r}")
    return sorted(set(rates))


def parse_targets(spec: str | None) -> list[float | str] | None:
    """``"0.02,0.05"`` → [0.02, 0.05]; the word ``match`` stands for "each SODEC file's bpp, per image"."""
    if spec is None or not spec.strip():
        return None
    out: list[float | str] = []
    for s in spec.split(","):
        s = s.strip()
        if s == "match":
            out.append("match")
            continue
        try:
            v = float(s)
        except ValueError:
            raise SodecError(f"--targets: {s!r} is neither a bpp nor 'match'") from None
        if not (v > 0 and math.isfinite(v)):
            raise SodecError(f"--targets: bpp must be > 0, got {s}")
        out.append(v)
    return out


@dataclass(frozen=True)
class Preprocess:
    """How each dataset image is turned into the reference that every codec codes and is measured against."""

    kind: str  # none · center-crop · resize64 · crop64
    width: int = 0
    height: int = 0

    @classmethod
    def parse(cls, spec: str) -> Preprocess:
        spec = spec.strip()
        if spec in ("none", "resize64", "crop64"):
            return cls(spec)
        if spec.startswith("center-crop:"):
            try:
                w, h = (int(v) for v in spec.split(":", 1)[1].lower().split("x"))
            except ValueError:
                raise SodecError(f"--preprocess: expected center-crop:WxH, got {spec!r}") from None
            if w < 1 or h < 1:
                raise SodecError(f"--preprocess: crop size must be positive, got {spec!r}")
            return cls("center-crop", w, h)
        raise SodecError(f"--preprocess: expected none, center-crop:WxH, resize64 or crop64, got {spec!r}")

    def describe(self) -> str:
        return {
            "none": "none: each image is coded at its own size, after sodec's colour policy (RGB; gray replicated "
            "to RGB, alpha dropped; EXIF orientation applied)",
            "center-crop": f"center-crop:{self.width}x{self.height}: the central {self.width}x{self.height} "
            f"region of each image (images smaller than that in either side are skipped, not upscaled)",
            "resize64": "resize64: each side Lanczos-resized to the nearest multiple of 64 (at least 64)",
            "crop64": "crop64: each side centre-cropped down to a multiple of 64 (at least 64)",
        }[self.kind]

    def apply(self, rgb: np.ndarray) -> np.ndarray | None:
        """The reference image, or ``None`` if this image cannot be used (too small for the crop)."""
        h, w = rgb.shape[:2]
        if self.kind == "none":
            return rgb
        if self.kind == "center-crop":
            if w < self.width or h < self.height:
                return None
            top, left = (h - self.height) // 2, (w - self.width) // 2
            return np.ascontiguousarray(rgb[top : top + self.height, left : left + self.width])
        if self.kind == "resize64":
            size = (max(64, round(w / 64) * 64), max(64, round(h / 64) * 64))
            if size == (w, h):
                return rgb
            return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
        nw, nh = max(64, w // 64 * 64), max(64, h // 64 * 64)
        if nw > w or nh > h:
            return None
        top, left = (h - nh) // 2, (w - nw) // 2
        return np.ascontiguousarray(rgb[top : top + nh, left : left + nw])
