"""SSIM and PSNR: reference settings, identical-image conventions, min-max rescaling."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from gradinv.metrics import minmax_normalise, psnr, ssim, ssim_matrix
from gradinv.metrics.similarity import PSNR_CAP_DB


def test_identical_images_give_ssim_one_and_capped_psnr(bundled_images):
    camera = bundled_images["camera"]
    assert ssim(camera, camera) == pytest.approx(1.0, abs=1e-12)
    assert psnr(camera, camera) == PSNR_CAP_DB == 100.0


def test_psnr_of_a_known_offset():
    reference = np.full((16, 16), 0.25)
    assert psnr(reference, reference + 0.1) == pytest.approx(20.0)  # MSE 0.01 at data range 1


def test_ssim_is_symmetric_and_drops_with_blur(bundled_images):
    camera, blurred = bundled_images["camera"], bundled_images["camera_blur"]
    assert ssim(camera, blurred) == pytest.approx(ssim(blurred, camera), abs=1e-12)
    assert 0.3 < ssim(camera, blurred) < 0.99


def test_ssim_matches_reference_computation_to_constants_rounding(bundled_images):
    """The reference: 0-255, three repeated channels, data_range 256. Only C1, C2 differ (by (255/256)^2)."""
    for first, second in [("camera", "camera_blur"), ("camera", "moon"), ("coins", "text")]:
        a, b = bundled_images[first], bundled_images[second]
        as_reference = [np.repeat(image[..., None] * 255.0, 3, axis=-1) for image in (a, b)]
        reference_value = structural_similarity(*as_reference, channel_axis=-1, data_range=256.0)
        assert ssim(a, b) == pytest.approx(reference_value, abs=1e-3)
        # Scaling the images and the data range together is exact: data_range 1 on [0, 1] == 255 on 0-255.
        assert ssim(a, b) == pytest.approx(structural_similarity(a * 255, b * 255, data_range=255.0), abs=1e-12)


def test_ssim_uses_a_uniform_7x7_window(bundled_images):
    a, b = bundled_images["camera"], bundled_images["camera_blur"]
    assert ssim(a, b) == pytest.approx(
        structural_similarity(a, b, win_size=7, gaussian_weights=False, data_range=1.0), abs=1e-12
    )
    assert ssim(a, b) != pytest.approx(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, data_range=1.0))


def test_minmax_normalise_spans_unit_range_and_keeps_constant_images():
    image = np.array([[0.2, 0.4], [0.3, 0.6]])
    np.testing.assert_allclose(minmax_normalise(image), [[0.0, 0.5], [0.25, 1.0]])
    flat = np.full((3, 3), 0.7)
    np.testing.assert_array_equal(minmax_normalise(flat), flat)


def test_ssim_matrix_shape_and_values(bundled_images):
    originals = np.stack([bundled_images["camera"], bundled_images["moon"]])
    reconstructions = np.stack([bundled_images["moon"], bundled_images["camera"], bundled_images["coins"]])
    matrix = ssim_matrix(originals, reconstructions)
    assert matrix.shape == (2, 3)
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (np.zeros((6, 6)), np.zeros((6, 6)), "at least 7 px"),
        (np.zeros((8, 8)), np.zeros((8, 9)), "equal shape"),
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), "2-D"),
    ],
)
def test_pairwise_metrics_reject_bad_shapes(first, second, message):
    with pytest.raises(ValueError, match=message):
        ssim(first, second)
    with pytest.raises(ValueError, match=message):
        psnr(first, second)
