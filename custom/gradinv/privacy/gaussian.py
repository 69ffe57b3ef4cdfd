"""GaussianPrivacy: the client-side noise filter of Hatamizadeh et al. (IEEE TMI 2023), as the paper runs it.

σ = σ0 × P95 of the non-zero |Δ| pooled over every entry of every state-dict diff (weights, BatchNorm
running statistics, ``num_batches_tracked``), and i.i.d. N(0, σ²) is added to every entry. There is no
clipping and no (ε, δ) accounting: this is **not** differential privacy. gradinv calls σ0 the "noise level".

The scale is data-dependent (a percentile of this very update), so a larger update gets proportionally
larger noise; zeros are left out of the percentile because frozen or untouched entries would otherwise
drag the scale towards 0.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Mapping

import numpy as np
import torch
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from gradinv.arrays import to_numpy

NOISE_SCALE_PERCENTILE = 95.0


def gaussian_privacy_noise(
    diff: Mapping[str, np.ndarray], sigma0: float, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], float]:
    """Add the paper's Gaussian noise to a state-dict diff; returns (new arrays, σ used).

    Args:
        diff: name → array (any shape, 0-d included). Never modified.
        sigma0: noise level σ0 ≥ 0; σ = σ0 × P95 of the non-zero |entries| pooled over all arrays.
        rng: source of the noise (seed it for reproducible runs). Arrays are noised in ``diff``'s order.

    Returns:
        New arrays under the same names, and σ. Floating arrays keep their dtype; integer and boolean arrays
        (``num_batches_tracked``) are noised too, as in the paper, and come back as float64 (the dtype NVFlare's
        aggregation gives them anyway). When no noise is added (σ0 = 0, or an all-zero diff) the result is an
        exact copy, dtypes included.

    Raises:
        ValueError: σ0 negative or not finite; a diff entry with NaN/inf (noise would hide nothing and a
            privacy filter must not guess); a non-numeric entry.
    """
    if not math.isfinite(sigma0) or sigma0 < 0:
        raise ValueError(f"sigma0 must be a finite number >= 0, got {sigma0!r}")
    arrays = {name: np.asarray(value) for name, value in diff.items()}
    for name, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"diff entry {name!r} is not numeric (dtype {array.dtype})")
    non_finite = [name for name, array in arrays.items() if not np.all(np.isfinite(array))]
    if non_finite:
        raise ValueError(f"diff entries hold NaN or inf, refusing to noise them: {', '.join(non_finite)}")

    sigma = float(sigma0) * _nonzero_abs_percentile(arrays.values(), NOISE_SCALE_PERCENTILE)
    if sigma == 0.0:
        return {name: array.copy() for name, array in arrays.items()}, 0.0
    noised = {}
    for name, array in arrays.items():
        out_dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)
        # np.asarray: a 0-d array plus noise is a NumPy scalar, and callers expect arrays
        noised[name] = np.asarray(array + rng.normal(0.0, sigma, size=array.shape), dtype=out_dtype)
    return noised, sigma


def _nonzero_abs_percentile(arrays, percentile: float) -> float:
    """The percentile of |x| over the non-zero entries of all arrays pooled; 0 when every entry is 0."""
    pooled = np.concatenate([np.abs(a.astype(np.float64, copy=False)).ravel() for a in arrays] or [np.zeros(0)])
    nonzero = pooled[pooled != 0.0]
    return float(np.percentile(nonzero, percentile)) if nonzero.size else 0.0


class GaussianPrivacy(DXOFilter):
    """Client task-result filter adding the paper's Gaussian noise (noise level σ0) to the shared update.

    Meant for WEIGHT_DIFF results, as in the paper. WEIGHTS results are noised too, but then σ comes from the
    weights themselves, which are far larger than any update: expect a ruined model.

    The filter fails closed: a diff it cannot noise (NaN, non-numeric entries) raises, so NVFlare reports a
    filter error instead of sending the update un-noised.
    """

    def __init__(self, sigma0: float = 0.0, seed: int | None = None) -> None:
        """
        Args:
            sigma0: noise level σ0 ≥ 0 (the paper sweeps 0, 5, …, 50); 0 sends the update unchanged.
            seed: makes the noise reproducible. The client's name is mixed into the seed, so clients that share
                one job configuration (and so one seed) still draw independent noise; identical noise on every
                client would not average out in FedAvg. ``None``: fresh OS entropy.
        """
        super().__init__(
            supported_data_kinds=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS],
            data_kinds_to_filter=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS],
        )
        if not math.isfinite(sigma0) or sigma0 < 0:
            raise ValueError(f"sigma0 must be a finite number >= 0, got {sigma0!r}")
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        # same names as the constructor arguments: NVFlare's job API exports them from these attributes
        self.sigma0 = sigma0
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO:
        """A new DXO of the same kind with noised copies of the arrays and a copy of the meta."""
        rng = self._generator(fl_ctx)
        arrays = {name: to_numpy(value) for name, value in dxo.data.items()}  # bfloat16: float32, _like casts back
        noised, sigma = gaussian_privacy_noise(arrays, self.sigma0, rng)
        data = {name: _like(dxo.data[name], noised[name]) for name in noised}
        self.log_info(
            fl_ctx,
            f"GaussianPrivacy: noise level sigma0={self.sigma0}, sigma={sigma:.6g} "
            f"(= sigma0 x P95 of non-zero |diff|) on {len(data)} {dxo.data_kind} entries; not differential privacy",
        )
        return DXO(data_kind=dxo.data_kind, data=data, meta=copy.deepcopy(dxo.meta))

    def _generator(self, fl_ctx: FLContext) -> np.random.Generator:
        if self._rng is None:
            if self.seed is None:
                self._rng = np.random.default_rng()
            else:
                client_key = zlib.crc32(str(fl_ctx.get_identity_name()).encode("utf-8"))
                self._rng = np.random.default_rng([self.seed, client_key])
        return self._rng


def _like(original: object, array: np.ndarray) -> object:
    """``array`` in the container type of ``original``: a torch tensor stays a tensor, on its device.

    Floating tensors get their dtype back (bfloat16 included); integer tensors keep the array's dtype, which is
    float64 once noised and the original integer dtype for an un-noised copy.
    """
    if not isinstance(original, torch.Tensor):
        return array
    dtype = original.dtype if original.dtype.is_floating_point else None
    return torch.from_numpy(array).to(device=original.device, dtype=dtype)
