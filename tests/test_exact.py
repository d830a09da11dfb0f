"""The integer entropy-parameter path: exact, order-independent, and close to the float path it replaces."""

from __future__ import annotations

import pytest
import torch

from sodec.models.exact import ACT_FRAC, WEIGHT_BITS, ExactEntropyParameters


@pytest.fixture
def params() -> ExactEntropyParameters:
    torch.manual_seed(1)
    p = ExactEntropyParameters(hyper_channels=16, latent_channels=12).eval()
    p.update()
    return p


def _z_hat(seed=0, shape=(1, 16, 3, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-20, 21, shape, generator=g).float() + 0.37  # symbols + a float median


def test_integer_weights_are_small_integers(params):
    for i in range(3):
        w = getattr(params, f"int_weight_{i}")
        assert w.dtype == torch.int16 and w.numel() > 0
        assert w.abs().max() < 2**WEIGHT_BITS
        # Every output channel uses its weight range (per-channel power-of-two scaling).
        oc_dim = 1 if i < 2 else 0
        assert (w.abs().amax(dim=[d for d in range(4) if d != oc_dim]) >= 2 ** (WEIGHT_BITS - 2)).all()


def test_exact_path_is_close_to_float_path(params):
    z = _z_hat()
    scales_f, means_f = params(z)
    scales_i, means_i = params.exact(z)
    assert scales_i.shape == scales_f.shape == (1, 12, 12, 20)
    assert torch.allclose(means_i, means_f, atol=0.05) and torch.allclose(scales_i, scales_f, atol=0.05)


def test_exact_outputs_are_on_the_fixed_point_grid(params):
    scales, means = params.exact(_z_hat())
    for t in (scales, means):
        assert torch.equal(t * 2**ACT_FRAC, torch.round(t * 2**ACT_FRAC))


def test_exact_path_ignores_thread_count_and_batch_layout(params):
    z = _z_hat(shape=(1, 16, 9, 7))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = params.exact(z)
        torch.set_num_threads(2)
        two = params.exact(z)
        # Same input inside a batch with other images, and as a non-contiguous view: same bits.
        batch = torch.cat([_z_hat(5, (1, 16, 9, 7)), z, _z_hat(6, (1, 16, 9, 7))])
        batched = params.exact(batch.transpose(2, 3).contiguous().transpose(2, 3))
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(one, two, batched):
        assert torch.equal(a, b) and torch.equal(a, c[1:2])


def test_exact_path_equals_an_independent_integer_evaluation(params):
    """Evaluate P with Python integers (arbitrary precision) and compare every output bit."""
    import numpy as np

    z = _z_hat(shape=(1, 16, 2, 2))
    x = np.floor(z.double().numpy() * 2**ACT_FRAC + 0.5).astype(object)
    for i, layer in enumerate(params.layers):
        w = getattr(params, f"int_weight_{i}").numpy().astype(object)
        b = getattr(params, f"int_bias_{i}").numpy().astype(object)
        s = getattr(params, f"int_shift_{i}").numpy()
        acc = _conv_int(x[0], w, b, layer)
        out = np.empty_like(acc)
        for c in range(acc.shape[0]):
            sh = int(s[c])
            out[c] = (acc[c] * 2 + (1 << sh)) // (1 << (sh + 1)) if sh else acc[c]  # floor(acc/2^sh + 1/2)
        lo = 0 if i < 2 else -(1 << 23)
        x = np.clip(out, lo, 1 << 23)[None]
    ref = torch.tensor(x.astype(np.int64), dtype=torch.float64) / 2**ACT_FRAC
    scales, means = params.exact(z)
    assert torch.equal(torch.cat([scales, means], 1).double(), ref)


def _conv_int(x, w, b, layer):
    """Direct integer convolution (or transposed convolution) of one image, object dtype."""
    import numpy as np

    transposed = isinstance(layer, torch.nn.ConvTranspose2d)
    k = w.shape[-1]
    pad = layer.padding[0]
    if transposed:
        stride, opad = layer.stride[0], layer.output_padding[0]
        cin, h, wd = x.shape
        out_ch = w.shape[1]
        H = (h - 1) * stride - 2 * pad + k + opad
        W = (wd - 1) * stride - 2 * pad + k + opad
        full = np.zeros((out_ch, (h - 1) * stride + k + opad, (wd - 1) * stride + k + opad), dtype=object)
        for i in range(h):
            for j in range(wd):
                for ci in range(cin):
                    full[:, i * stride : i * stride + k, j * stride : j * stride + k] += x[ci, i, j] * w[ci]
        return full[:, pad : pad + H, pad : pad + W] + b[:, None, None]
    cin, h, wd = x.shape
    xp = np.zeros((cin, h + 2 * pad, wd + 2 * pad), dtype=object)
    xp[:, pad : pad + h, pad : pad + wd] = x
    out = np.zeros((w.shape[0], h, wd), dtype=object)
    for i in range(h):
        for j in range(wd):
            patch = xp[:, i : i + k, j : j + k]
            out[:, i, j] = (w * patch[None]).reshape(w.shape[0], -1).sum(1)
    return out + b[:, None, None]


def test_update_refuses_weights_that_could_lose_exactness():
    p = ExactEntropyParameters(hyper_channels=8, latent_channels=4)
    with torch.no_grad():
        p.layers[2].bias.fill_(2.0**60)
    with pytest.raises(ValueError, match="exactly"):
        p.update()


def test_exact_needs_update():
    with pytest.raises(RuntimeError, match="update"):
        ExactEntropyParameters(8, 4).exact(torch.zeros(1, 8, 1, 1))
