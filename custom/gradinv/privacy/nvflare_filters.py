"""Client-side privacy filters by name, for jobs and the privacy–utility sweep.

Every filter here is a task-result filter for the client (``recipe.add_client_output_filter(f, tasks=["train"])``)
and runs before the result leaves the site, so the server's leakage filter measures what was actually sent.
Facts below were read in the installed NVFlare 2.9.0 source (``nvflare/app_common/filters/``).

``"gaussian"`` → :class:`gradinv.privacy.gaussian.GaussianPrivacy` (``sigma0=0.0, seed=None``)
    The paper's defence: σ = σ0 × P95 of the non-zero |Δ| pooled over all entries, N(0, σ²) added to every
    entry. Not differential privacy.

``"percentile"`` → ``nvflare.app_common.filters.percentile_privacy.PercentilePrivacy``
    (``percentile=10, gamma=0.01, data_kinds=None``). Shokri & Shmatikov's "share the largest": divides each entry
    by the DXO meta ``NUM_STEPS_CURRENT_ROUND`` (default 1), zeroes entries whose |value| is below the
    ``percentile``-th percentile of all |values| pooled, clips the rest to ±``gamma``, multiplies back. 0-d entries
    pass unclipped. Truncation, not DP. Accepts WEIGHT_DIFF and WEIGHTS (both filtered by default); it is only
    meaningful on WEIGHT_DIFF: on WEIGHTS it clips the weights themselves to ±gamma, which destroys the model.
    Does nothing when ``gamma <= 0`` or ``percentile`` is outside 0..100. Works on NumPy arrays and torch tensors
    (tensors stay tensors); integer entries (``num_batches_tracked``) come back as floats. It replaces ``dxo.data``
    on the DXO it was given (new arrays; the input arrays are not modified).

``"svt"`` → ``nvflare.app_common.filters.svt_privacy.SVTPrivacy``
    (``fraction=0.1, epsilon=0.1, noise_var=0.1, gamma=1e-5, tau=1e-6, data_kinds=None, replace=True,
    epsilon_threshold=None, epsilon_query=None, epsilon_release=None``). Sparse-vector technique: picks about
    ``fraction`` of the entries whose clipped |value| (per local step) passes a noisy threshold, releases those
    clipped to ±gamma plus Laplace noise and sets every other entry to 0; 0-d entries pass through un-noised
    (the filter notes this in its accounting). Keeps a pure-DP ε ledger in the DXO meta
    (``svt_privacy_budget``, ``svt_privacy_accountant``). Accepts WEIGHT_DIFF and WEIGHTS (both filtered by
    default); meaningful on WEIGHT_DIFF only. Returns NumPy arrays even for torch input. Uses NumPy's global
    random state (not seedable per filter). With the defaults the released values are noise-dominated (Laplace
    scale 2·gamma/noise_var = 20 × gamma, on values clipped to ±gamma).

``"none"`` → ``None`` (no filter).
"""

from __future__ import annotations

import inspect

from nvflare.apis.dxo_filter import DXOFilter
from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
from nvflare.app_common.filters.svt_privacy import SVTPrivacy

from gradinv.privacy.gaussian import GaussianPrivacy

PRIVACY_FILTERS: dict[str, type[DXOFilter] | None] = {
    "none": None,
    "gaussian": GaussianPrivacy,
    "percentile": PercentilePrivacy,
    "svt": SVTPrivacy,
}


def make_privacy_filter(name: str, **kwargs: object) -> DXOFilter | None:
    """A new client task-result privacy filter by name, built with ``kwargs``; ``None`` for ``"none"``.

    Args:
        name: one of ``none``, ``gaussian``, ``percentile``, ``svt`` (case-insensitive).
        kwargs: the filter's constructor arguments (see the module docstring).

    Raises:
        ValueError: unknown name, or an argument the filter does not take (the message lists what it takes).
    """
    key = name.strip().lower()
    if key not in PRIVACY_FILTERS:
        raise ValueError(f"unknown privacy filter {name!r}; valid names: {', '.join(PRIVACY_FILTERS)}")
    filter_class = PRIVACY_FILTERS[key]
    if filter_class is None:
        if kwargs:
            raise ValueError(f"privacy filter 'none' takes no arguments, got: {', '.join(sorted(kwargs))}")
        return None
    parameters = inspect.signature(filter_class).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ValueError(
            f"privacy filter {key!r} ({filter_class.__name__}) takes no argument {', '.join(unknown)}; "
            f"it takes: {', '.join(parameters)}"
        )
    return filter_class(**kwargs)
