"""Pairing reconstructions with the training images they came from.

A gradient inversion returns a batch in an arbitrary order, so each original must be paired with a
reconstruction before it is scored. Two pairings are reported:

* **Hungarian** (gradinv's primary pairing): one-to-one, maximising the total similarity
  (``scipy.optimize.linear_sum_assignment``). With fewer reconstructions than originals, some originals stay
  unpaired (None); with more, some reconstructions are unused.
* **Best match** (the reference's): for each original, the reconstruction most similar to it (argmax over
  reconstructions). Several originals may share one reconstruction, so it can only overstate leakage
  relative to the Hungarian pairing.

The reference takes the argmax over RDLV rather than SSIM; for a fixed original RDLV is an increasing function
of SSIM (when SSIM(prior, x) > 0), so both pick the same reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Matching:
    """Which reconstruction each original is paired with, one entry per original in original order."""

    hungarian: list[int | None]
    """One-to-one assignment; None where an original got no reconstruction (fewer reconstructions than originals)."""
    best_match: list[int]
    """Argmax of similarity per original; entries may repeat."""


def match_reconstructions(similarity: ArrayLike) -> Matching:
    """Pair originals with reconstructions given ``similarity[i, r]`` (higher = more alike, e.g. SSIM).

    Args:
        similarity: (N originals, M reconstructions) finite scores, N, M >= 1.

    Returns:
        The Hungarian one-to-one assignment and the reference's best match per original.
    """
    scores = np.asarray(similarity, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"similarity must be a non-empty (originals, reconstructions) matrix; got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("similarity contains NaN or infinite values")
    hungarian: list[int | None] = [None] * scores.shape[0]
    for original, reconstruction in zip(*linear_sum_assignment(scores, maximize=True)):
        hungarian[int(original)] = int(reconstruction)
    best_match = [int(index) for index in np.argmax(scores, axis=1)]
    return Matching(hungarian=hungarian, best_match=best_match)
