"""Where gradinv keeps the assets it builds offline (converted LPIPS weights, the sample data set).

By default they live inside the active environment (``<sys.prefix>/share/gradinv``), so the `.venv/`
that the README's commands create carries them, and every process started from that environment
(the NVFlare simulator's workers, POC daemons) finds the same files. ``GRADINV_HOME`` overrides it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def gradinv_home() -> Path:
    """Root folder of gradinv's built assets."""
    return Path(os.environ.get("GRADINV_HOME") or Path(sys.prefix) / "share" / "gradinv")


def weights_dir() -> Path:
    """Folder of converted model weights (LPIPS backbone)."""
    return gradinv_home() / "weights"


def sample_data_dir() -> Path:
    """Folder of the bundled sample data set built by ``gradinv data build``."""
    return gradinv_home() / "data" / "sample"
