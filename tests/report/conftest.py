"""A synthetic ``gradinv/`` artifact folder as the server filter writes it (2 sites × 2 rounds).

site-1 round 1 is blocked; site-2 round 0's attack did not converge (update distance 0.64); site-2 round 1 failed
(status error, every metric cell empty, no images).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradinv.report.artifacts import METRICS_COLUMNS

SITES = ("site-1", "site-2")
ROUNDS = (0, 1)
TILE = 16


def _grid_png(path: Path, num_images: int, rng: np.random.Generator) -> None:
    """Top row originals, bottom row reconstructions, 2 px gaps, like the filter's grid."""
    pad = 2
    grid = np.zeros((2 * TILE + 3 * pad, num_images * (TILE + pad) + pad), dtype=np.uint8)
    for i in range(num_images):
        original = rng.integers(0, 256, (TILE, TILE), dtype=np.uint8)
        noisy = np.clip(original + rng.normal(0, 40, original.shape), 0, 255).astype(np.uint8)
        x = pad + i * (TILE + pad)
        grid[pad:pad + TILE, x:x + TILE] = original
        grid[2 * pad + TILE:2 * pad + 2 * TILE, x:x + TILE] = noisy
    Image.fromarray(grid).save(path)
    os.chmod(path, 0o600)


PRIOR_SSIM = 0.3


def _per_image_ssims(round_number: int, num_images: int) -> list[float]:
    return [round(0.3 + 0.2 * round_number + 0.15 * i, 3) for i in range(num_images)]


def _row(site: str, round_number: int, num_images: int) -> dict[str, object]:
    ssims = _per_image_ssims(round_number, num_images)
    rdlvs = [(s - PRIOR_SSIM) / PRIOR_SSIM for s in ssims]
    return {
        "round": round_number, "site": site, "num_images": num_images, "num_steps": 1, "status": "ok",
        "decision": "pass", "reason": "", "ssim": sum(ssims) / num_images, "psnr": 14.5, "lpips": 0.41,
        "rdlv": sum(rdlvs) / num_images, "rdlv_max": max(rdlvs), "ssim_max": max(ssims),
        "visibly_leaked_fraction": sum(s >= 0.5 for s in ssims) / num_images, "label_accuracy": 1.0,
        "update_distance": 0.0123, "converged": True, "bn_residual": 2.5e-5, "leak_score": 0.6, "iterations": 300,
        "seconds": 41.2, "device": "cpu", "preset": "cpu-fast",
    }  # fmt: skip


def write_gradinv_dir(gradinv_dir: Path) -> Path:
    """Fill ``gradinv_dir`` with the synthetic artifacts; returns it."""
    rng = np.random.default_rng(0)
    gradinv_dir.mkdir(parents=True)
    rows = []
    for round_number in ROUNDS:
        for site_index, site in enumerate(SITES):
            num_images = site_index + 1
            row = _row(site, round_number, num_images)
            if (site, round_number) == ("site-1", 1):
                row.update(decision="block", reason="ssim_max 0.5 >= block threshold 0.5")
            if (site, round_number) == ("site-2", 0):
                row.update(update_distance=0.64, converged=False)
            failed = (site, round_number) == ("site-2", 1)
            if failed:
                metric_columns = METRICS_COLUMNS[METRICS_COLUMNS.index("ssim"):METRICS_COLUMNS.index("iterations")]
                row.update({column: "" for column in metric_columns})
                row.update(status="error", reason="RuntimeError: inversion diverged", iterations="", seconds=0.4)
            rows.append(row)
            folder = gradinv_dir / f"round_{round_number:03d}" / site
            folder.mkdir(parents=True)
            per_image = [
                {"index": i, "reconstruction_index": i, "ssim": ssim, "psnr": 14.5, "lpips": 0.41,
                 "rdlv": (ssim - PRIOR_SSIM) / PRIOR_SSIM, "label": i % 2, "recovered_label": i % 2}
                for i, ssim in enumerate(_per_image_ssims(round_number, num_images))
            ]  # fmt: skip
            details = {**row, "per_image": [] if failed else per_image, "prior_ssim": None if failed else PRIOR_SSIM,
                       "recovered_labels": [] if failed else [i % 2 for i in range(num_images)],
                       "true_labels": [i % 2 for i in range(num_images)]}
            (folder / "metrics.json").write_text(json.dumps(details))
            if not failed:
                _grid_png(folder / "reconstruction.png", num_images, rng)
    with open(gradinv_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    settings = {
        "gradinv_version": "0.1.0", "prior": "mean of 10 held-out chest X-rays (64 px)", "mode": "gate",
        "filter": {"mode": "gate", "preset": "cpu-fast", "block_threshold": 0.5, "prior": "/data/prior.png"},
        "preset": "cpu-fast", "device": "cpu", "ground_truth": True,
    }  # fmt: skip
    (gradinv_dir / "settings.json").write_text(json.dumps(settings))
    (gradinv_dir / "global_metrics.csv").write_text("round,test_accuracy\n0,0.61\n1,0.74\n")
    return gradinv_dir


@pytest.fixture
def make_gradinv_dir() -> Callable[[Path], Path]:
    """Writes the synthetic artifacts into the folder it is given (which must not exist yet)."""
    return write_gradinv_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A simulator-like run dir: ``<tmp>/simulate_job/{gradinv/, app_server/, log.txt}``."""
    run = tmp_path / "simulate_job"
    write_gradinv_dir(run / "gradinv")
    (run / "app_server").mkdir()
    (run / "log.txt").write_text("server log\n")
    return run
