"""Turn a user's images into an item list ``[{"image": abs_path, "label": int}]`` plus class names.

Supported sources, dispatched by :func:`list_images`:

* **a folder with one subfolder per class** (labels from folder names, sorted alphabetically unless
  ``classes`` gives the order; subfolders without images are ignored).
* **the layout rule**, for the folder given and for each class folder alike: its images are the image
  files directly inside it plus those in its ``images/`` subfolder, and a ``masks/`` (or ``mask/``)
  subfolder is never read, in any letter case: segmentation masks are not patient images. So the
  COVID-19 Radiography Database (``COVID/images/*.png`` beside ``COVID/masks/*.png``) gives one class
  per folder of its root, and a single class folder such as ``COVID/`` reads as a flat folder of
  ``COVID/images``. A folder with images of its own and class subfolders is refused as ambiguous.
* **a flat folder** of images: there are no labels, so they are *assigned* by a documented rule:
  in sorted file-name order, image ``i`` gets label ``(i + seed) % num_classes`` (alternating 0/1 for
  two classes). Such lists have ``labels_known=False`` and class names ``assigned_0, assigned_1, ...``.
* **a MedMNIST ``.npz``** (keys ``train_images``, ``train_labels``, ``val_*``, ``test_*``): one split is
  extracted once to PNG files with deterministic names in a cache folder, so datalists hold paths.
* **a CSV** with a ``path,label`` header (relative paths resolve against the CSV's folder; labels are
  integers, or class names mapped to integers in sorted order).
* **a JSON datalist** (MONAI decathlon style, see :mod:`gradinv.data.datalists`).

Hidden files (``.DS_Store``, ``._x.png``) are ignored; a folder's files are taken in sorted order, so
"the first N images" is reproducible.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gradinv.data.datalists import (
    DATALIST_KEYS,
    check_label,
    datalist_class_names,
    hold_out,
    load_datalist,
    make_site_datalists,
    read_json_document,
)
from gradinv.data.images import IMAGE_SUFFIXES, check_readable, is_image_file
from gradinv.errors import DataError
from gradinv.hashing import sha256_of_file
from gradinv.paths import gradinv_home

#: A folder's images include those of this subfolder (COVID-19 Radiography Database: ``COVID/images``).
IMAGES_SUBFOLDER = "images"
#: Subfolders never read (lower-cased names): segmentation masks beside the images (``COVID/masks``).
MASK_SUBFOLDERS = ("masks", "mask")
#: MedMNIST split names as they appear in the ``.npz`` keys.
MEDMNIST_SPLITS = ("train", "val", "test")
#: Datalist key for each split name accepted by :func:`list_images`.

_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
_SUPPORTED = ("a folder of images (flat or one subfolder per class), a MedMNIST .npz, a CSV (path,label) "
              "or a JSON datalist")


@dataclass(frozen=True)
class ImageList:
    """Images of one source, ready for :func:`gradinv.data.make_site_datalists`.

    ``items`` are ``{"image": absolute path, "label": int}``; ``class_names[k]`` names label ``k``;
    ``labels_known`` is False when labels were assigned by rule (a flat folder) rather than read
    from the source.
    """

    items: list[dict]
    class_names: list[str]
    labels_known: bool
    source: Path

    def __len__(self) -> int:
        return len(self.items)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and is_image_file(p))


def _is_layout_subfolder(path: Path) -> bool:
    """``images/`` and ``masks/`` belong to the folder holding them (the layout rule), they are not classes."""
    return path.name.lower() in (IMAGES_SUBFOLDER, *MASK_SUBFOLDERS)


def _own_images(folder: Path) -> list[Path]:
    """A folder's images by the layout rule: directly inside it, then in its ``images/`` subfolder."""
    images = _images_in(folder)
    for sub in sorted(folder.iterdir()):
        if sub.name.lower() == IMAGES_SUBFOLDER and sub.is_dir():
            images += _images_in(sub)
    return images


def _describe_other_files(folder: Path) -> str:
    others = sorted(p.name for p in folder.iterdir() if _visible(p))
    if not others:
        return f"{folder} is empty"
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    return f"{folder} holds {len(others)} entries but no images ({shown})"


def list_folder(folder: str | Path, *, classes: list[str] | None = None, seed: int = 0,
                num_classes: int = 2) -> ImageList:
    """List a class-folder tree or a flat folder (see the module docstring for the rules).

    ``classes`` selects and orders class folders (e.g. ``["Normal", "COVID"]`` makes Normal label 0);
    ``seed`` and ``num_classes`` only matter for a flat folder, whose labels are assigned.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"{folder}: image folder not found; check the path.")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; expected {_SUPPORTED}.")
    folder = folder.resolve()

    try:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p) and not _is_layout_subfolder(p))
        class_images = {sub.name: _own_images(sub) for sub in subfolders}
        loose_images = _own_images(folder)
    except OSError as exc:  # e.g. a folder without read or search permission
        raise DataError(f"{exc.filename or folder}: cannot be read ({exc.strerror or exc}); "
                        "check its permissions.") from exc
    class_images = {name: images for name, images in class_images.items() if images}

    if class_images and loose_images:
        raise DataError(
            f"{folder}: holds both images ({loose_images[0].name}, ...) and class subfolders "
            f"({', '.join(class_images)}); keep either one subfolder per class or a flat folder of images."
        )
    if class_images:
        names = list(classes) if classes else sorted(class_images)
        missing = [name for name in names if name not in class_images]
        if missing:
            raise DataError(
                f"{folder}: no class folder with images named {', '.join(missing)}; "
                f"class folders found: {', '.join(sorted(class_images))}."
            )
        if len(set(names)) != len(names):
            raise DataError(f"classes {', '.join(names)} name a folder twice; give each class once.")
        items = [
            {"image": str(path), "label": label}
            for label, name in enumerate(names)
            for path in class_images[name]
        ]
        return ImageList(items, names, labels_known=True, source=folder)

    if not loose_images:
        raise DataError(
            f"{_describe_other_files(folder)}; expected image files ({', '.join(IMAGE_SUFFIXES)}, or "
            "extensionless DICOM) directly inside it or in one subfolder per class."
        )
    if classes:
        raise DataError(f"{folder}: a flat folder has no class subfolders to select {', '.join(classes)} from.")
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1 to assign labels to a flat folder, got {num_classes}.")
    items = [
        {"image": str(path), "label": (index + seed) % num_classes}
        for index, path in enumerate(loose_images)
    ]
    return ImageList(items, [f"assigned_{k}" for k in range(num_classes)], labels_known=False, source=folder)


def default_medmnist_cache(npz_path: Path) -> Path:
    """Where a MedMNIST file's PNGs go by default: ``<GRADINV_HOME>/data/medmnist/<stem>-<sha256[:12]>``."""
    return gradinv_home() / "data" / "medmnist" / f"{npz_path.stem}-{sha256_of_file(npz_path)[:12]}"


def _medmnist_arrays(npz_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in MEDMNIST_SPLITS:
        raise DataError(f"MedMNIST split must be one of {', '.join(MEDMNIST_SPLITS)}, got {split!r}.")
    image_key, label_key = f"{split}_images", f"{split}_labels"
    if not zipfile.is_zipfile(npz_path):
        raise DataError(f"{npz_path}: not a .npz (zip) file, or one cut short; expected a MedMNIST download "
                        "(download it again).")
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            if image_key not in archive.files or label_key not in archive.files:
                raise DataError(
                    f"{npz_path}: no {image_key!r}/{label_key!r} arrays (found: {', '.join(archive.files) or 'none'}); "
                    "expected MedMNIST keys train_images, train_labels, val_*, test_*."
                )
            images, labels = archive[image_key], archive[label_key]
    except DataError:
        raise
    except Exception as exc:  # a damaged member, object (pickled) arrays: numpy and zipfile raise many types
        raise DataError(f"{npz_path}: the {split} arrays cannot be read ({type(exc).__name__}: {exc}); expected a "
                        "MedMNIST download of plain uint8/integer arrays.") from exc
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DataError(
            f"{npz_path}: {image_key} has shape {images.shape} and type {images.dtype}; "
            "expected uint8 (N, H, W) or (N, H, W, 3)."
        )
    if min(images.shape[1:3]) < 1:
        raise DataError(f"{npz_path}: {image_key} has shape {images.shape}: images of zero pixels.")
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(
            f"{npz_path}: {label_key} has shape {labels.shape}: multi-label datasets (e.g. ChestMNIST) are not "
            "supported; gradinv needs one integer class per image."
        )
    labels = labels.reshape(-1)
    if len(labels) != len(images):
        raise DataError(f"{npz_path}: {len(images)} images but {len(labels)} labels in split {split!r}.")
    if len(labels) and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise DataError(f"{npz_path}: {label_key} must hold non-negative integers, got {labels.dtype}.")
    if len(labels):
        check_label(int(labels.max()), f"{npz_path}, {label_key}")
    return images, labels.astype(np.int64)


def list_medmnist_npz(npz_path: str | Path, *, split: str = "train", cache_dir: str | Path | None = None) -> ImageList:
    """Extract one split of a MedMNIST ``.npz`` to PNGs (once) and list them.

    Files are ``<cache_dir>/<split>/<split>_<index:06d>.png`` (index in the ``.npz``), written to a
    temporary folder and moved into place, so an interrupted extraction is redone next time.
    Class names are ``class_0, class_1, ...`` (the ``.npz`` carries no names).
    """
    npz_path = Path(npz_path).expanduser()
    if not npz_path.is_file():
        raise DataError(f"{npz_path}: MedMNIST .npz file not found; check the path.")
    npz_path = npz_path.resolve()
    images, labels = _medmnist_arrays(npz_path, split)
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_medmnist_cache(npz_path)
    split_folder = cache / split
    names = [f"{split}_{index:06d}.png" for index in range(len(images))]

    complete_marker = split_folder / ".complete"
    try:
        if not (complete_marker.is_file() and complete_marker.read_text() == str(len(images))):
            _extract(images, names, cache, split)
    except OSError as exc:  # a cache path that is a file, or not writable
        raise DataError(f"{cache}: cannot extract the {split} images there ({exc.strerror or exc}); choose a "
                        "writable cache folder (`gradinv data datalists --cache`, or GRADINV_HOME).") from exc

    items = [{"image": str(split_folder / name), "label": int(label)} for name, label in zip(names, labels)]
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    return ImageList(items, [f"class_{k}" for k in range(num_classes)], labels_known=True, source=npz_path)


def _extract(images: np.ndarray, names: list[str], cache: Path, split: str) -> None:
    """Write ``images`` as ``<cache>/<split>/<name>`` PNGs through a staging folder moved into place."""
    split_folder = cache / split
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{split}.extracting-", dir=cache))
    staging.chmod(0o755)  # mkdtemp makes it private; the extracted images should read like any other folder
    for name, pixels in zip(names, images):
        Image.fromarray(pixels).save(staging / name)
    (staging / ".complete").write_text(str(len(images)))
    shutil.rmtree(split_folder, ignore_errors=True)
    try:
        os.replace(staging, split_folder)
    except OSError:  # another process finished the same extraction first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
        if not (split_folder / ".complete").is_file():
            raise


def _refuse_duplicates(source: Path, places: list[tuple[str, Path]]) -> None:
    """Refuse a list naming one image file twice (``places``: where it is listed, the path): sites would share it."""
    listed: dict[str, list[str]] = {}
    for where, path in places:
        listed.setdefault(str(Path(path).resolve()), []).append(where)
    repeated = [(path, wheres) for path, wheres in listed.items() if len(wheres) > 1]
    if repeated:
        path, wheres = repeated[0]
        more = f" ({len(repeated) - 1} more file(s) repeated too)" if len(repeated) > 1 else ""
        raise DataError(f"{source}: lists the same image more than once: {path} at {', '.join(wheres[:5])}"
                        f"{', ...' if len(wheres) > 5 else ''}{more}; list each image once.")


def list_csv(csv_path: str | Path) -> ImageList:
    """List the images of a ``path,label`` CSV (see the module docstring for label rules)."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found; check the path.")
    csv_path = csv_path.resolve()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            if "path" not in header or "label" not in header:
                raise DataError(
                    f"{csv_path}: the first line must be a header naming the columns 'path' and 'label' "
                    f"(found: {', '.join(header) or 'nothing'})."
                )
            reader.fieldnames = header
            rows = [(line, row) for line, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV ({exc}).") from exc
    except csv.Error as exc:
        raise DataError(f"{csv_path}: malformed CSV ({exc}).") from exc
    if not rows:
        raise DataError(f"{csv_path}: no rows after the header; add one 'path,label' line per image.")

    paths, raw_labels = [], []
    for line, row in rows:
        path_text, label_text = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not path_text or not label_text:
            raise DataError(f"{csv_path}, line {line}: empty path or label.")
        path = Path(path_text).expanduser()
        paths.append((line, path if path.is_absolute() else csv_path.parent / path))
        raw_labels.append(label_text)

    missing = [f"line {line}: {path}" for line, path in paths if not path.is_file()]
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{csv_path}: {len(missing)} image file(s) not found ({shown}); relative paths are "
                        "resolved against the CSV's folder.")
    _refuse_duplicates(csv_path, [(f"line {line}", path) for line, path in paths])

    if all(_INTEGER.fullmatch(text) for text in raw_labels):
        labels = [int(text) for text in raw_labels]
        if min(labels) < 0:
            raise DataError(f"{csv_path}: labels must be non-negative integers or class names.")
        check_label(max(labels), f"{csv_path}, line {paths[labels.index(max(labels))][0]}")
        class_names = [f"class_{k}" for k in range(max(labels) + 1)]
    else:  # class names: map them to integers in sorted order
        class_names = sorted(set(raw_labels))
        labels = [class_names.index(text) for text in raw_labels]
    items = [{"image": str(path.resolve()), "label": label} for (_, path), label in zip(paths, labels)]
    return ImageList(items, class_names, labels_known=True, source=csv_path)


def list_datalist(json_path: str | Path, *, split: str = "train") -> ImageList:
    """List one split (``train``/``val``/``test``) of a JSON datalist, with names from its ``labels`` map."""
    if split not in DATALIST_KEYS:
        raise DataError(f"split must be one of {', '.join(DATALIST_KEYS)}, got {split!r}.")
    json_path = Path(json_path).expanduser().resolve()
    items = load_datalist(json_path, DATALIST_KEYS[split])
    key = DATALIST_KEYS[split]
    _refuse_duplicates(json_path, [(f"{key}[{index}]", item["image"]) for index, item in enumerate(items)])
    num_classes = max((item["label"] for item in items), default=-1) + 1
    return ImageList(items, datalist_class_names(json_path, num_classes), labels_known=True, source=json_path)


def list_images(source: str | Path, *, n: int | None = None, split: str = "train", classes: list[str] | None = None,
                seed: int = 0, num_classes: int = 2, cache_dir: str | Path | None = None,
                verify: bool = False) -> ImageList:
    """List the images of any supported source, dispatching on what ``source`` is.

    ``n`` keeps the first ``n`` items (sorted order for folders, file order otherwise) and raises
    :class:`DataError` when fewer exist. ``split`` picks the MedMNIST / datalist split; ``classes``,
    ``seed`` and ``num_classes`` apply to folders (see :func:`list_folder`); ``cache_dir`` to ``.npz``.
    ``verify`` decodes every listed image now, so an unreadable file is reported (by name) before any
    work starts.
    """
    if not str(source).strip():
        raise DataError("the image source is an empty path (it would mean the current folder); give a path.")
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: not found; expected {_SUPPORTED}.")
    if path.is_dir():
        listed = list_folder(path, classes=classes, seed=seed, num_classes=num_classes)
    elif suffix == ".npz":
        listed = list_medmnist_npz(path, split=split, cache_dir=cache_dir)
    elif suffix == ".csv":
        listed = list_csv(path)
    elif suffix == ".json":
        listed = list_datalist(path, split=split)
    else:
        raise DataError(f"{path}: unsupported source; expected {_SUPPORTED}.")

    items = listed.items
    if n is not None:
        if n < 1:
            raise DataError(f"the number of images must be at least 1, got {n}.")
        if len(items) < n:
            raise DataError(f"{listed.source}: holds {len(items)} image(s) but {n} were asked for; "
                            "ask for fewer or add images.")
        items = items[:n]
    if verify:
        check_readable(item["image"] for item in items)
    return ImageList(items, listed.class_names, listed.labels_known, listed.source)


#: Held-out images taken for evaluation when a source has no test split (fewer if fewer are left).
DEFAULT_HELD_OUT_IMAGES = 40


def _has_own_test_split(path: Path) -> bool:
    """A MedMNIST file always has one (it may be empty); a JSON datalist when its ``test`` list is non-empty."""
    if path.suffix.lower() == ".npz":
        return True
    if path.suffix.lower() == ".json":
        document = read_json_document(path)
        return isinstance(document, dict) and bool(document.get(DATALIST_KEYS["test"]))
    return False


def site_datalists_from_source(source: str | Path, images_per_site: list[int], out_dir: str | Path, *,
                               seed: int = 0, test_source: str | Path | None = None,
                               test_images: int | None = None, classes: list[str] | None = None,
                               cache_dir: str | Path | None = None) -> tuple[dict[str, Path], ImageList, int]:
    """Write per-site datalists from any supported source; returns ``(paths, training list, test count)``.
    Every image the datalists list is decoded first: an unreadable one is named and nothing is written.

    Test images come from, in order: ``test_source`` (its ``test`` split for a ``.npz``/datalist);
    ``test_images`` class-balanced images held out from the source before the sites draw, when given;
    the source's own non-empty test split (a MedMNIST ``.npz``, or a JSON datalist's ``test`` list);
    otherwise up to 40 held-out images from those the sites leave over.
    """
    path = Path(source).expanduser()
    training = list_images(path, split="train", classes=classes, seed=seed, cache_dir=cache_dir)
    items = training.items
    if test_source is not None:
        test_items = list_images(test_source, split="test", classes=classes, seed=seed,
                                 num_classes=len(training.class_names), cache_dir=cache_dir).items
    else:
        own_test = test_images is None and _has_own_test_split(path)
        test_items = list_images(path, split="test", cache_dir=cache_dir).items if own_test else []
    if test_source is None and not test_items:  # no test split of its own, or an empty one: hold images out
        spare = max(len(items) - sum(images_per_site), 0)
        count = min(DEFAULT_HELD_OUT_IMAGES, spare) if test_images is None else test_images
        if count > spare:
            raise DataError(f"{training.source}: {len(items)} images cannot cover {sum(images_per_site)} for the sites "
                            f"plus {count} held out for testing; ask for fewer or add images.")
        items, test_items = hold_out(items, count, seed=seed)
    paths = make_site_datalists(items, images_per_site, out_dir, seed=seed, test_items=test_items,
                                class_names=training.class_names, verify=True)
    return paths, training, len(test_items)
