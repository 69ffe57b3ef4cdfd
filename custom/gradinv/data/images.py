"""Reading medical and ordinary image files into grayscale or RGB float arrays in [0, 1].

One code path serves every consumer: the sample-set builder, the FL client's data loading and the
attack CLI all call :func:`load_image` (or :func:`read_image_unit` when they crop themselves), so a
DICOM is windowed the same way wherever it is read.

Conventions:

* Channels: ``channels=1`` (the default) reads grayscale, ``channels=3`` reads RGB. Arrays are
  channels-first, as torch expects: (H, W) for grayscale, (3, H, W) for RGB; :func:`load_images` stacks
  them as (N, C, H, W). With ``channels=3`` a grayscale file is repeated to three equal channels.
* Ordinary images (PNG/JPEG/BMP/TIFF): for grayscale, colour is converted to luma (ITU-R 601-2); integer
  pixels are divided by their type's maximum (so 8- and 16-bit files keep their own contrast); float
  TIFFs already in [0, 1] are kept, others are min-max scaled. Transparent pixels read as black.
* DICOM: rescale slope/intercept (modality LUT) is applied, the result is windowed to the 0.5th..99.5th
  percentile (robust to a few saturated pixels and to large black borders), and MONOCHROME1 is
  inverted so that dense tissue is bright, as on a radiologist's screen. Multi-frame: the middle frame.
  Colour DICOM (RGB/YBR/palette) is converted to windowed luma for grayscale; for RGB its colours are
  divided by the largest value of their bit depth, without a window, as a viewer shows a colour image.
* Resizing to H x W (a square R x R when the resolution is one number): centre crop to the target's
  aspect ratio, then area averaging (PIL ``BOX``) when shrinking, which is anti-aliased, and bilinear
  interpolation when enlarging (no overshoot outside [0, 1]), channel by channel.
* Refused, with a :class:`DataError` naming the file: images over :func:`max_image_pixels` pixels (PIL's
  decompression-bomb limit) and NaN or infinite pixel values (float TIFF/DICOM, extreme DICOM rescale
  slopes). A file named ``DICOMDIR`` (a DICOM export's index, no pixels) is not an image.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from gradinv.errors import DataError

if TYPE_CHECKING:
    import torch

#: An image size: one number for a square, or (height, width).
Resolution = int | tuple[int, int]
#: The channel counts an image can be read with: grayscale or RGB.
CHANNEL_COUNTS = (1, 3)

#: File name suffixes (lower case) treated as images when a folder is listed.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES

#: Percentiles of the DICOM window mapped to 0 and 1.
DICOM_WINDOW_PERCENTILES = (0.5, 99.5)

_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
#: Where a DICOM file keeps its pixels: integer, float or double-float pixel data.
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: The index file of a DICOM export (media storage directory): skipped when a folder is listed.
DICOMDIR = "DICOMDIR"
_DECODER_HINT = ("; this compressed transfer syntax needs a decoder plugin (pylibjpeg or python-gdcm), "
                 "or convert the file to uncompressed DICOM or PNG")


class _BadPixels(ValueError):
    """Decoded pixel values gradinv cannot use (the reason is the message; the caller names the file)."""


def max_image_pixels() -> int | None:
    """The largest image read, in pixels: what PIL refuses as a decompression bomb (2 x ``Image.MAX_IMAGE_PIXELS``,
    about 179 million, e.g. 13,000 x 13,000), applied to DICOM too; None when PIL's limit is switched off."""
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None


def _too_large(pixels: int | str | None = None) -> str:
    size = f"{int(pixels):,} pixels, " if pixels else ""
    return f"too large: {size}over the limit of {max_image_pixels():,} pixels; downscale it first"


def _require_finite(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise _BadPixels("it contains NaN or infinite pixel values")
    return values


def has_dicom_magic(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def is_image_file(path: Path) -> bool:
    """True for files named like a supported image, or extensionless files that are DICOM.

    DICOM exports often have no suffix (``IM0001``), hence the magic check for those only: reading
    132 bytes of every file in a large folder would be slow and is unnecessary for named files. Their
    ``DICOMDIR`` is DICOM too, but an index of the export without pixels, so it is not an image.
    """
    if path.name.upper() == DICOMDIR:
        return False
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == "" and has_dicom_magic(path)


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path)


def _unreadable(path: Path, why: str) -> DataError:
    return DataError(
        f"{path}: not a readable image ({why}). Supported: PNG, JPEG, BMP, TIFF, DICOM; "
        "remove or replace this file, or leave it out of the folder/datalist."
    )


def window_unit(pixels: np.ndarray) -> np.ndarray:
    """Map the ``DICOM_WINDOW_PERCENTILES`` window of any (finite) array to [0, 1] (float32)."""
    pixels = _require_finite(pixels.astype(np.float64, copy=False))
    low, high = np.percentile(pixels, DICOM_WINDOW_PERCENTILES)
    if high <= low:  # a constant image: keep it flat instead of dividing by zero
        return np.zeros(pixels.shape, dtype=np.float32)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an (H, W, 3) array, the same weights PIL's ``convert("L")`` uses."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _with_channels(gray: np.ndarray, channels: int) -> np.ndarray:
    """A grayscale (H, W) array as itself (1 channel) or repeated to (3, H, W)."""
    return gray if channels == 1 else np.repeat(gray[None], channels, axis=0)


def _check_channels(channels: int) -> None:
    if isinstance(channels, bool) or channels not in CHANNEL_COUNTS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def _looks_like_dicom(dataset) -> bool:
    """``dcmread(force=True)`` parses anything; a real DICOM has file meta or at least one core attribute."""
    return bool(dataset.file_meta) or any(keyword in dataset for keyword in ("SOPClassUID", "Modality", "Rows"))


def _is_compressed(dataset) -> bool:
    syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None)
    try:
        return bool(syntax) and syntax.is_compressed
    except ValueError:  # not a transfer syntax UID at all
        return False


def _dicom_pixel_count(dataset) -> int | None:
    try:
        return int(dataset.Rows) * int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):  # missing or malformed: the decoder reports it
        return None


def _colour_unit(rgb: np.ndarray, bits: int | None, channels: int) -> np.ndarray:
    """A colour DICOM's (H, W, 3) pixels: windowed luma (H, W), or RGB (3, H, W) divided by ``2**bits - 1``."""
    if channels == 1:
        return window_unit(_luma(rgb.astype(np.float64)))
    if not bits or bits < 1:
        bits = np.iinfo(rgb.dtype).bits if rgb.dtype.kind in "iu" else 0
    if not bits:
        raise _BadPixels(f"colour pixels of type {rgb.dtype} have no bit depth to scale by")
    unit = np.clip(rgb.astype(np.float64) / (2.0**bits - 1.0), 0.0, 1.0)
    return np.ascontiguousarray(unit.transpose(2, 0, 1), dtype=np.float32)


def _dicom_to_unit(dataset, pixels: np.ndarray, channels: int) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_rescale

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples_per_pixel = int(dataset.get("SamplesPerPixel", 1))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2]

    if photometric == "PALETTE COLOR":  # the palette's own bit depth is its dtype's (8 or 16 bits)
        return _colour_unit(apply_color_lut(pixels, dataset), None, channels)
    if samples_per_pixel == 3:
        # pydicom converts YBR to RGB when decoding, so three samples are RGB here
        return _colour_unit(pixels, int(dataset.get("BitsStored", 0) or 0), channels)

    values = apply_rescale(pixels, dataset)
    unit = window_unit(values)
    if photometric == "MONOCHROME1":  # high values are dark on MONOCHROME1: invert for display
        unit = 1.0 - unit
    return _with_channels(unit, channels)


def read_dicom_unit(path: Path, channels: int = 1) -> np.ndarray:
    """Read a DICOM file's (middle) frame as float32 (H, W), or (3, H, W) for ``channels=3``, in [0, 1];
    see the module docstring."""
    import pydicom

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise _unreadable(path, f"DICOM header cannot be parsed: {exc}") from exc
    if not _looks_like_dicom(dataset):
        raise _unreadable(path, "not a DICOM file: no DICOM header found")
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise _unreadable(path, "DICOM file without pixel data")
    pixel_count, limit = _dicom_pixel_count(dataset), max_image_pixels()
    if pixel_count and limit and pixel_count > limit:
        raise _unreadable(path, _too_large(pixel_count))
    try:
        with warnings.catch_warnings():
            # pydicom warns about harmless header inconsistencies it corrects (e.g. pixel representation)
            warnings.simplefilter("ignore")
            pixels = dataset.pixel_array
    except Exception as exc:
        hint = _DECODER_HINT if _is_compressed(dataset) else ""
        raise _unreadable(path, f"DICOM pixel data cannot be decoded ({type(exc).__name__}: {exc}){hint}") from exc
    try:
        with np.errstate(all="ignore"):  # an overflowing rescale becomes inf, which _require_finite reports
            return _dicom_to_unit(dataset, pixels, channels)
    except _BadPixels as exc:
        raise _unreadable(path, str(exc)) from exc
    except Exception as exc:  # a malformed rescale, palette or frame attribute
        raise _unreadable(path, f"DICOM pixel values cannot be converted ({type(exc).__name__}: {exc})") from exc


def _wide_gray_to_unit(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grayscale PIL image as float32 (H, W) in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(image, dtype=np.float64) / 65535.0).astype(np.float32)
    values = _require_finite(np.asarray(image, dtype=np.float64))
    if image.mode == "F" and values.min() >= 0.0 and values.max() <= 1.0:
        return values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _raster_to_unit(image: Image.Image, channels: int) -> np.ndarray:
    """Convert a PIL image to float32 grayscale (H, W) or RGB (3, H, W) in [0, 1] (see the module docstring)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _with_channels(_wide_gray_to_unit(image), channels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)  # transparent pixels read as black
    if channels == 1:
        pixels = np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.float32)
        return pixels / 255.0
    pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)) / 255.0


def read_image_unit(path: str | Path, channels: int = 1) -> np.ndarray:
    """Read any supported image file at its own size as float32 in [0, 1]: grayscale (H, W), or RGB (3, H, W)
    for ``channels=3`` (a grayscale file repeated to three channels).

    Raises :class:`DataError` naming the file when it is missing, not an image, or cannot be decoded.
    """
    _check_channels(channels)
    path = Path(path)
    try:
        if path.is_dir():
            raise DataError(f"{path}: is a folder, not an image file; give the path of one image.")
        if not path.is_file():
            raise DataError(f"{path}: image file not found; check the path.")
        open(path, "rb").close()
    except OSError as exc:  # e.g. no permission to read the file or to enter its folder
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions.") from exc
    if _is_dicom(path):
        return read_dicom_unit(path, channels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # under the limit: an ordinary large image
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)
                if frames > 1:  # multi-page TIFF / animated image: same rule as multi-frame DICOM
                    image.seek(frames // 2)
                image.load()
                return _raster_to_unit(image, channels)
    except Image.DecompressionBombError as exc:  # PIL says "Image size (N pixels) exceeds limit of ..."
        size = re.search(r"\((\d+) pixels\)", str(exc))
        raise _unreadable(path, _too_large(size and size.group(1))) from exc
    except _BadPixels as exc:
        raise _unreadable(path, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise _unreadable(path, "unknown or damaged image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt files
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from exc


def check_readable(paths: Iterable[str | Path]) -> None:
    """Decode every image now, so that unreadable files are reported before any work starts and before
    anything is written: one :class:`DataError`, the first failure's message and the names of the others."""
    paths = list(paths)
    failures: list[tuple[Path, DataError]] = []
    for path in paths:
        try:
            read_image_unit(path)
        except DataError as exc:
            failures.append((Path(path), exc))
    failures.sort(key=lambda failure: str(failure[0]))
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        others = ", ".join(str(path) for path, _ in failures[1:6]) + (", ..." if len(failures) > 6 else "")
        raise DataError(f"{len(failures)} of {len(paths)} images cannot be read. The first: {failures[0][1]} "
                        f"The others: {others}.")


def _target_size(resolution: Resolution) -> tuple[int, int]:
    """(height, width) of a resolution given as one side or a pair; ValueError for anything else."""
    pair = (resolution, resolution) if isinstance(resolution, (int, np.integer)) else resolution
    problem = f"resolution must be a positive number of pixels or a (height, width) pair of them, got {resolution!r}"
    try:
        height, width = pair
    except (TypeError, ValueError):
        raise ValueError(problem) from None
    if any(isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1 for side in (height, width)):
        raise ValueError(problem)
    return int(height), int(width)


def centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred crop of an (..., H, W) array with the aspect ratio ``width / height``."""
    rows, columns = image.shape[-2:]
    if columns * height > rows * width:  # wider than the target: keep every row
        crop_rows, crop_columns = rows, max(1, round(rows * width / height))
    else:
        crop_rows, crop_columns = max(1, round(columns * height / width)), columns
    top, left = (rows - crop_rows) // 2, (columns - crop_columns) // 2
    return image[..., top : top + crop_rows, left : left + crop_columns]


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an (..., H, W) array."""
    return centre_crop(image, 1, 1)


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float32 (H, W) or (C, H, W) array to height x width, channel by channel: area averaging when
    shrinking, bilinear when enlarging."""
    if image.shape[-2:] == (height, width):
        return image.astype(np.float32, copy=False)
    if image.ndim == 3:
        return np.stack([resize_to(channel, height, width) for channel in image])
    shrinking = image.shape[0] > height or image.shape[1] > width
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize((width, height), method)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def resize_square(image: np.ndarray, resolution: int) -> np.ndarray:
    """Resize a square float32 array to resolution x resolution (area when shrinking, bilinear when enlarging)."""
    return resize_to(image, resolution, resolution)


def load_image(path: str | Path, resolution: Resolution, channels: int = 1) -> np.ndarray:
    """Load one image as float32 in [0, 1]: grayscale (H, W), or RGB (3, H, W) for ``channels=3``.

    ``resolution`` is one side (a square, centre-cropped) or a (height, width) pair (centre-cropped to its
    aspect ratio); then anti-aliased resize. PNG/JPEG/BMP/TIFF and DICOM are supported; a file that is
    missing or cannot be decoded raises :class:`DataError` naming it.
    """
    height, width = _target_size(resolution)
    return resize_to(centre_crop(read_image_unit(path, channels), height, width), height, width)


def load_images(
    entries: Sequence[Mapping], resolution: Resolution, channels: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load datalist entries (``{"image": path, "label": int}``) into tensors.

    Returns ``(images, labels)``: a float32 tensor (N, C, H, W) in [0, 1], C = ``channels`` (1 grayscale,
    3 RGB) and H x W the ``resolution`` (R x R for one number), and an int64 tensor (N,).
    """
    import torch

    _target_size(resolution)
    _check_channels(channels)
    if not entries:
        raise DataError("no images to load: the datalist entry list is empty.")
    arrays = []
    labels = []
    for index, entry in enumerate(entries):
        if "image" not in entry or "label" not in entry:
            raise DataError(f"datalist entry {index} lacks an 'image' or 'label' key: {dict(entry)!r}")
        arrays.append(load_image(entry["image"], resolution, channels))
        labels.append(int(entry["label"]))
    stack = np.stack(arrays)
    images = torch.from_numpy(stack[:, None] if channels == 1 else stack)
    return images, torch.tensor(labels, dtype=torch.long)
