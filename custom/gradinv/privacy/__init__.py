"""Client-side privacy filters whose effect the leakage report measures.

- :func:`gaussian_privacy_noise` / :class:`GaussianPrivacy`: the paper's Gaussian noise (noise level σ0; not DP).
- :func:`make_privacy_filter`: ``none | gaussian | percentile | svt`` by name (NVFlare's PercentilePrivacy and
  SVTPrivacy for the last two).
"""

from gradinv.privacy.gaussian import GaussianPrivacy, gaussian_privacy_noise
from gradinv.privacy.nvflare_filters import PRIVACY_FILTERS, make_privacy_filter

__all__ = ["GaussianPrivacy", "PRIVACY_FILTERS", "gaussian_privacy_noise", "make_privacy_filter"]
