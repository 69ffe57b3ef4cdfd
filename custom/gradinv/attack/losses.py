"""Loss terms of the inversion objective: update matching, BatchNorm-statistics matching and image priors."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _flat_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def cosine_distance(simulated: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - <a, b> / (|a| |b|)`` over all parameter updates taken together (0 = same direction)."""
    # The epsilon keeps the gradient finite when a surrogate produces no update at all (sqrt'(0) is infinite).
    norm_simulated = torch.sqrt(_flat_dot(simulated, simulated) + 1e-30)
    norm_observed = torch.sqrt(_flat_dot(observed, observed) + 1e-30)
    return 1 - _flat_dot(simulated, observed) / (norm_simulated * norm_observed)


def mean_cosine_distance(simulated: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean over tensors of each tensor's own cosine distance (every tensor counts alike, whatever its norm).

    Tensors whose observed update is zero carry no direction and must be left out by the caller.
    """
    return sum(cosine_distance([s], [o]) for s, o in zip(simulated, observed)) / len(observed)


def l2_sum_distance(simulated: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """The paper's update-matching term: the sum over tensors of the (unsquared) L2 norm of the difference."""
    return sum((s - o).norm() for s, o in zip(simulated, observed))


def total_variation_l2(images: torch.Tensor) -> torch.Tensor:
    """The reference TV prior: unsquared Frobenius norms of horizontal, vertical and both diagonal differences."""
    return (
        (images[..., :, :-1] - images[..., :, 1:]).norm()
        + (images[..., :-1, :] - images[..., 1:, :]).norm()
        + (images[..., 1:, :-1] - images[..., :-1, 1:]).norm()
        + (images[..., :-1, :-1] - images[..., 1:, 1:]).norm()
    )


def image_l2(images: torch.Tensor) -> torch.Tensor:
    """Mean over images of each image's L2 norm."""
    return images.flatten(1).norm(dim=1).mean()
