"""load_image / load_images with ``channels=3`` (RGB) and non-square (height, width) resolutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from gradinv.data import load_image, load_images, read_image_unit
from gradinv.errors import DataError

from .data_helpers import gradient_image, write_dicom, write_png


@pytest.fixture
def astronaut_png(tmp_path: Path) -> Path:
    """A real colour photograph (scikit-image's astronaut, 512 x 512 RGB) cut to 64 x 96 (H x W)."""
    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[100:164, 200:296]).save(path)
    return path


def _write_rgb_dicom(path: Path, rgb: np.ndarray) -> Path:
    """An uncompressed 8-bit RGB DICOM (secondary capture, interleaved samples) of an (H, W, 3) uint8 array."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = rgb.shape[:2]
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
    dataset.PhotometricInterpretation = "RGB"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_rgb_png_keeps_its_colours_in_channel_order(astronaut_png: Path) -> None:
    rgb = np.asarray(Image.open(astronaut_png), dtype=np.float64) / 255.0
    image = load_image(astronaut_png, (32, 48), channels=3)
    assert image.shape == (3, 32, 48) and image.dtype == np.float32
    # same aspect ratio, half the size: no crop, 2 x 2 area averages of each channel in R, G, B order
    expected = rgb.reshape(32, 2, 48, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert not np.allclose(image[0], image[2], atol=0.05)  # a colour photograph, not grey


def test_primary_colours_land_in_their_channel(tmp_path: Path) -> None:
    for index, name in enumerate(("red", "green", "blue")):
        pixels = np.zeros((8, 8, 3), dtype=np.uint8)
        pixels[..., index] = 255
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        image = load_image(tmp_path / f"{name}.png", 8, channels=3)
        np.testing.assert_array_equal(image.mean(axis=(1, 2)), np.eye(3)[index])


def test_rgb_luma_is_what_grayscale_reads(astronaut_png: Path) -> None:
    colour = load_image(astronaut_png, 24, channels=3).astype(np.float64)
    gray = load_image(astronaut_png, 24)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    np.testing.assert_allclose(gray, luma, atol=2.5 / 255)  # PIL rounds its luma to 8 bits


def test_grayscale_files_are_repeated_to_three_channels(tmp_path: Path) -> None:
    png = write_png(tmp_path / "gray.png", size=32)
    dicom = write_dicom(tmp_path / "gray.dcm", np.tile(np.arange(32, dtype=np.uint16) * 50, (32, 1)))
    sixteen = tmp_path / "gray16.png"
    Image.fromarray(gradient_image(32).astype(np.uint16) * 257).save(sixteen)
    for path in (png, dicom, sixteen):
        gray = load_image(path, 16)
        colour = load_image(path, 16, channels=3)
        assert colour.shape == (3, 16, 16)
        for channel in colour:
            np.testing.assert_array_equal(channel, gray)


def test_transparent_pixels_read_black_in_colour(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[..., 0] = 255  # red, opaque on the left half only
    pixels[:, :4, 3] = 255
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "half.png")
    image = read_image_unit(tmp_path / "half.png", channels=3)
    np.testing.assert_array_equal(image[0, :, :4], 1.0)
    np.testing.assert_array_equal(image[:, :, 4:], 0.0)


def test_colour_dicom_reads_as_rgb_without_a_window(tmp_path: Path) -> None:
    rgb = data.chelsea()[:48, :64]
    path = _write_rgb_dicom(tmp_path / "cat.dcm", rgb)
    image = load_image(path, (48, 64), channels=3)
    np.testing.assert_allclose(image, rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    gray = load_image(path, (48, 64))
    assert gray.shape == (48, 64) and gray.min() == 0.0 and gray.max() == 1.0  # luma, windowed as before


def test_palette_colour_dicom_reads_as_rgb() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("OBXXXX1A.dcm", download=False)  # PALETTE COLOR ultrasound, 600 x 800
    if path is None:
        pytest.skip("pydicom's palette-colour test file is not installed")
    image = load_image(path, (30, 40), channels=3)
    assert image.shape == (3, 30, 40) and 0.0 <= image.min() and image.max() <= 1.0
    assert np.abs(image[0] - image[2]).max() > 0.1  # the palette maps to colours, not only greys


def test_non_square_resolution_crops_to_the_aspect_ratio(tmp_path: Path) -> None:
    square = np.zeros((40, 40), dtype=np.uint8)
    square[10:30, :] = 255  # a white horizontal band: exactly the centre crop of aspect 2:1
    Image.fromarray(square).save(tmp_path / "band.png")
    wide = load_image(tmp_path / "band.png", (10, 20))
    assert wide.shape == (10, 20) and wide.min() == pytest.approx(1.0)
    tall = load_image(tmp_path / "band.png", (20, 10))
    assert tall.shape == (20, 10) and tall[0].max() == 0.0 and tall[10].min() == pytest.approx(1.0)


def test_one_side_and_a_square_pair_are_the_same(tmp_path: Path) -> None:
    wide = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (20, 1))
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(load_image(tmp_path / "wide.png", 8), load_image(tmp_path / "wide.png", (8, 8)))


def test_load_images_stacks_channels_first(tmp_path: Path, astronaut_png: Path) -> None:
    entries = [{"image": str(astronaut_png), "label": 1}, {"image": str(write_png(tmp_path / "g.png")), "label": 0}]
    images, labels = load_images(entries, (16, 24), channels=3)
    assert images.shape == (2, 3, 16, 24) and images.dtype == torch.float32
    assert labels.tolist() == [1, 0]
    gray, _ = load_images(entries, (16, 24))
    assert gray.shape == (2, 1, 16, 24)


@pytest.mark.parametrize("resolution", [0, (8, 0), (8,), (8, 8, 8), "64", (8.0, 8), True])
def test_bad_resolutions_are_refused(tmp_path: Path, resolution) -> None:
    with pytest.raises(ValueError, match="resolution must be a positive number of pixels"):
        load_image(write_png(tmp_path / "a.png"), resolution)


@pytest.mark.parametrize("channels", [0, 2, 4, True])
def test_bad_channel_counts_are_refused(tmp_path: Path, channels) -> None:
    entries = [{"image": str(write_png(tmp_path / "a.png")), "label": 0}]
    with pytest.raises(ValueError, match="channels must be 1 .grayscale. or 3 .RGB."):
        load_images(entries, 8, channels=channels)


def test_colour_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothere.png: image file not found"):
        load_image(tmp_path / "nothere.png", (8, 12), channels=3)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="fake.png: not a readable image"):
        load_images([{"image": str(fake), "label": 0}], 8, channels=3)
