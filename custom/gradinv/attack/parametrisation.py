"""How the attack parametrises the images it optimises: RGB as luminance at full detail and chroma at coarser detail.

A client's update pins down fewer numbers than an RGB image has: for a flatten-head CNN the last layer's update
holds the last feature map (the example job's 64 px ``HospitalNet``: 8192 values), which over-determines a 64 px
grayscale image (4096 pixels) but not an RGB one (12288). What the update leaves loose ends as colour noise. Natural
and medical colour images vary far less in colour than in brightness at fine scales (the reason JPEG stores chroma
at half resolution), so the attack optimises RGB images as luminance at full detail and two chroma axes restricted
to bilinear upsamplings from ``chroma_detail`` x coarser: at 3x (the default), 4096 + 2 x 21 x 21 free values, fewer
than the update fixes. The colour axes are an orthonormal opponent-colour basis: luminance ``(1, 1, 1) / sqrt(3)``,
chroma ``(1, -1, 0) / sqrt(2)`` and ``(1, 1, -2) / sqrt(6)``. The images the objective, the priors and the metrics
see stay in [0, 1] pixel space (clamped there). One-channel images are optimised as they are.
"""

from __future__ import annotations

import functools
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

    The coordinates are (N, 3, H, W) for RGB: luminance, then the two chroma axes, which :meth:`to_pixels` projects
    (orthogonally) onto their bilinear upsamplings from ``chroma_detail`` x coarser, so that ``to_pixels(
    from_pixels(x))`` is ``x`` with its colour's fine detail removed and brightness untouched. For C = 1 or
    ``chroma_detail`` = 1 every map is the identity.
    """

    def __init__(self, channels: int, chroma_detail: int, device: torch.device | str = "cpu"):
        self.identity = channels != 3 or chroma_detail == 1
        self.chroma_detail = chroma_detail
        basis = torch.tensor(_OPPONENT_BASIS, dtype=torch.float32, device=device)
        self.basis, self.inverse = basis, basis.T  # orthonormal: the inverse is the transpose

    @staticmethod
    def _mix(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,njhw->nihw", matrix.to(images), images)

    def _coarse_chroma(self, coordinates: torch.Tensor) -> torch.Tensor:
        """``coordinates`` with the chroma axes projected onto their coarse versions (a symmetric projection)."""
        height, width = coordinates.shape[-2:]
        rows, columns = (
            _coarse_projection(size, self.chroma_detail, coordinates.device, coordinates.dtype)
            for size in (height, width)
        )
        chroma = rows @ coordinates[:, 1:] @ columns.T
        return torch.cat([coordinates[:, :1], chroma], dim=1)

    def to_pixels(self, coordinates: torch.Tensor) -> torch.Tensor:
        return coordinates if self.identity else self._mix(self.basis, self._coarse_chroma(coordinates))

    def from_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.identity else self._mix(self.inverse, images)

    def pull_back(self, image_gradient: torch.Tensor) -> torch.Tensor:
        """The gradient w.r.t. the coordinates of a loss whose gradient w.r.t. the images is ``image_gradient``
        (the transpose of :meth:`to_pixels`: the projection is symmetric and the basis orthonormal)."""
        return image_gradient if self.identity else self._coarse_chroma(self._mix(self.inverse, image_gradient))

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


@functools.lru_cache(maxsize=16)
def _coarse_projection(size: int, factor: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size, size) orthogonal projection of a line of ``size`` pixels onto the lines that are linear upsamplings
    of ``size // factor`` pixels: separable, so rows x columns projects an image onto its bilinear upsamplings from
    ``factor`` x coarser. Cached: the attack applies it every iteration."""
    coarse = torch.eye(max(1, size // factor), dtype=torch.float64)[None]
    upsampling = F.interpolate(coarse, size=size, mode="linear", align_corners=False)[0].T  # (size, size // factor)
    return (upsampling @ torch.linalg.pinv(upsampling)).to(device=device, dtype=dtype)


def coarsen(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) ``images`` with detail finer than ``factor`` pixels removed (area down, bilinear up)."""
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, height // factor), max(1, width // factor)), mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
