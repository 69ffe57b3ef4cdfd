"""SSIM, PSNR, LPIPS and evaluate_reconstruction on RGB images (N, 3, H, W), square and not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from gradinv.metrics import evaluate_reconstruction, lpips_distance, minmax_normalise, psnr, ssim, ssim_matrix

SIZE = (48, 64)  # height x width: not square on purpose


def _colour(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) photograph as float64 (3, *SIZE) in [0, 1], spanning exactly [0, 1]."""
    small = resize(image.astype(np.float64) / 255.0, SIZE, anti_aliasing=True).transpose(2, 0, 1)
    return minmax_normalise(small)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two real colour photographs (scikit-image's astronaut and chelsea the cat), (2, 3, 48, 64)."""
    return np.stack([_colour(data.astronaut()), _colour(data.chelsea())])


def _noisy(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return np.clip(images + np.random.default_rng(seed).normal(0.0, sigma, images.shape), 0.0, 1.0)


def test_identical_rgb_scores_perfectly(lpips_home, photos):
    result = evaluate_reconstruction(photos, photos, prior=photos.mean(axis=0))
    assert result["ssim"] == pytest.approx(1.0) and result["ssim_minmax"] == pytest.approx(1.0)
    assert result["psnr"] == pytest.approx(100.0)
    assert result["lpips_status"] == "ok" and result["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert result["image_size"] == list(SIZE) and result["assignment"] == [0, 1]


def test_rgb_ssim_is_the_mean_over_channels_and_noise_lowers_it(photos):
    noisy = _noisy(photos[0], 0.1, seed=0)
    per_channel = [ssim(photos[0][channel], noisy[channel]) for channel in range(3)]
    assert ssim(photos[0], noisy) == pytest.approx(np.mean(per_channel), abs=1e-12)
    assert ssim(photos[0], noisy) < ssim(photos[0], _noisy(photos[0], 0.02, seed=0)) < 1.0


def test_rgb_psnr_is_over_every_pixel(photos):
    noisy = _noisy(photos[1], 0.05, seed=1)
    mse = np.mean((photos[1] - noisy) ** 2)
    assert psnr(photos[1], noisy) == pytest.approx(10 * np.log10(1.0 / mse))


def test_channel_order_matters(lpips_home, photos):
    swapped = photos[:, ::-1]  # RGB read as BGR: same structure per channel, wrong colours
    result = evaluate_reconstruction(photos, swapped.copy())
    assert result["ssim"] < 0.95 and result["psnr"] < 30.0 and result["lpips"] > 0.01


def test_greyscale_repeated_to_rgb_scores_as_greyscale(lpips_home, photos):
    gray = photos.mean(axis=1)  # (2, H, W)
    noisy = _noisy(gray, 0.1, seed=2)
    as_gray = evaluate_reconstruction(gray, noisy)
    as_rgb = evaluate_reconstruction(np.repeat(gray[:, None], 3, axis=1), np.repeat(noisy[:, None], 3, axis=1))
    for key in ("ssim", "ssim_minmax", "psnr", "lpips"):
        assert as_rgb[key] == pytest.approx(as_gray[key], rel=1e-5), key


def test_hungarian_pairing_and_rdlv_on_rgb(lpips_home, photos):
    reconstructions = _noisy(photos[::-1], 0.05, seed=3)  # reconstruction 0 shows original 1
    prior = np.full((3, *SIZE), 0.5)
    result = evaluate_reconstruction(torch.from_numpy(photos), torch.from_numpy(reconstructions), prior=prior,
                                     true_labels=[0, 1], recovered_labels=[1, 0])
    assert result["assignment"] == [1, 0] and result["best_match_assignment"] == [1, 0]
    assert result["label_accuracy_matched"] == 1.0
    for entry in result["per_image"]:
        assert entry["ssim"] > entry["prior_ssim"] > 0.0
        assert entry["rdlv"] == pytest.approx((entry["ssim"] - entry["prior_ssim"]) / entry["prior_ssim"])
        assert np.isfinite(entry["lpips"]) and entry["lpips"] > 0.0
    batched = evaluate_reconstruction(photos, reconstructions, prior=prior[None])  # (1, C, H, W) is one prior
    assert batched["rdlv"] == pytest.approx(result["rdlv"])


def test_ssim_minmax_undoes_a_global_contrast_change(photos):
    dimmed = 0.5 * photos + 0.25  # same colours, half the contrast
    result = evaluate_reconstruction(photos, dimmed, compute_lpips=False)
    assert result["ssim"] < 0.99 and result["ssim_minmax"] == pytest.approx(1.0)


def test_ssim_matrix_of_rgb_stacks(photos):
    matrix = ssim_matrix(photos, photos[::-1])
    assert matrix.shape == (2, 2)
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[0, 0] < 0.5


def test_lpips_reads_rgb_when_told(lpips_home, photos):
    images = torch.from_numpy(photos).float()
    assert np.array_equal(lpips_distance(images, images, channels=3), np.zeros(2))
    noisy = torch.from_numpy(_noisy(photos, 0.1, seed=4)).float()
    distances = lpips_distance(noisy, images, channels=3)
    assert np.isfinite(distances).all() and (distances > 0.0).all()
    with pytest.raises(ValueError, match="greyscale .*pass channels=3"):
        lpips_distance(images, images)
    with pytest.raises(ValueError, match=r"RGB \(N, 3, H, W\)"):
        lpips_distance(images[:, 0], images[:, 0], channels=3)
    with pytest.raises(ValueError, match="channels must be 1"):
        lpips_distance(images, images, channels=2)


GOOD_RGB = np.full((2, 3, 16, 16), 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reconstructions": np.full((2, 16, 16), 0.5)},
         r"reconstructions have 1 channel \(greyscale\) but originals have 3 channels \(RGB\)"),
        ({"originals": np.full((2, 1, 16, 16), 0.5)}, "reconstructions have 3 channels .* originals have 1 channel"),
        ({"originals": np.full((2, 16, 16, 3), 0.5)}, "channels go first"),
        ({"originals": np.full((2, 2, 16, 16), 0.5)}, r"or RGB \(K, 3, H, W\)"),
        ({"prior": np.full((16, 16), 0.5)}, r"prior has 1 channel \(greyscale\) but the originals have 3"),
        ({"prior": np.full((3, 16, 12), 0.5)}, "prior must be one"),
        ({"reconstructions": np.full((2, 3, 16, 12), 0.5)}, "reconstructions are .* but originals are"),
    ],
)
def test_mismatched_channels_are_refused(kwargs, message):
    arguments = {"originals": GOOD_RGB, "reconstructions": GOOD_RGB, "compute_lpips": False} | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate_reconstruction(**arguments)


def test_pairwise_metrics_refuse_mixed_layouts(photos):
    with pytest.raises(ValueError, match="equal shape"):
        ssim(photos[0], photos[0, 0])
    with pytest.raises(ValueError, match="channels-first RGB"):
        psnr(photos[0].transpose(1, 2, 0), photos[0].transpose(1, 2, 0))
