"""load_image / load_images: formats, DICOM handling, resizing, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradinv.data import load_image, load_images
from gradinv.errors import DataError

from .data_helpers import gradient_image, write_dicom, write_png


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


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (no pixel data): what a decompression bomb looks like."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk
                     + struct.pack(">I", zlib.crc32(chunk)) + b"\0\0\0\0IEND\xaeB`\x82")
    return path


def test_an_image_over_the_pixel_limit_is_named_with_the_limit(tmp_path: Path) -> None:
    from gradinv.data.images import max_image_pixels

    bomb = _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DataError, match=rf"bomb.png: .*too large: 10,000,000,000 pixels, over the limit of "
                                        rf"{max_image_pixels():,} pixels"):
        load_image(bomb, 16)


def test_large_images_under_the_limit_load_without_warnings_and_dicom_has_the_same_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # limit 2000 px: PIL warns above 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(write_png(tmp_path / "large.png", size=40), 8).shape == (8, 8)  # 1600 px
    with pytest.raises(DataError, match="huge.png: .*too large: 2,500 pixels, over the limit of 2,000"):
        load_image(write_png(tmp_path / "huge.png", size=50), 8)
    with pytest.raises(DataError, match="huge.dcm: .*too large: 2,500 pixels"):
        load_image(write_dicom(tmp_path / "huge.dcm", np.zeros((50, 50), dtype=np.uint16)), 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_by_name(tmp_path: Path, bad: float) -> None:
    pixels = gradient_image(16).astype(np.float32) / 255.0 * 3.0  # float TIFF outside [0, 1]: min-max scaled
    pixels[4, 4] = bad
    Image.fromarray(pixels, mode="F").save(tmp_path / "float.tif")
    with pytest.raises(DataError, match="float.tif: .*NaN or infinite pixel values"):
        load_image(tmp_path / "float.tif", 8)
    pixels[4, 4] = 0.5
    Image.fromarray(pixels, mode="F").save(tmp_path / "finite.tif")
    assert np.isfinite(load_image(tmp_path / "finite.tif", 8)).all()


def test_a_dicom_rescale_to_infinity_is_refused_without_warnings(tmp_path: Path) -> None:
    import warnings

    path = write_dicom(tmp_path / "slope.dcm", np.full((16, 16), 60000, dtype=np.uint16), slope=1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="slope.dcm: .*NaN or infinite pixel values"):
            load_image(path, 8)


def test_float_dicom_pixel_data_loads(tmp_path: Path) -> None:
    import pydicom

    path = write_dicom(tmp_path / "float.dcm", np.zeros((16, 16), dtype=np.uint16))
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.BitsAllocated = 32
    del dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation, dataset.RescaleSlope, dataset.RescaleIntercept
    dataset.FloatPixelData = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1)).tobytes()
    dataset.save_as(path)
    image = load_image(path, 8)
    assert image[:, -1].mean() > 0.9 and image[:, 0].mean() < 0.1


def test_dicom_conversion_errors_name_the_file(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "palette.dcm", np.zeros((8, 8), dtype=np.uint16), photometric="PALETTE COLOR")
    with pytest.raises(DataError, match="palette.dcm: not a readable image .*Palette Color Lookup Table"):
        load_image(path, 8)


def test_the_decoder_plugin_hint_only_for_compressed_dicom(tmp_path: Path) -> None:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    short = write_dicom(tmp_path / "short.dcm", np.zeros((16, 16), dtype=np.uint16))
    dataset = pydicom.dcmread(short)
    dataset.PixelData = dataset.PixelData[:100]
    dataset.save_as(short)
    with pytest.raises(DataError, match="short.dcm: .*cannot be decoded") as uncompressed:
        load_image(short, 8)
    assert "decoder plugin" not in str(uncompressed.value)

    dataset = pydicom.dcmread(write_dicom(tmp_path / "jpegls.dcm", np.zeros((16, 16), dtype=np.uint16)))
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"not a JPEG-LS stream"])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(tmp_path / "jpegls.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match="(?s)jpegls.dcm: .*compressed transfer syntax needs a decoder plugin"):
        load_image(tmp_path / "jpegls.dcm", 8)


@pytest.mark.parametrize("content", [b"", b"hello, this is a text file\n"])
def test_a_dcm_file_that_is_not_dicom_says_so(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "a.dcm").write_bytes(content)
    with pytest.raises(DataError, match="a.dcm: not a readable image .not a DICOM file"):
        load_image(tmp_path / "a.dcm", 8)


def test_a_folder_given_as_an_image_says_it_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder, not an image file"):
        load_image(tmp_path, 8)


def test_check_readable_names_every_unreadable_file(tmp_path: Path) -> None:
    from gradinv.data.images import check_readable

    good = write_png(tmp_path / "good.png")
    (tmp_path / "bad1.png").write_text("text")
    (tmp_path / "bad2.png").write_text("text")
    check_readable([good])
    with pytest.raises(DataError, match="bad1.png: not a readable image"):
        check_readable([good, tmp_path / "bad1.png"])
    with pytest.raises(DataError, match=r"2 of 3 images cannot be read\. The first: .*bad1.png.* "
                                        r"The others: .*bad2.png"):
        check_readable([good, tmp_path / "bad1.png", tmp_path / "bad2.png"])


def test_a_file_without_read_permission_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradinv.data import images as images_module

    path = write_png(tmp_path / "private.png")

    def refuse(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(images_module, "open", refuse, raising=False)  # as for a file mode 000 (root ignores chmod)
    with pytest.raises(DataError, match=r"private.png: cannot be read \(Permission denied\); check its permissions"):
        load_image(path, 8)
