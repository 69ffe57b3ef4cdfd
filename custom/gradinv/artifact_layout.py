"""The layout of a run's ``<run_dir>/gradinv/`` folder: the names its writer (:mod:`gradinv.fl.artifacts`, the
server filter) and its readers (:mod:`gradinv.report`, :mod:`gradinv.sweep`) share.

It lives below both, so that the NVFlare glue and the reports agree on the files without importing each other:

``metrics.csv`` (one row per round x client, :data:`METRICS_COLUMNS`), ``settings.json``, optional
``global_metrics.csv`` (``round, test_accuracy``), ``tensorboard/``, and per update
``round_NNN/<site>/{metrics.json, reconstruction.png, reconstruction.npz}``.
"""

GRADINV_SUBDIR = "gradinv"
METRICS_CSV = "metrics.csv"
SETTINGS_JSON = "settings.json"
GLOBAL_METRICS_CSV = "global_metrics.csv"
SITE_ROUND_METRICS_JSON = "metrics.json"
RECONSTRUCTION_PNG = "reconstruction.png"
RECONSTRUCTION_NPZ = "reconstruction.npz"
TENSORBOARD_SUBDIR = "tensorboard"

METRICS_COLUMNS = (
    "round", "site", "num_images", "num_steps", "status", "replay", "decision", "reason", "ssim", "psnr", "lpips",
    "rdlv", "rdlv_max", "prior_ssim", "ssim_max", "visibly_leaked_fraction", "label_accuracy", "update_distance",
    "converged", "bn_residual", "leak_score", "iterations", "seconds", "device", "preset",
)  # fmt: skip
