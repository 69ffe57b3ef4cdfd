"""RGB and non-square images through the filter's artifact writer, the grid picture and the HTML report."""

from __future__ import annotations

import base64
import io
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.transform import resize

from gradinv.fl.artifacts import RECONSTRUCTION_NPZ, ArtifactWriter, image_grid
from gradinv.report.artifacts import RECONSTRUCTION_PNG
from gradinv.report.run_report import build_report

HEIGHT, WIDTH = 24, 40  # not square on purpose


def _photos() -> np.ndarray:
    """Two real colour photographs (astronaut, chelsea), float32 (2, 3, 24, 40) in [0, 1]."""
    pictures = [resize(picture / 255.0, (HEIGHT, WIDTH), anti_aliasing=True) for picture in
                (data.astronaut(), data.chelsea())]
    return np.stack(pictures).transpose(0, 3, 1, 2).astype(np.float32)


def _decode(png: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(png))
    picture.load()
    return picture


def test_grey_grid_stays_a_greyscale_png():
    images = np.random.default_rng(0).random((3, HEIGHT, WIDTH))
    for rows in ([images, images[:2]], [images[:, None], images[:2, None]]):  # (N, H, W) and (N, 1, H, W)
        picture = _decode(image_grid(rows, scale=1, gap=2))
        assert picture.mode == "L" and picture.size == (3 * WIDTH + 4, 2 * HEIGHT + 2)
        pixels = np.asarray(picture)
        np.testing.assert_array_equal(pixels[:HEIGHT, WIDTH + 2 : 2 * WIDTH + 2], np.round(images[1] * 255))
        assert (pixels[HEIGHT:HEIGHT + 2] == 255).all() and (pixels[HEIGHT + 2:, 2 * WIDTH + 4:] == 255).all()


def test_colour_grid_is_rgb_and_repeats_grey_rows():
    photos = _photos()
    grey = photos.mean(axis=1)
    picture = _decode(image_grid([photos, grey], scale=2, gap=2))
    assert picture.mode == "RGB" and picture.size == (2 * (2 * WIDTH + 2), 2 * (2 * HEIGHT + 2))
    pixels = np.asarray(picture)[::2, ::2]  # undo the 2x nearest-neighbour scaling
    top_left = pixels[:HEIGHT, :WIDTH].transpose(2, 0, 1)
    np.testing.assert_array_equal(top_left, np.round(photos[0] * 255))  # R, G, B in order
    bottom_right = pixels[HEIGHT + 2 :, WIDTH + 2 :]
    for channel in range(3):
        np.testing.assert_array_equal(bottom_right[..., channel], np.round(grey[1] * 255))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([np.zeros((2, 8, 8)), np.zeros((2, 8, 9))], "one height x width; got 8x8, 8x9"),
        ([np.zeros((2, 2, 8, 8))], r"C = 1 or 3; got shape \(2, 2, 8, 8\)"),
        ([np.zeros((2, 8, 8, 3))], r"C = 1 or 3; got shape \(2, 8, 8, 3\)"),
    ],
)
def test_grid_refuses_what_it_cannot_draw(rows, message):
    with pytest.raises(ValueError, match=message):
        image_grid(rows)


def _write_run(gradinv_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """One RGB site and one greyscale site, written by the filter's own writer; returns the RGB arrays."""
    photos = _photos()
    reconstructions = photos[::-1] + 0.3 * np.random.default_rng(1).standard_normal(photos.shape)  # overshoots
    writer = ArtifactWriter(gradinv_dir)
    writer.write_settings({"mode": "audit", "prior": "mid-grey"})
    grey = photos.mean(axis=1)
    for site, originals, recon, prior in (
        ("site-rgb", photos, reconstructions, np.full((3, HEIGHT, WIDTH), 0.5)),
        ("site-grey", grey, grey[::-1], np.full((HEIGHT, WIDTH), 0.5)),
    ):
        row = {"round": 0, "site": site, "num_images": 2, "status": "ok", "decision": "pass", "ssim": 0.4,
               "ssim_max": 0.6, "rdlv": 0.2, "rdlv_max": 0.5, "visibly_leaked_fraction": 0.5}
        writer.write_site_round(0, site, {**row, "per_image": []}, recon, originals, prior)
        writer.append_metrics_row(row)
    return photos, reconstructions


def test_writer_stores_channels_first_pixel_arrays(tmp_path: Path):
    gradinv_dir = tmp_path / "gradinv"
    photos, reconstructions = _write_run(gradinv_dir)
    folder = gradinv_dir / "round_000" / "site-rgb"
    for name in (RECONSTRUCTION_NPZ, RECONSTRUCTION_PNG):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    with np.load(folder / RECONSTRUCTION_NPZ) as arrays:
        stored = arrays["reconstructions"]
        assert stored.shape == (2, 3, HEIGHT, WIDTH) and stored.dtype == np.float32
        np.testing.assert_allclose(arrays["reconstructions"], np.clip(reconstructions, 0, 1), atol=1e-6)
        np.testing.assert_array_equal(arrays["originals"], photos)
        assert arrays["prior"].shape == (3, HEIGHT, WIDTH)
    with np.load(gradinv_dir / "round_000" / "site-grey" / RECONSTRUCTION_NPZ) as arrays:
        assert arrays["reconstructions"].shape == (2, 1, HEIGHT, WIDTH) and arrays["prior"].shape == (1, HEIGHT, WIDTH)
    assert _decode((folder / RECONSTRUCTION_PNG).read_bytes()).mode == "RGB"


def _report_grids(html: str) -> dict[str, Image.Image]:
    """The reconstruction grids the report embeds, by site."""
    grids = {}
    for alt, payload in re.findall(r'<img class="grid" alt="reconstructions, (\S+) round 0"[^>]*'
                                   r'src="data:image/png;base64,([^"]+)"', html):
        grids[alt] = _decode(base64.b64decode(payload))
    return grids


def test_report_shows_rgb_sites_in_colour(tmp_path: Path):
    gradinv_dir = tmp_path / "run" / "gradinv"
    photos, _ = _write_run(gradinv_dir)
    report = build_report(tmp_path / "run")
    grids = _report_grids(report.read_text())
    assert set(grids) == {"site-rgb", "site-grey"}
    colour, grey = grids["site-rgb"], grids["site-grey"]
    assert colour.mode == "RGB" and grey.mode == "L"
    assert colour.size == grey.size == (2 * (2 * WIDTH + 2), 2 * (2 * HEIGHT + 2))
    shown = np.asarray(colour)[::2, ::2][:HEIGHT, :WIDTH].transpose(2, 0, 1)
    np.testing.assert_array_equal(shown, np.round(photos[0] * 255))
