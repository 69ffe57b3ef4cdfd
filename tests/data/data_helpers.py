"""Helpers that write small test images (PNG and DICOM) for the data tests (``from .data_helpers import ...``;
fixtures live in ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def gradient_image(size: int = 32, seed: int = 0) -> np.ndarray:
    """A uint8 image with a horizontal ramp plus seeded noise, so files differ from each other."""
    rng = np.random.default_rng(seed)
    ramp = np.tile(np.linspace(0, 200, size), (size, 1))
    return np.clip(ramp + rng.integers(0, 50, (size, size)), 0, 255).astype(np.uint8)


def write_png(path: Path, seed: int = 0, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient_image(size, seed)).save(path)
    return path


def write_dicom(path: Path, frames: np.ndarray, photometric: str = "MONOCHROME2",
                slope: float = 1.0, intercept: float = 0.0) -> Path:
    """Write an uncompressed 16-bit DICOM; ``frames`` is (H, W) or (F, H, W) uint16."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    frames = np.asarray(frames, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        dataset.NumberOfFrames = frames.shape[0]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope = slope
    dataset.RescaleIntercept = intercept
    dataset.PixelData = frames.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path
