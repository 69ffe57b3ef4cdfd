"""Leakage reports: metrics.csv and the per-update artifacts → plots, a self-contained HTML page, TensorBoard.

No NVFlare and no job runs in this package (an import contract checks it): reports are built offline from a
run dir or a POC download. Names are loaded on first use, so that importing the package does not pay for
matplotlib or torch.

- :func:`build_report` — one run's ``report.html``.
- :func:`write_tensorboard_scalars`, :func:`close_tensorboard_writers` — called by the server filter.
- Building blocks for the sweep report (:mod:`gradinv.sweep.report`): :class:`HtmlPage` and the helpers of
  :mod:`gradinv.report.html`, :func:`plot_privacy_utility`, :func:`plot_metric_per_round`, :func:`read_csv_rows`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_report": "gradinv.report.run_report",
    "find_gradinv_dir": "gradinv.report.artifacts",
    "load_run_artifacts": "gradinv.report.artifacts",
    "read_csv_rows": "gradinv.report.artifacts",
    "METRICS_COLUMNS": "gradinv.report.artifacts",
    "HtmlPage": "gradinv.report.html",
    "write_private_text": "gradinv.report.html",
    "plot_metric_per_round": "gradinv.report.plots",
    "plot_privacy_utility": "gradinv.report.plots",
    "privacy_utility_figure": "gradinv.report.plots",
    "write_tensorboard_scalars": "gradinv.report.tensorboard_scalars",
    "close_tensorboard_writers": "gradinv.report.tensorboard_scalars",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
