"""Memory options of paper-scale training: gradient checkpointing (same loss and gradients) and frozen bases
cast to the training precision (on CPU here; the loop does it on CUDA only)."""

from __future__ import annotations

import pytest
import torch

from sodec.train.config import from_dict
from sodec.train.stages import build_stage, cast_frozen_bases


def tiny_stage(stage: str = "anneal", **model):
    config = {
        "stage": stage,
        "out": "unused",
        "steps": 1,
        "model": {"preset": "tiny", "random_bases": True, **model},
        "data": {"train": "unused", "crop": 64, "batch_size": 2},
        "loss": {"lmbda": 0.5, "alignment": 0.002},
    }
    torch.manual_seed(0)
    return build_stage(from_dict(config))


def loss_and_grads(stage, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    stage.train()
    stage.zero_grad()
    torch.manual_seed(1)  # the same quantisation noise in both runs
    loss = stage(x, 0.5)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in stage.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain, checkpointed = tiny_stage(), tiny_stage(gradient_checkpointing=True)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), checkpointed.state_dict().values()))
    m = checkpointed.model
    assert m.fidelity.gradient_checkpointing and m.denoiser.unet.is_gradient_checkpointing
    assert m.latent_decoder.vae.is_gradient_checkpointing and m.guidance.model.grad_checkpointing
    calls = {"Da block": 0, "UNet block": 0, "F block": 0}  # recomputed in the backward pass: run twice

    def count(name, module):
        forward = module.forward

        def counted(*args, **kwargs):
            calls[name] += 1
            return forward(*args, **kwargs)

        module.forward = counted  # (forward hooks do not run again when a checkpoint recomputes)

    count("Da block", m.fidelity.res_blocks[0])
    count("UNet block", m.denoiser.unet.down_blocks[0].resnets[0])
    count("F block", m.guidance.model.blocks[0])
    loss_a, grads_a = loss_and_grads(plain, x)
    loss_b, grads_b = loss_and_grads(checkpointed, x)
    assert calls == {"Da block": 2, "UNet block": 2, "F block": 2}
    assert torch.allclose(loss_a, loss_b, rtol=1e-6, atol=0)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith("model.fidelity.") for k in grads_a)
    assert any("lora_" in k for k in grads_a)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7), name


def test_gradient_checkpointing_of_the_fidelity_decoder_alone_is_exact():
    stage = tiny_stage("rd")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loss_a, grads_a = loss_and_grads(stage, x)
    stage.model.fidelity.gradient_checkpointing = True
    loss_b, grads_b = loss_and_grads(stage, x)
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


def test_frozen_bases_cast_to_the_training_precision_keep_trainable_tensors_in_float32():
    stage = tiny_stage()
    n = cast_frozen_bases(stage, torch.bfloat16)
    m = stage.model
    frozen = [p for mod in stage.frozen_bases() for p in mod.parameters() if not p.requires_grad]
    assert n == sum(p.numel() for p in frozen) > 0 and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in stage.trainable_parameters())  # LoRA, Da, Ts, ... stay fp32
    assert all(p.dtype == torch.float32 for p in m.compression.parameters())  # the exact coder's path
    x = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the loop runs under, on a GPU
        out = stage(x, 0.5)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad is not None for p in stage.trainable_parameters()[:3])
    assert cast_frozen_bases(stage, torch.bfloat16) == 0  # idempotent
    stage.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # validation runs under the loop's autocast too
        metrics, images = stage.validate(torch.rand(1, 3, 64, 64))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()) and images["x_hat"].dtype == torch.float32


@pytest.mark.parametrize("stage", ["rd", "prior-vae"])
def test_stages_without_frozen_bases_cast_nothing(stage):
    assert cast_frozen_bases(tiny_stage(stage), torch.float16) == 0
