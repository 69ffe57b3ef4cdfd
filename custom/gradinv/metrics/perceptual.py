"""LPIPS-alex (v0.1) perceptual distance on greyscale or RGB images, with the official ImageNet backbone only.

The model is ``lpips.LPIPS(net="alex", pnet_rand=True)`` (no download) with the state dict converted by
:mod:`gradinv.metrics.lpips_weights` loaded strictly on top. A random backbone is never used: when the
converted weights are missing and cannot be built, :class:`gradinv.errors.AssetMissingError` is raised and
callers must report LPIPS as unavailable (None), not as a number.

The module is named ``perceptual`` so that it never shadows the ``lpips`` package.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradinv.compat import import_lpips
from gradinv.metrics.lpips_weights import ensure_lpips_weights

# AlexNet's stride-4 stem and two 3x3/stride-2 max-pools leave no spatial extent below this side length.
LPIPS_MIN_SIZE = 31
_BATCH_SIZE = 32  # pairs per forward pass: bounds memory at 224 px without slowing the small batches used here


@functools.lru_cache(maxsize=None)
def _load_model(weights_path: Path, device: str) -> torch.nn.Module:
    lpips = import_lpips()
    with warnings.catch_warnings():
        # lpips still passes ``pretrained=`` to torchvision's alexnet, which warns about the deprecated argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    return model.to(device).eval().requires_grad_(False)


def load_lpips_model(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The LPIPS-alex model with verified weights on ``device``, built once per process, weights file and device.

    Raises:
        AssetMissingError: the converted weights are missing and cannot be built; run ``gradinv assets``.
    """
    # The weights path is part of the cache key, so pointing GRADINV_HOME elsewhere is honoured.
    return _load_model(ensure_lpips_weights(quiet=True), str(torch.device(device)))


_CHANNEL_COUNTS = (1, 3)


def _as_batch(images: Any, name: str, channels: int) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) (``channels=1``) or (N, 3, H, W) (``channels=3``) array or tensor in [0, 1]
    -> float32 tensor (N, C, H, W), validated."""
    tensor = images.detach() if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.to(torch.float32)
    if tensor.ndim == 3 and channels == 1:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        expected = "greyscale (N, H, W) or (N, 1, H, W)" if channels == 1 else "RGB (N, 3, H, W)"
        hint = "; for RGB images pass channels=3" if channels == 1 and tensor.ndim == 4 and tensor.shape[1] == 3 else ""
        raise ValueError(f"{name} must be {expected}; got shape {tuple(tensor.shape)}{hint}")
    if min(tensor.shape[-2:]) < LPIPS_MIN_SIZE:
        raise ValueError(
            f"{name} are {tensor.shape[-2]}x{tensor.shape[-1]} px; LPIPS-alex needs at least "
            f"{LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} px"
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    if tensor.numel() and (tensor.min() < 0.0 or tensor.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1]; got [{tensor.min().item():.4g}, {tensor.max().item():.4g}]")
    return tensor


class LPIPSMetric:
    """Pairwise LPIPS-alex distance between greyscale or RGB images in [0, 1] (0 = identical, larger = more different).

    RGB is taken as it is, greyscale is repeated to three channels; both are mapped to [-1, 1], the input range of
    LPIPS v0.1 (whose built-in scaling layer then applies the ImageNet shift and scale). Evaluation only: no
    gradients are tracked.

    Args:
        device: where to run the network. None: the device of the first tensor argument, CPU for numpy input.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = None if device is None else torch.device(device)

    def __call__(self, images: Any, references: Any, channels: int = 1) -> np.ndarray:
        """LPIPS of each pair ``(images[k], references[k])``.

        Args:
            images, references: numpy arrays or torch tensors in [0, 1], equal shapes, sides at least
                :data:`LPIPS_MIN_SIZE` px: greyscale (N, H, W) or (N, 1, H, W), or RGB (N, 3, H, W).
            channels: 1 for greyscale, 3 for RGB; the caller states it, so that a batch's layout is never guessed.

        Returns:
            float64 array of N distances.

        Raises:
            ValueError: malformed input.
            AssetMissingError: the verified weights are not available.
        """
        if isinstance(channels, bool) or channels not in _CHANNEL_COUNTS:
            raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
        device = self.device
        if device is None:
            device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        first = _as_batch(images, "images", channels)
        second = _as_batch(references, "references", channels)
        if first.shape != second.shape:
            raise ValueError(f"images {tuple(first.shape)} and references {tuple(second.shape)} differ in shape")
        model = load_lpips_model(device)
        distances = []
        with torch.no_grad():
            for start in range(0, first.shape[0], _BATCH_SIZE):
                chunk_a, chunk_b = (
                    (batch[start : start + _BATCH_SIZE].to(device) * 2.0 - 1.0).expand(-1, 3, -1, -1)
                    for batch in (first, second)
                )
                distances.append(model(chunk_a, chunk_b).reshape(-1).double().cpu())
        return torch.cat(distances).numpy() if distances else np.zeros(0)


def lpips_distance(
    images: Any, references: Any, device: str | torch.device | None = None, channels: int = 1
) -> np.ndarray:
    """Functional form of :class:`LPIPSMetric`: LPIPS-alex of each pair, as a float64 array."""
    return LPIPSMetric(device)(images, references, channels)
