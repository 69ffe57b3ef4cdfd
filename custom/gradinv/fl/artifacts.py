"""Writes the filter's artifacts under ``<run_dir>/gradinv/`` (the layout is read by :mod:`gradinv.report.artifacts`).

Reconstructions are potential patient data: the folder is 0700 and every file 0600, whatever the umask,
and image saving can be switched off. Site names come from the network; they are sanitised before they
become path parts.

Images are greyscale or RGB in [0, 1] pixel space, channels first. ``reconstruction.npz`` stores them as
float32 ``reconstructions`` and ``originals`` of shape (N, C, H, W) and ``prior`` (C, H, W), or (N, C, H, W)
with each reconstruction's prior when the prior is per class, C = 1 or 3;
``reconstruction.png`` is greyscale, or RGB when the images are colour.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gradinv.artifact_layout import (
    GLOBAL_METRICS_CSV,
    METRICS_COLUMNS,
    METRICS_CSV,
    RECONSTRUCTION_NPZ,
    RECONSTRUCTION_PNG,
    SETTINGS_JSON,
    SITE_ROUND_METRICS_JSON,
)
from gradinv.private_files import write_private_bytes

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_path_part(name: object, fallback: str = "unknown") -> str:
    """A file-name-safe version of ``name``: no separators, no leading dots, at most 64 characters."""
    cleaned = _UNSAFE.sub("_", str(name)).lstrip(".")[:64]
    return cleaned or fallback


def pixel_stack(images: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) or (N, C, H, W), C in {1, 3} -> float32 (N, C, H, W) clipped to [0, 1] pixel space."""
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim == 3:
        stack = stack[:, None]
    if stack.ndim != 4 or stack.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be images (N, H, W) or (N, C, H, W) with C = 1 or 3; got shape {stack.shape}")
    return np.clip(stack, 0.0, 1.0)


def image_grid(rows: Sequence[np.ndarray], scale: int = 2, gap: int = 2) -> bytes:
    """PNG bytes of a grid: one row per (N, H, W) or (N, C, H, W) array (C = 1 or 3) of images in [0, 1].

    The PNG is RGB when any row is colour (greyscale rows are repeated to three channels), greyscale otherwise.
    Every image must have the same height and width; rows may hold different numbers of images.
    """
    stacks = [pixel_stack(row, f"grid row {index}") for index, row in enumerate(rows)]
    height, width = stacks[0].shape[-2:]
    if any(stack.shape[-2:] != (height, width) for stack in stacks):
        sizes = ", ".join(f"{stack.shape[-2]}x{stack.shape[-1]}" for stack in stacks)
        raise ValueError(f"grid rows must hold images of one height x width; got {sizes}")
    channels = max(stack.shape[1] for stack in stacks)
    count = max(len(stack) for stack in stacks)
    canvas = np.ones((channels, (height + gap) * len(stacks) - gap, (width + gap) * count - gap), dtype=np.float32)
    for r, stack in enumerate(stacks):
        for c, image in enumerate(stack):
            top, left = r * (height + gap), c * (width + gap)
            canvas[:, top : top + height, left : left + width] = image  # a greyscale image fills every channel
    pixels = (canvas * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[0], mode="L") if channels == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # before float/int: CSV readers in other tools expect JSON-style booleans
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    return str(value)


class ArtifactWriter:
    """Thread-safe writer of one run's ``gradinv/`` folder."""

    def __init__(self, out_dir: str | os.PathLike, save_images: bool = True):
        self.out_dir = Path(out_dir)
        self.save_images = save_images
        self._lock = threading.Lock()
        self.out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.out_dir, 0o700)

    def site_round_dir(self, round_num: int, site: str) -> Path:
        return self.out_dir / f"round_{int(round_num):03d}" / safe_path_part(site)

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        write_private_bytes(self.out_dir / SETTINGS_JSON, json.dumps(settings, indent=2, default=str).encode())

    def append_metrics_row(self, row: Mapping[str, Any]) -> None:
        """Append one round x client row; a metric that is absent or None stays an empty cell."""
        path = self.out_dir / METRICS_CSV
        with self._lock:
            new = not path.exists()
            if new:
                write_private_bytes(path, b"")
            with open(path, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(METRICS_COLUMNS)
                writer.writerow([_cell(row.get(column)) for column in METRICS_COLUMNS])

    def write_global_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["round", "test_accuracy"])
        for row in rows:
            writer.writerow([_cell(row["round"]), _cell(row["test_accuracy"])])
        write_private_bytes(self.out_dir / GLOBAL_METRICS_CSV, buffer.getvalue().encode())

    def write_site_round(
        self,
        round_num: int,
        site: str,
        metrics: Mapping[str, Any],
        reconstructions: np.ndarray | None = None,
        originals: np.ndarray | None = None,
        prior: np.ndarray | None = None,
    ) -> Path:
        """``metrics.json`` always; the grid PNG and raw arrays only when image saving is on.

        ``reconstructions`` and ``originals`` are (N, H, W) or (N, C, H, W) with C = 1 or 3 in [0, 1] pixel
        space (reconstructions are clipped to it), ``prior`` is (H, W) or (C, H, W), or (N, C, H, W) with the
        prior of each reconstruction (a per-class prior); they are stored as (N, C, H, W) and (C, H, W) or
        (N, C, H, W) (see the module docstring).
        """
        folder = self.site_round_dir(round_num, site)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        details = json.dumps(metrics, indent=2, default=_json_default).encode()
        write_private_bytes(folder / SITE_ROUND_METRICS_JSON, details)
        if self.save_images and reconstructions is not None:
            arrays = {"reconstructions": pixel_stack(reconstructions, "reconstructions")}
            if originals is not None:
                arrays["originals"] = pixel_stack(originals, "originals")
            if prior is not None and np.ndim(prior) == 4:  # one per reconstruction (a per-class prior)
                arrays["prior"] = pixel_stack(prior, "prior")
            elif prior is not None:  # (H, W) or (C, H, W): a stack of one
                arrays["prior"] = pixel_stack(np.asarray(prior)[None], "prior")[0]
            rows = [arrays[key] for key in ("originals", "reconstructions") if key in arrays]
            write_private_bytes(folder / RECONSTRUCTION_PNG, image_grid(rows))
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            write_private_bytes(folder / RECONSTRUCTION_NPZ, buffer.getvalue())
        return folder


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
