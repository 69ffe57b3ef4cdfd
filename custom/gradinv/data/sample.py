"""The offline sample set: real medical images from installed packages, posed as a two-class task.

Nothing is downloaded. Sources (each image's package, licence and transform are recorded in its provenance):

* ``nilearn`` wheel: the MNI ICBM152 2009a T1 template (an average of 152 brains, skull-stripped);
  slices in three planes.
* ``nibabel`` wheel: ``tests/data/example4d.nii.gz``, an EPI brain volume of another (single) subject;
  axial slices of its first time point.
* ``pydicom-data`` / ``pydicom`` test files: a CR chest radiograph (RG1), a CR tibia (RG3), CT slices of
  two heads, an abdomen and a spine.

Task: **label 0 "mri"** (magnetic-resonance images) vs **label 1 "xray_ct"** (X-ray attenuation
images: CR radiographs and CT slices), an imaging-modality task a small CNN learns from pixels
(it is not a diagnosis). Splits:

* ``train`` (48, 24 + 24): the pool the FL sites draw from: ICBM152 slices; RG1 chest crops and two CT
  slices (head, abdomen).
* ``test`` (48, 24 + 24): held-out ICBM152 slices (4-6 mm from any train slice), other RG1 crops, other
  crops of the two train CT slices, and a second head CT. This measures within-scan generalisation,
  so the accuracy it gives is optimistic; it is a sanity check that FL training works.
* ``public`` (24, 12 + 12): the attacker's prior (``prior.png`` is its per-pixel mean; ``"sample-classes"``
  in :func:`load_prior` is the mean of each class). It uses only scans that are **not** in ``train`` (RG3
  tibia, the spine and second head CT; the EPI brain of another subject), so the prior carries no
  information about any client's images, yet its MR class is brain MR, as a public prior for a brain-MR
  federation would be: SSIM(class mean, train brain slice) is about 0.25 at 64 px, near the paper's 0.37.

Each image is a deterministic crop (scale, centre, optional left-right mirror) or slice, stored as an
8-bit grayscale PNG at 256x256. Files that cannot be decoded (compressed DICOM without a decoder
plugin) are skipped, the split sizes are checked, and ``train`` is trimmed to equal class counts.
``provenance.json`` records every image's source, licence and transform; the set is built in a
temporary folder and renamed into place, so an interrupted build never looks complete.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gradinv.data.datalists import make_site_datalists
from gradinv.data.images import DICOM_WINDOW_PERCENTILES, load_image, load_images, read_dicom_unit, resize_square
from gradinv.data.sources import ImageList, list_images
from gradinv.errors import DataError, GradinvError
from gradinv.hashing import sha256_of_file
from gradinv.paths import sample_data_dir

#: Bump whenever the images, their order or the files written change: a set with another version is rebuilt.
BUILDER_VERSION = "3"
RESOLUTION = 256
CLASS_NAMES = ("mri", "xray_ct")
MRI, XRAY_CT = 0, 1
SPLITS = ("train", "public", "test")
MINIMUM_IMAGES = {"train": 40, "public": 20, "test": 40}
PROVENANCE_JSON = "provenance.json"
PROVENANCE_MD = "PROVENANCE.md"
PRIOR_PNG = "prior.png"
COMPLETE_MARKER = ".complete"

LICENCE_PYDICOM_DATA = ("pydicom-data package: MIT; the image's own licence is not stated by the package "
                        "(its sources: NEMA WG04 compression test set, GDCM and dclunie samples)")
LICENCE_PYDICOM = "pydicom package: MIT; the image's own licence is not stated by the package"
LICENCE_NILEARN = ("nilearn package: BSD-3-Clause; nilearn's own description of the ICBM152 2009 template "
                   "gives its licence as 'unknown'")

LICENCE_NIBABEL = ("nibabel package: MIT; the test volume's own licence is not stated separately by the package")

ICBM152_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
ICBM152_CONTENT = ("MNI ICBM152 2009a nonlinear symmetric T1 template: the average of 152 adult brains, "
                   "skull-stripped, 1 mm voxels")
#: Voxels kept around the brain's bounding box so that slices do not touch the image border.
ICBM152_MARGIN = 4


@dataclass(frozen=True)
class Crop:
    """A square crop of a 2-D image: side ``scale`` x the shorter side, centred at fractional ``centre``."""

    split: str
    scale: float = 1.0
    centre: tuple[float, float] = (0.5, 0.5)
    mirror: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape
        side = round(self.scale * min(height, width))
        top = min(max(round(self.centre[0] * height - side / 2), 0), height - side)
        left = min(max(round(self.centre[1] * width - side / 2), 0), width - side)
        crop = image[top : top + side, left : left + side]
        return crop[:, ::-1] if self.mirror else crop

    def describe(self) -> str:
        text = (f"square crop, side {self.scale:.2f} x the shorter side, centred at "
                f"(row {self.centre[0]:.2f}, column {self.centre[1]:.2f}) of the image")
        return text + ", mirrored left-right" if self.mirror else text


@dataclass(frozen=True)
class DicomSource:
    """One DICOM file shipped by pydicom or pydicom-data, and the crops taken from it."""

    key: str
    file_name: str
    label: int
    content: str
    crops: tuple[Crop, ...]


@dataclass(frozen=True)
class VolumeSlice:
    """One slice of the ICBM152 volume (``index`` is the voxel index along the plane's axis, RAS order)."""

    split: str
    plane: str
    index: int


def _chest_crops() -> tuple[Crop, ...]:
    """36 crops of RG1 on a scale x row x column grid; a checkerboard gives half to train, half to test."""
    crops = []
    for scale_index, scale in enumerate((0.9, 0.8, 0.7, 0.6)):
        for row_index, row in enumerate((0.42, 0.5, 0.58)):
            for column_index, column in enumerate((0.4, 0.5, 0.6)):
                split = "train" if (scale_index + row_index + column_index) % 2 == 0 else "test"
                crops.append(Crop(split, scale, (row, column)))
    return tuple(crops)


DICOM_SOURCES = (
    DicomSource("cr-chest-rg1", "RG1_UNCI.dcm", XRAY_CT,
                "CR chest PA radiograph (THORAX, MONOCHROME1), adult, normal-looking", _chest_crops()),
    DicomSource("ct-head-693", "693_UNCI.dcm", XRAY_CT,
                "CT head axial slice, 5 mm plain (header PatientID CQ500-CT-310)",
                (Crop("train"), Crop("train", 0.8, (0.45, 0.5)), Crop("train", 0.8, (0.55, 0.5)),
                 Crop("test", 0.9, mirror=True), Crop("test", 0.65))),
    DicomSource("ct-abdomen-pancreas", "explicit_VR-UN.dcm", XRAY_CT,
                "CT abdomen axial slice (header PatientID PANCREAS_0001)",
                (Crop("train"), Crop("train", 0.75), Crop("train", 0.7, (0.45, 0.45)),
                 Crop("test", 0.85, mirror=True), Crop("test", 0.6, (0.55, 0.5)))),
    DicomSource("ct-head-skullbase", "J2K_pixelrep_mismatch.dcm", XRAY_CT,
                "CT head axial slice at the skull base (a second patient)",
                (Crop("test"), Crop("test", 0.75),
                 Crop("public", 0.85, mirror=True), Crop("public", 0.65, (0.45, 0.5)),
                 Crop("public", 0.65, (0.55, 0.5), mirror=True))),
    DicomSource("cr-tibia-rg3", "RG3_UNCI.dcm", XRAY_CT,
                "CR radiograph of the distal tibia (EXTREMITY, MONOCHROME1)",
                (Crop("public"), Crop("public", 0.6, (0.3, 0.5)), Crop("public", 0.6, (0.5, 0.5)),
                 Crop("public", 0.6, (0.7, 0.5)), Crop("public", 0.8, (0.4, 0.5), mirror=True),
                 Crop("public", 0.8, (0.6, 0.5)), Crop("public", 0.45, (0.75, 0.5)))),
    DicomSource("ct-spine-small", "CT_small.dcm", XRAY_CT,
                "CT axial crop of a vertebra, 128x128",
                (Crop("public"), Crop("public", mirror=True))),
)


def _alternating(plane: str, positions: range) -> list[VolumeSlice]:
    """Slices at ``positions``, alternately train and test, so held-out slices sit between train slices."""
    return [VolumeSlice("train" if order % 2 == 0 else "test", plane, index) for order, index in enumerate(positions)]


ICBM152_SLICES = tuple(
    _alternating("axial", range(16, 131, 6))          # 20 slices from the cerebellum to the vertex
    + _alternating("coronal", range(45, 196, 10))     # 16 slices, frontal to occipital
    # 12 slices in one hemisphere only: the template is left-right symmetric, so slices mirrored
    # about the midline (x = 98) would duplicate each other
    + _alternating("sagittal", range(29, 96, 6))
)


@dataclass
class _Rendered:
    """One output image before it is written."""

    split: str
    label: int
    stem: str
    pixels: np.ndarray  # uint8 (RESOLUTION, RESOLUTION)
    record: dict


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    resized = resize_square(np.ascontiguousarray(unit, dtype=np.float32), RESOLUTION)
    return np.round(resized * 255.0).astype(np.uint8)


def _resize_note(side: int) -> str:
    """How a ``side`` x ``side`` square reaches RESOLUTION (the rule of :func:`resize_square`)."""
    if side == RESOLUTION:
        return f"kept at {RESOLUTION}x{RESOLUTION}"
    method = "area average" if side > RESOLUTION else "bilinear"
    return f"resized from {side}x{side} to {RESOLUTION}x{RESOLUTION} ({method})"


def _dicom_origin(path: Path) -> tuple[str, str]:
    """(distribution name, path inside site-packages) of a pydicom / pydicom-data test file."""
    import pydicom

    pydicom_dir = Path(pydicom.__file__).resolve().parent
    for parent in path.parents:
        if parent == pydicom_dir:
            return "pydicom", path.relative_to(pydicom_dir.parent).as_posix()
        if parent.name == "data_store":  # pydicom-data's top-level package
            return "pydicom-data", path.relative_to(parent.parent).as_posix()
    return "unknown", path.name


def _render_dicom_sources(skipped: list[dict]) -> list[_Rendered]:
    import pydicom
    from pydicom.data import get_testdata_file

    rendered = []
    window = f"{DICOM_WINDOW_PERCENTILES[0]}-{DICOM_WINDOW_PERCENTILES[1]} percentile window"
    for source in DICOM_SOURCES:
        # download=False: pydicom would otherwise try to fetch files missing from the installed packages
        located = get_testdata_file(source.file_name, download=False)
        if located is None:
            skipped.append({"file": source.file_name, "reason": "not found in the installed pydicom/pydicom-data"})
            continue
        path = Path(located).resolve()
        try:
            unit = read_dicom_unit(path)
        except DataError as exc:
            skipped.append({"file": source.file_name, "reason": str(exc)})
            continue
        package, relative = _dicom_origin(path)
        photometric = str(pydicom.dcmread(path, stop_before_pixels=True).get("PhotometricInterpretation", ""))
        to_unit = f"rescale slope/intercept, {window}" + (", inverted" if photometric == "MONOCHROME1" else "")
        origin = {
            "package": package,
            "version": importlib.metadata.version(package) if package != "unknown" else None,
            "file": relative,
            "function": f"pydicom.data.get_testdata_file({source.file_name!r})",
            "sha256": sha256_of_file(path),
            "content": source.content,
        }
        for number, crop in enumerate(source.crops):
            cropped = crop.apply(unit)
            rendered.append(_Rendered(
                crop.split, source.label, f"{source.key}_{number:02d}", _to_uint8(cropped),
                {
                    "source": origin,
                    "licence": LICENCE_PYDICOM_DATA if package == "pydicom-data" else LICENCE_PYDICOM,
                    "transform": (f"DICOM {photometric} to [0, 1] ({to_unit}); "
                                  f"{crop.describe()}; {_resize_note(cropped.shape[0])}"),
                },
            ))
    return rendered


def _icbm152_path() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the nilearn wheel (source of the ICBM152 brain template) is not installed; run "
                        "`pip install --no-deps nilearn==0.14.1` in the gradinv environment "
                        "(see requirements-nodeps.txt).")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / ICBM152_FILE
    if not path.is_file():
        raise DataError(f"{path}: the ICBM152 template is missing from the installed nilearn; reinstall "
                        "`pip install --no-deps --force-reinstall nilearn==0.14.1`.")
    return path


def _pad_square(image: np.ndarray) -> np.ndarray:
    side = max(image.shape)
    out = np.zeros((side, side), dtype=image.dtype)
    top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out


def _windowed_brain(raw: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A brain volume windowed to [0, 1] at its percentiles, and the bounding box of its ``brain`` voxels plus
    :data:`ICBM152_MARGIN` (start and stop voxel indices, clipped to the volume)."""
    low, high = np.percentile(raw, DICOM_WINDOW_PERCENTILES)
    volume = np.clip((raw.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    inside = np.argwhere(brain)
    start = np.maximum(inside.min(axis=0) - ICBM152_MARGIN, 0)
    stop = np.minimum(inside.max(axis=0) + 1 + ICBM152_MARGIN, raw.shape)
    return volume, start, stop


def _render_icbm152() -> list[_Rendered]:
    import nibabel

    path = _icbm152_path()
    raw = np.asarray(nibabel.load(path).dataobj)
    volume, start, stop = _windowed_brain(raw, raw > 0)
    origin = {
        "package": "nilearn",
        "version": importlib.metadata.version("nilearn"),
        "file": f"nilearn/datasets/data/{ICBM152_FILE}",
        "function": "file shipped in the nilearn wheel (nilearn.datasets.load_mni152_template reads it); "
                    "read with nibabel",
        "sha256": sha256_of_file(path),
        "content": ICBM152_CONTENT,
    }
    # (axis of the slice index, display rule) per plane; the volume is RAS, rot90 puts anterior or superior up
    planes = {
        "axial": (2, "anterior up"),
        "coronal": (1, "superior up"),
        "sagittal": (0, "superior up, anterior right"),
    }
    cropped = volume[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
    rendered = []
    for volume_slice in ICBM152_SLICES:
        axis, orientation = planes[volume_slice.plane]
        if not start[axis] <= volume_slice.index < stop[axis]:
            raise AssertionError(f"ICBM152 slice {volume_slice} lies outside the brain")
        square = _pad_square(np.rot90(np.take(cropped, volume_slice.index - start[axis], axis=axis)))
        label = "xyz"[axis]
        rendered.append(_Rendered(
            volume_slice.split, MRI, f"icbm152-{volume_slice.plane}-{label}{volume_slice.index:03d}",
            _to_uint8(square),
            {
                "source": origin,
                "licence": LICENCE_NILEARN,
                "transform": (f"volume windowed to its {DICOM_WINDOW_PERCENTILES[0]}-{DICOM_WINDOW_PERCENTILES[1]} "
                              f"percentiles; cropped to the brain's bounding box + {ICBM152_MARGIN} voxels; "
                              f"{volume_slice.plane} slice {label}={volume_slice.index} (voxel index), {orientation}; "
                              f"zero-padded to a square; {_resize_note(square.shape[0])}"),
            },
        ))
    return rendered


EPI_FILE = "example4d.nii.gz"
EPI_CONTENT = ("EPI (T2*-weighted) brain volume of one subject, 128x96x24 voxels of 2x2x2.2 mm, shipped as "
               "nibabel test data; the first of its two time points")
#: Axial slices of the EPI volume in the public split (voxel index along z; the volume is a mid-brain slab).
EPI_PUBLIC_SLICES = tuple(range(0, 24, 2))
#: Voxels above this share of the volume's 99th percentile are brain (EPI background is noise, not zero).
EPI_BRAIN_THRESHOLD = 0.2


def _render_epi_brain() -> list[_Rendered]:
    """Public brain MR of a subject who is not in ICBM152's train slices: the attacker's brain-MR prior."""
    import nibabel

    path = Path(nibabel.__file__).resolve().parent / "tests" / "data" / EPI_FILE
    if not path.is_file():
        raise DataError(f"{path}: nibabel's EPI test volume is missing; reinstall nibabel in the gradinv "
                        "environment (`pip install --force-reinstall nibabel`).")
    raw = np.asarray(nibabel.load(path).dataobj)[..., 0].astype(np.float32)
    volume, start, stop = _windowed_brain(raw, raw > EPI_BRAIN_THRESHOLD * np.percentile(raw, 99))
    origin = {
        "package": "nibabel",
        "version": importlib.metadata.version("nibabel"),
        "file": f"nibabel/tests/data/{EPI_FILE}",
        "function": "file shipped in the nibabel wheel (its test data); read with nibabel",
        "sha256": sha256_of_file(path),
        "content": EPI_CONTENT,
    }
    rendered = []
    for index in EPI_PUBLIC_SLICES:
        square = _pad_square(np.rot90(volume[start[0]:stop[0], start[1]:stop[1], index]))
        rendered.append(_Rendered(
            "public", MRI, f"epi-axial-z{index:03d}", _to_uint8(square),
            {
                "source": origin,
                "licence": LICENCE_NIBABEL,
                "transform": (f"first time point; windowed to its {DICOM_WINDOW_PERCENTILES[0]}-"
                              f"{DICOM_WINDOW_PERCENTILES[1]} percentiles; cropped in-plane to the brain "
                              f"(voxels above {EPI_BRAIN_THRESHOLD} x the 99th percentile) + {ICBM152_MARGIN} "
                              f"voxels; axial slice z={index} (voxel index), anterior up; zero-padded to a square; "
                              f"{_resize_note(square.shape[0])}"),
            },
        ))
    return rendered


def _balance_train(rendered: list[_Rendered]) -> list[_Rendered]:
    """Drop the last train images of the larger class so train is balanced even when a source was skipped."""
    per_class = [sum(1 for item in rendered if item.split == "train" and item.label == label)
                 for label in range(len(CLASS_NAMES))]
    keep = min(per_class)
    kept_counts = [0] * len(CLASS_NAMES)
    balanced = []
    for item in rendered:
        if item.split == "train":
            if kept_counts[item.label] == keep:
                continue
            kept_counts[item.label] += 1
        balanced.append(item)
    return balanced


def _counts(records: list[dict]) -> dict[str, dict[str, int]]:
    return {split: {name: sum(1 for r in records if r["split"] == split and r["class_name"] == name)
                    for name in CLASS_NAMES} for split in SPLITS}


def _provenance_markdown(provenance: dict) -> str:
    counts = provenance["counts"]
    lines = [
        "# gradinv sample set: provenance",
        "",
        "**This is a small sample of real medical images from a few subjects and scans, NOT a patient cohort.**",
        "Many images are crops of the same radiograph or slices of the same volume (an average brain template),",
        "so they are strongly correlated. Use it to demonstrate and test gradient-inversion measurements; do not",
        "draw clinical or population conclusions from it. Real studies need a real dataset (for example the",
        "COVID-19 Radiography Database or MedMNIST, loaded with `gradinv data datalists --source ...`).",
        "",
        f"Built offline by gradinv's sample builder version {provenance['builder_version']} from installed "
        "packages; nothing was downloaded. Every image is an 8-bit grayscale PNG at "
        f"{provenance['resolution']}x{provenance['resolution']}.",
        "",
        "## Task",
        "",
        "Label 0 `mri`: magnetic-resonance images. Label 1 `xray_ct`: X-ray attenuation images (CR radiographs,",
        "CT slices). An imaging-modality task a small CNN can learn; it is not a diagnosis.",
        "",
        "| split | " + " | ".join(CLASS_NAMES) + " | purpose |",
        "|---|" + "---|" * len(CLASS_NAMES) + "---|",
    ]
    purposes = {
        "train": "pool the FL client sites draw their training images from",
        "public": "attacker's prior (`prior.png` = per-pixel mean); scans disjoint from train",
        "test": "global-model accuracy; held-out slices/crops of the train scans plus a second head CT "
                "(within-scan, so optimistic)",
    }
    for split in SPLITS:
        lines.append(f"| {split} | " + " | ".join(str(counts[split][name]) for name in CLASS_NAMES)
                     + f" | {purposes[split]} |")
    lines += ["", "## Sources", "", "| source | package | file | content | licence | images (train/public/test) |",
              "|---|---|---|---|---|---|"]
    by_source: dict[str, dict] = {}
    for image in provenance["images"]:
        entry = by_source.setdefault(image["source"]["file"], {"image": image, "splits": dict.fromkeys(SPLITS, 0)})
        entry["splits"][image["split"]] += 1
    for file_name, entry in by_source.items():
        source, splits = entry["image"]["source"], entry["splits"]
        lines.append(f"| {Path(file_name).name} | {source['package']} {source['version']} | `{file_name}` | "
                     f"{source['content']} | {entry['image']['licence']} | "
                     f"{splits['train']}/{splits['public']}/{splits['test']} |")
    if provenance["skipped_sources"]:
        lines += ["", "Skipped (could not be read here; not part of this set):", ""]
        lines += [f"- `{item['file']}`: {item['reason']}" for item in provenance["skipped_sources"]]
    lines += ["", "`provenance.json` lists every image with its source file, checksum, licence and the exact "
              "transform.", ""]
    return "\n".join(lines)


def _is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished set of this builder version with every listed file present."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file() or marker.read_text().strip() != BUILDER_VERSION:
        return False
    try:
        provenance = json.loads((folder / PROVENANCE_JSON).read_text())
    except (OSError, ValueError):
        return False
    return (folder / PRIOR_PNG).is_file() and all((folder / image["file"]).is_file() for image in provenance["images"])


def _write_set(staging: Path, rendered: list[_Rendered], skipped: list[dict]) -> dict:
    records = []
    for item in rendered:
        relative = Path(item.split) / CLASS_NAMES[item.label] / f"{item.stem}.png"
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.pixels).save(staging / relative)
        records.append({
            "file": relative.as_posix(),
            "split": item.split,
            "label": item.label,
            "class_name": CLASS_NAMES[item.label],
            "sha256": sha256_of_file(staging / relative),
            **item.record,
        })
    public = np.stack([item.pixels for item in rendered if item.split == "public"]).astype(np.float64)
    Image.fromarray(np.round(public.mean(axis=0)).astype(np.uint8)).save(staging / PRIOR_PNG)
    provenance = {
        "builder_version": BUILDER_VERSION,
        "resolution": RESOLUTION,
        "labels": {str(label): name for label, name in enumerate(CLASS_NAMES)},
        "counts": _counts(records),
        "prior": {"file": PRIOR_PNG, "definition": "per-pixel mean of the public split, rounded to uint8"},
        "skipped_sources": skipped,
        "images": records,
    }
    (staging / PROVENANCE_JSON).write_text(json.dumps(provenance, indent=2) + "\n")
    (staging / PROVENANCE_MD).write_text(_provenance_markdown(provenance))
    return provenance


def _check_sizes(rendered: list[_Rendered], skipped: list[dict]) -> None:
    for split, minimum in MINIMUM_IMAGES.items():
        found = sum(1 for item in rendered if item.split == split)
        if found < minimum:
            reasons = "; ".join(f"{item['file']}: {item['reason']}" for item in skipped) or "none skipped"
            raise DataError(f"the sample set's {split} split has {found} images, fewer than the {minimum} needed, "
                            f"because source files could not be read ({reasons}). Reinstall pydicom-data and "
                            "Pillow (JPEG 2000 support) in the gradinv environment.")


def _install(staging: Path, target: Path) -> None:
    """Move the finished staging folder to ``target``, replacing an old set; a concurrent build may win."""
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, retired / target.name)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if not _is_complete(target):
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another process installed an identical set first


def build_sample(out_dir: str | Path | None = None, force: bool = False, quiet: bool = False) -> Path:
    """Build the sample set (default :func:`gradinv.paths.sample_data_dir`) and return its folder.

    Returns at once when a complete set of the same builder version is there (unless ``force``).
    Layout: ``<split>/<class>/<source>_<nn>.png`` for splits train/public/test and classes mri/xray_ct,
    plus ``prior.png``, ``provenance.json``, ``PROVENANCE.md`` and a ``.complete`` marker.
    """
    target = Path(out_dir).expanduser().resolve() if out_dir else sample_data_dir()
    if not force and _is_complete(target):
        return target
    started = time.perf_counter()
    if not quiet:
        print(f"gradinv: building the sample data set in {target} ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    rendered = _render_icbm152() + _render_epi_brain() + _render_dicom_sources(skipped)
    rendered = _balance_train(rendered)
    _check_sizes(rendered, skipped)

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the installed set should read like any other folder
    try:
        provenance = _write_set(staging, rendered, skipped)
        (staging / COMPLETE_MARKER).write_text(BUILDER_VERSION + "\n")  # last: marks the set finished
        if not force and _is_complete(target):  # a concurrent build finished meanwhile: keep its identical set
            shutil.rmtree(staging)
        else:
            _install(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not quiet:
        for item in skipped:
            print(f"  skipped {item['file']}: {item['reason']}")
        total = len(provenance["images"])
        print(f"gradinv: built {total} images in {time.perf_counter() - started:.1f} s")
    return target


def read_provenance(sample_dir: str | Path | None = None) -> dict:
    """The sample set's ``provenance.json`` (building the set first if needed)."""
    folder = build_sample(sample_dir, quiet=True)
    return json.loads((folder / PROVENANCE_JSON).read_text())


def sample_split(split: str, sample_dir: str | Path | None = None) -> ImageList:
    """One split (``train``, ``public`` or ``test``) of the sample set as an :class:`ImageList`.

    Builds the set first if it is missing (offline, seconds). Items are in provenance order.
    """
    if split not in SPLITS:
        raise DataError(f"the sample set has splits {', '.join(SPLITS)}, not {split!r}.")
    folder = build_sample(sample_dir, quiet=True)
    provenance = json.loads((folder / PROVENANCE_JSON).read_text())
    items = [{"image": str(folder / image["file"]), "label": image["label"]}
             for image in provenance["images"] if image["split"] == split]
    return ImageList(items, list(CLASS_NAMES), labels_known=True, source=folder)


def prior_path(sample_dir: str | Path | None = None) -> Path:
    """Path of ``prior.png`` (the public split's per-pixel mean), building the set first if needed."""
    return build_sample(sample_dir, quiet=True) / PRIOR_PNG


#: ``prior`` values naming the bundled public split: its overall mean, or the mean of each of its classes.
SAMPLE_PRIOR = "sample"
SAMPLE_CLASS_PRIORS = "sample-classes"


def load_prior(
    prior: str | os.PathLike | None, resolution: int, channels: int = 1
) -> tuple[np.ndarray | None, str]:
    """The attack's prior (its starting point, and what RDLV is relative to) and a line describing it.

    ``prior`` is one of:

    * ``"sample"`` (the string): the bundled public split's mean image (:func:`prior_path`);
    * ``"sample-classes"``: the mean of each class of the bundled public split, for the sample task's models
      (``mri``, ``xray_ct``);
    * ``None`` or ``"none"``: no prior (a flat grey start and no RDLV; returns ``None``);
    * the path of a folder of public images: one subfolder per class gives the mean of each class (in the
      source rules' class order, :func:`gradinv.data.list_images`), a flat folder the mean of all its images;
    * the path of an image (a :class:`~pathlib.Path` is always a path, even one named ``sample``).

    Images are loaded as :func:`gradinv.data.load_image` loads any image: [0, 1], centre-cropped and resized to
    ``resolution``, with ``channels`` channels. Returns one image, (H, W) for grayscale or (3, H, W), or one per
    class, (K, C, H, W), the image of label ``k`` at index ``k``.

    Raises:
        DataError: the image or folder cannot be used, or the bundled set cannot be built; the message names it.
    """
    if prior is None or (isinstance(prior, str) and prior.strip().lower() == "none"):
        return None, "none (flat grey start; RDLV not computed)"
    if isinstance(prior, str) and prior in (SAMPLE_PRIOR, SAMPLE_CLASS_PRIORS):
        try:
            if prior == SAMPLE_CLASS_PRIORS:
                public = sample_split("public")
                return (_class_means(public, resolution, channels),
                        f"bundled public sample set, mean of each class: {public.source / 'public'}")
            path = prior_path()
        except GradinvError:
            raise
        except Exception as exc:  # noqa: BLE001 - building the bundled set can fail in many ways (files, decoders)
            raise DataError(f"the bundled prior (the sample set's public split) is unavailable: {exc}") from exc
        description = "bundled public sample set mean"
    else:
        path, description = Path(prior).expanduser(), "image"
    if path.is_dir():
        images = list_images(path)
        if images.labels_known:
            return _class_means(images, resolution, channels), f"mean of each class of the public images in {path}"
        return _class_means(images, resolution, channels)[0], f"mean of the public images in {path}"
    try:
        return load_image(path, resolution, channels), f"{description}: {path}"
    except GradinvError as exc:
        raise DataError(f"the prior image {path} cannot be used: {exc}") from exc


def _class_means(images: ImageList, resolution: int, channels: int) -> np.ndarray:
    """(K, C, H, W): the mean image of each class of ``images`` (one class when labels are not known)."""
    loaded, labels = load_images(images.items, resolution, channels)
    if not images.labels_known:
        return loaded.mean(dim=0, keepdim=True).numpy()
    empty = [name for label, name in enumerate(images.class_names) if not bool((labels == label).any())]
    if empty:
        raise DataError(f"the prior folder {images.source} has no images of class {', '.join(empty)}; "
                        "every class of the model needs public images for a per-class prior")
    return np.stack([loaded[labels == label].mean(dim=0).numpy() for label in range(len(images.class_names))])


def demo_datalists(images_per_site: Sequence[int] = (1, 2, 4), out_dir: str | Path | None = None) -> dict[str, Path]:
    """Datalists for the demo: sites draw from the sample set's train split; test = its test split.

    Builds the sample set first if needed (offline, seconds). Default folder:
    ``<sample>/datalists/demo-1-2-4`` (named after ``images_per_site``).
    """
    sample_dir = build_sample(quiet=True)
    train = sample_split("train", sample_dir)
    test = sample_split("test", sample_dir)
    if out_dir is None:
        out_dir = sample_dir / "datalists" / ("demo-" + "-".join(str(int(n)) for n in images_per_site))
    return make_site_datalists(train.items, images_per_site, out_dir, seed=0, test_items=test.items,
                               class_names=train.class_names)
