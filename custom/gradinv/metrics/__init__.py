"""Leakage metrics for gradient-inversion reconstructions (no NVFlare dependency).

:func:`evaluate_reconstruction` is the single entry point used by the CLI, the NVFlare filter and the report;
the pieces it combines are exported for direct use:

* :func:`ssim`, :func:`psnr` (scikit-image, reference SSIM settings, [0, 1] greyscale or RGB images),
  :func:`minmax_normalise`, :func:`ssim_matrix`;
* :class:`LPIPSMetric` / :func:`lpips_distance` (LPIPS-alex v0.1 with verified offline weights) and
  :func:`ensure_lpips_weights`, which builds those weights once;
* :func:`match_reconstructions` (Hungarian and the reference's best match), :func:`rdlv`,
  :func:`label_accuracy` and :func:`matched_label_accuracy`.

Names are imported on first access, so that ``python -m gradinv.metrics.lpips_weights`` and light importers
(the CLI parser) do not load torch and scikit-image just by importing the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LPIPSMetric": "gradinv.metrics.perceptual",
    "lpips_distance": "gradinv.metrics.perceptual",
    "Matching": "gradinv.metrics.matching",
    "match_reconstructions": "gradinv.metrics.matching",
    "VISIBLY_LEAKED_SSIM": "gradinv.metrics.evaluate",
    "evaluate_reconstruction": "gradinv.metrics.evaluate",
    "ensure_lpips_weights": "gradinv.metrics.lpips_weights",
    "lpips_weights_path": "gradinv.metrics.lpips_weights",
    "label_accuracy": "gradinv.metrics.labels",
    "matched_label_accuracy": "gradinv.metrics.labels",
    "rdlv": "gradinv.metrics.relative_leakage",
    "minmax_normalise": "gradinv.metrics.similarity",
    "psnr": "gradinv.metrics.similarity",
    "ssim": "gradinv.metrics.similarity",
    "ssim_matrix": "gradinv.metrics.similarity",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers see the eager imports
    from gradinv.metrics.evaluate import VISIBLY_LEAKED_SSIM, evaluate_reconstruction
    from gradinv.metrics.labels import label_accuracy, matched_label_accuracy
    from gradinv.metrics.lpips_weights import ensure_lpips_weights, lpips_weights_path
    from gradinv.metrics.matching import Matching, match_reconstructions
    from gradinv.metrics.perceptual import LPIPSMetric, lpips_distance
    from gradinv.metrics.relative_leakage import rdlv
    from gradinv.metrics.similarity import minmax_normalise, psnr, ssim, ssim_matrix


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
