"""A leakage score the server can compute without ground truth.

In real deployments the server never sees the clients' images, so SSIM/RDLV are unavailable. What it
does see: how well its reconstruction explains the observed update (cosine distance ``d``), how well the
replayed BatchNorm statistics match (relative residual ``r``), and how many images were mixed into each
local step (the effective batch size). A reconstruction can only be trusted to be *the* data when the update is
explained (small d, small r) and the problem is not underdetermined by averaging many images per step. The score is

    leak_score = (1 - min(d, 1)) * 1 / (1 + min(r, 1)) * 1 / images_per_step

in [0, 1]. It is a heuristic ranking signal, not a calibrated probability: its rank correlation with the
true RDLV is measured and reported by ``gradinv sweep``.
"""

from __future__ import annotations


def leak_score(update_distance: float, bn_residual: float | None, images_per_step: int) -> float:
    """No-reference leakage score in [0, 1]; higher means the reconstruction is more likely the real data."""
    match = 1.0 - min(max(update_distance, 0.0), 1.0)
    bn_term = 1.0 if bn_residual is None else 1.0 / (1.0 + min(max(bn_residual, 0.0), 1.0))
    return match * bn_term / max(images_per_step, 1)
