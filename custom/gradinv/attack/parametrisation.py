"""The coordinates the attack optimises RGB images in: luminance and two chroma axes, chroma steps scaled down.

Adam takes steps of about the same size in every coordinate it optimises. In RGB coordinates a step is as likely
to change a pixel's colour as its brightness, while natural (and medical) colour images vary mostly in brightness:
the reconstructions of RGB clients end with colour noise that the update does not pin down. Feature-visualisation
work optimises in decorrelated colour coordinates for the same reason. Here the optimiser's variable is
``z = B^-1 x`` per pixel with ``B`` an orthonormal opponent-colour basis (luminance ``(1, 1, 1) / sqrt(3)``, chroma
``(1, -1, 0) / sqrt(2)`` and ``(1, 1, -2) / sqrt(6)``) whose chroma columns are scaled by ``chroma_scale``, so that
a step of the same size moves chroma ``chroma_scale`` x as far as luminance. The images stay in [0, 1] pixel space
(clamped there) for the objective, the priors and every metric. One-channel images are optimised as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_OPPONENT_BASIS = (
    (1 / math.sqrt(3), 1 / math.sqrt(2), 1 / math.sqrt(6)),
    (1 / math.sqrt(3), -1 / math.sqrt(2), 1 / math.sqrt(6)),
    (1 / math.sqrt(3), 0.0, -2 / math.sqrt(6)),
)


class ColourCoordinates:
    """Maps images (N, C, H, W) to the optimiser's coordinates and back, and pulls image gradients back to them.

    For C = 1 or ``chroma_scale`` = 1 every map is the identity (the opponent basis is orthonormal, so at
    ``chroma_scale`` = 1 plain RGB would differ only by a rotation; it is kept exactly as it was instead).
    """

    def __init__(self, channels: int, chroma_scale: float, chroma_detail: int = 1, device: torch.device | str = "cpu"):
        self.identity = channels != 3 or (chroma_scale == 1 and chroma_detail == 1)
        self.chroma_detail = chroma_detail
        if not self.identity:
            basis = torch.tensor(_OPPONENT_BASIS, dtype=torch.float32)
            basis[:, 1:] *= chroma_scale
            self.basis = basis.to(device)  # pixel = basis @ coordinates, per pixel
            self.inverse = torch.linalg.inv(basis).to(device)

    @staticmethod
    def _mix(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,njhw->nihw", matrix, images)

    def to_pixels(self, coordinates: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return coordinates
        if self.chroma_detail > 1:
            coordinates = torch.cat([coordinates[:, :1], coarsen(coordinates[:, 1:], self.chroma_detail)], dim=1)
        return self._mix(self.basis, coordinates)

    def from_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.identity else self._mix(self.inverse, images)

    def pull_back(self, image_gradient: torch.Tensor) -> torch.Tensor:
        """The gradient w.r.t. the coordinates of a loss whose gradient w.r.t. the images is ``image_gradient``."""
        if self.identity:
            return image_gradient
        with torch.enable_grad():
            coordinates = torch.zeros_like(image_gradient, requires_grad=True)
            (gradient,) = torch.autograd.grad(self.to_pixels(coordinates), coordinates, image_gradient)
        return gradient

    def optimised(self, images: torch.Tensor) -> torch.Tensor:
        """The optimiser's variable for the leaf ``images``: ``images`` itself in the identity case."""
        return images if self.identity else self.from_pixels(images.detach()).requires_grad_(True)

    @torch.no_grad()
    def update_pixels(self, coordinates: torch.Tensor, images: torch.Tensor, clamp: bool) -> None:
        """After an optimiser step on ``coordinates``: ``images`` in place from them, clamped into [0, 1] when
        ``clamp`` (and the coordinates then moved to the clamped images)."""
        if not self.identity:
            images.copy_(self.to_pixels(coordinates))
        if clamp:
            images.clamp_(0, 1)
            self.update_coordinates(images, coordinates)

    @torch.no_grad()
    def update_coordinates(self, images: torch.Tensor, coordinates: torch.Tensor) -> None:
        """``coordinates`` in place from ``images`` (after the images were changed directly)."""
        if not self.identity:
            coordinates.copy_(self.from_pixels(images))


def coarsen(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) ``images`` with detail finer than ``factor`` pixels removed (area down, bilinear up)."""
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, height // factor), max(1, width // factor)), mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
