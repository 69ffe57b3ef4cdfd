"""What the server can say about an attack without ground truth: did it converge, and how likely is it a leak.

In real deployments the server never sees the clients' images, so SSIM/RDLV are unavailable. What it
does see: how well its reconstruction explains the observed update (cosine distance ``d``), how well the
replayed BatchNorm statistics match (relative residual ``r``), and how many images were mixed into each
local step (the effective batch size).

:func:`attack_converged` says whether the attack found images that reproduce the update at all. When it did not,
its reconstructions do not explain the update and their low scores say nothing about the client: the attack fell
short, which does not make the client safe.

:func:`leak_score` ranks updates: a reconstruction can only be trusted to be *the* data when the update is
explained (small d, small r) and the problem is not underdetermined by averaging many images per step:

    leak_score = (1 - min(d, 1)) * 1 / (1 + min(r, 1)) * 1 / images_per_step

in [0, 1]. It is a heuristic ranking signal, not a calibrated probability: its rank correlation with the
true RDLV is measured and reported by ``gradinv sweep``.
"""

from __future__ import annotations

import math

CONVERGED_UPDATE_DISTANCE = 0.015
"""The largest final update cosine distance at which an attack counts as converged (see :func:`attack_converged`).

Measured on held-out 1-image ``bn_cnn`` clients: every attack that reached its image (SSIM >= 0.93) ended at <= 0.008,
every one still short of it at >= 0.029; ``docs/convergence.md`` has the runs."""


def attack_converged(update_distance: float | None) -> bool | None:
    """Whether the attack's reconstruction reproduces the observed update: final cosine distance between the
    replayed and the observed update <= :data:`CONVERGED_UPDATE_DISTANCE`; None when there is no distance (the
    attack did not run).

    A non-converged attack's reconstructions do not explain the update, so its low SSIM/RDLV/leak score are no
    evidence that the client is safe. A converged one reproduces the update but need not have found the images:
    several images per step can explain one update (see ``docs/convergence.md`` for the measurements behind the
    threshold).
    """
    if update_distance is None:
        return None
    return math.isfinite(update_distance) and update_distance <= CONVERGED_UPDATE_DISTANCE


def leak_score(update_distance: float, bn_residual: float | None, images_per_step: int) -> float:
    """No-reference leakage score in [0, 1]; higher means the reconstruction is more likely the real data."""
    match = 1.0 - min(max(update_distance, 0.0), 1.0)
    bn_term = 1.0 if bn_residual is None else 1.0 / (1.0 + min(max(bn_residual, 0.0), 1.0))
    return match * bn_term / max(images_per_step, 1)
