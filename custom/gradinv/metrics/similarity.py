"""SSIM and PSNR between greyscale or RGB images in [0, 1], computed with scikit-image.

SSIM settings (:data:`SSIM_SETTINGS`) are the reference's (``rdlv_filter.py`` / ``image_sim.py`` of the
paper's release), i.e. scikit-image's defaults: a 7x7 **uniform** window, sample covariance, no Gaussian
weighting, K1 = 0.01, K2 = 0.03. Differences from the reference, and why they do not change comparability:

* **Intensity scale.** The reference works on 0-255 images with ``data_range=256``; gradinv works on [0, 1]
  images with ``data_range=1.0``. SSIM is unchanged when the images and ``data_range`` are scaled together,
  so this equals the reference's computation with ``data_range=255``: only the stabilising constants
  C1 = (K1 L)^2 and C2 = (K2 L)^2 differ, by a factor (255/256)^2 (0.8 %). Measured on bundled
  scikit-image pictures at 64 px (blurred, noisy, flat and unrelated pairs) this moves SSIM by at most 8e-4;
  the constants weigh more on nearly flat images.
* **Channels.** Images are greyscale (H, W) or channels-first RGB (3, H, W). RGB SSIM is the mean of the three
  channels' SSIM (scikit-image's ``channel_axis``), as the reference computes it on its three-channel arrays. The
  reference repeats greyscale to three channels; SSIM over three identical channels is the single-channel value,
  so gradinv computes greyscale on one channel.
* **Resolution.** The reference resizes to 224 px; gradinv measures at the images' own size.
* **Reconstruction intensities.** The reference min-max rescales every reconstruction, which hides any global
  intensity or offset error. gradinv clips reconstructions to [0, 1] and does not rescale them (:func:`ssim`);
  the reference's min-max variant is available separately (:func:`minmax_normalise`, reported as
  ``ssim_minmax``).

PSNR uses ``data_range=1.0`` and the mean squared error over all pixels (of every channel). Identical images have
infinite PSNR; it is reported as :data:`PSNR_CAP_DB` (100 dB, the PSNR of a mean squared error of 1e-10), so every
value stays finite and JSON-serialisable.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

SSIM_WINDOW = 7
SSIM_SETTINGS = {
    "win_size": SSIM_WINDOW,
    "gaussian_weights": False,
    "use_sample_covariance": True,
    "K1": 0.01,
    "K2": 0.03,
    "data_range": 1.0,
}
PSNR_DATA_RANGE = 1.0
PSNR_CAP_DB = 100.0


RGB_CHANNELS = 3


def _as_pair(reference: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 images of equal shape, (H, W) or (3, H, W); a (1, H, W) pair is taken as greyscale."""
    reference = np.asarray(reference, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if reference.ndim == 3 and reference.shape[0] == 1 and reference.shape == image.shape:
        reference, image = reference[0], image[0]
    layout_ok = reference.ndim == 2 or (reference.ndim == 3 and reference.shape[0] == RGB_CHANNELS)
    if not layout_ok or reference.shape != image.shape:
        raise ValueError(
            "SSIM/PSNR compare two images of equal shape, 2-D greyscale (H, W) or channels-first RGB (3, H, W); "
            f"got {reference.shape} and {image.shape}"
        )
    height, width = reference.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(
            f"images are {height}x{width} px; SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window "
            f"needs at least {SSIM_WINDOW} px per side"
        )
    return reference, image


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """SSIM of two (H, W) or (3, H, W) images in [0, 1] with the reference settings (:data:`SSIM_SETTINGS`); the
    mean over channels for RGB; 1.0 if identical."""
    reference, image = _as_pair(reference, image)
    channel_axis = 0 if reference.ndim == 3 else None
    return float(structural_similarity(reference, image, channel_axis=channel_axis, **SSIM_SETTINGS))


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB of two (H, W) or (3, H, W) images in [0, 1], ``data_range=1.0``, capped at :data:`PSNR_CAP_DB`."""
    reference, image = _as_pair(reference, image)
    with np.errstate(divide="ignore"):  # identical images: log10(1 / 0) = inf, replaced by the cap
        value = peak_signal_noise_ratio(reference, image, data_range=PSNR_DATA_RANGE)
    return float(min(value, PSNR_CAP_DB))


def minmax_normalise(image: np.ndarray) -> np.ndarray:
    """Rescale an image linearly to span [0, 1], as the reference does to every reconstruction.

    An RGB image is rescaled as a whole (one minimum and maximum over its channels), which keeps its colours'
    proportions. A constant image has no range to stretch and is returned unchanged (the reference would divide
    by zero).
    """
    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    if high <= low:
        return image.copy()
    return (image - low) / (high - low)


def ssim_matrix(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """SSIM of every (original, reconstruction) pair: an (N, M) matrix for stacks of N and M images of one shape,
    (N, H, W) or (N, 3, H, W)."""
    scores = [[ssim(original, reconstruction) for reconstruction in reconstructions] for original in originals]
    return np.array(scores, dtype=np.float64).reshape(len(originals), len(reconstructions))
