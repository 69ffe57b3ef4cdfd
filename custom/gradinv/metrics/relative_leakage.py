"""Relative Data Leakage Value (RDLV), as defined in Hatamizadeh et al. (IEEE TMI 2023).

For a training image x, its reconstruction x_hat and the attacker's prior image p::

    RDLV = (SSIM(x_hat, x) - SSIM(p, x)) / SSIM(p, x)

0 means no better than guessing the prior, < 0 worse than the prior, 1 twice the prior's similarity. RDLV is
relative to the prior: a poor prior (low SSIM(p, x)) inflates it, so report which prior was used and show
SSIM beside it.

Undefined cases return None rather than a number: without a prior (the reference then stores raw SSIM;
gradinv keeps SSIM in its own field instead), and when SSIM(p, x) <= 0, where the ratio has no meaning
(division by zero, or a sign flip that would rank worse reconstructions higher).
"""

from __future__ import annotations


def rdlv(reconstruction_ssim: float, prior_ssim: float | None) -> float | None:
    """RDLV of one image from SSIM(reconstruction, x) and SSIM(prior, x); None if there is no prior or
    SSIM(prior, x) <= 0."""
    if prior_ssim is None or prior_ssim <= 0.0:
        return None
    return float((reconstruction_ssim - prior_ssim) / prior_ssim)
