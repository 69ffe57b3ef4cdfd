"""What every peer attack returns."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class PeerResult:
    """A peer's reconstruction of one client's images.

    Attributes:
        images: (N, C, H, W) reconstructions in [0, 1], in the peer's own order (scored after best-match pairing).
        iterations: optimiser iterations run.
        seconds: wall time of the attack alone (set-up of the peer's configuration excluded).
    """

    images: torch.Tensor
    iterations: int
    seconds: float
