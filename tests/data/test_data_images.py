"""load_image / load_images: formats, DICOM handling, resizing, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import gradient_image, write_dicom, write_png
from PIL import Image

from gradinv.data import load_image, load_images
from gradinv.errors import DataError


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_raster_formats_load_as_unit_grayscale(tmp_path: Path, suffix: str) -> None:
    pixels = gradient_image(40)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).save(path)
    image = load_image(path, 20)
    assert image.shape == (20, 20) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    # the horizontal ramp survives: the right edge is brighter than the left
    assert image[:, -3:].mean() > image[:, :3].mean() + 0.3


def test_png_values_and_area_resize(tmp_path: Path) -> None:
    pixels = gradient_image(32)
    path = write_png(tmp_path / "a.png")
    image = load_image(path, 16)
    expected = pixels.astype(np.float64).reshape(16, 2, 16, 2).mean(axis=(1, 3)) / 255.0
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert load_image(path, 32).max() == pytest.approx(pixels.max() / 255.0)


def test_centre_square_crop_of_a_wide_image(tmp_path: Path) -> None:
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 20:40] = 255  # only the centre square is white
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "wide.png", 10).min() == pytest.approx(1.0)


def test_sixteen_bit_and_rgb_png(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    assert load_image(tmp_path / "white16.png", 8).min() == pytest.approx(1.0)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "green.png")
    assert load_image(tmp_path / "green.png", 8).mean() == pytest.approx(0.587, abs=0.01)


def test_upsampling_stays_in_range(tmp_path: Path) -> None:
    image = load_image(write_png(tmp_path / "small.png", size=8), 64)
    assert image.shape == (64, 64) and 0.0 <= image.min() and image.max() <= 1.0


def test_dicom_window_and_monochrome1_inversion(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 100, (64, 1))
    normal = load_image(write_dicom(tmp_path / "m2.dcm", ramp), 32)
    inverted = load_image(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"), 32)
    assert normal[:, 0].mean() < 0.05 and normal[:, -1].mean() > 0.95  # percentile window spans [0, 1]
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)


def test_dicom_rescale_slope_is_applied(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 100, (64, 1))
    positive = load_image(write_dicom(tmp_path / "pos.dcm", ramp), 16)
    negative = load_image(write_dicom(tmp_path / "neg.dcm", ramp, slope=-1.0, intercept=5000.0), 16)
    np.testing.assert_allclose(negative, 1.0 - positive, atol=1e-6)


def test_multiframe_dicom_uses_the_middle_frame(tmp_path: Path) -> None:
    horizontal = np.tile(np.arange(32, dtype=np.uint16) * 50, (32, 1))
    frames = np.stack([horizontal, horizontal.T, horizontal])  # the middle frame ramps top to bottom
    image = load_image(write_dicom(tmp_path / "multi.dcm", frames), 16)
    assert image[-2:].mean() > image[:2].mean() + 0.5
    assert abs(image[:, -2:].mean() - image[:, :2].mean()) < 0.05


def test_extensionless_dicom_is_recognised(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", np.arange(256, dtype=np.uint16).reshape(16, 16))
    assert load_image(path, 8).shape == (8, 8)


def test_non_image_file_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a PNG")
    with pytest.raises(DataError, match="notes.png"):
        load_image(fake, 16)


def test_damaged_dicom_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "broken.dcm"
    fake.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(DataError, match="broken.dcm"):
        load_image(fake, 16)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothere.png"):
        load_image(tmp_path / "nothere.png", 16)


def test_load_images_returns_tensors(tmp_path: Path) -> None:
    entries = [{"image": str(write_png(tmp_path / f"{index}.png", seed=index)), "label": index % 2}
               for index in range(3)]
    images, labels = load_images(entries, 12)
    assert images.shape == (3, 1, 12, 12) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1, 0] and labels.dtype == torch.long


def test_load_images_rejects_an_empty_list() -> None:
    with pytest.raises(DataError, match="empty"):
        load_images([], 8)
