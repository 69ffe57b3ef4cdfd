"""Per-site datalists in MONAI's decathlon JSON style, and their validated loading.

A site's datalist is::

    {"labels": {"0": "mri", "1": "xray_ct"},
     "training":   [{"image": "/abs/path.png", "label": 0}, ...],   # this site's own images
     "validation": [...],                                            # held-out images (same as "test")
     "test":       [...]}

The sample set has no separate validation split, so ``validation`` and ``test`` both list the
held-out images each site evaluates the global model on; a consumer may read either key.

Splitting rule (:func:`make_site_datalists`): items are grouped by label, each group is shuffled with
``random.Random(seed)``, then every site in turn draws its images round-robin over the classes,
starting at class ``site_index % num_classes`` and skipping classes that have run out. A site thus
gets ``n // K`` images of each class (plus one extra for some classes) while images last, the extras
rotate between sites, and no image is given to two sites.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from gradinv.errors import DataError

#: A split's name (as a listing option names it) -> its key in a decathlon-style datalist.
DATALIST_KEYS = {"train": "training", "val": "validation", "test": "test"}
#: The largest label (a class index from 0) accepted: a larger one is a typo or an ID, not one of the classes.
MAX_LABEL = 9_999
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _write_json_atomically(path: Path, payload: dict) -> None:
    """Write JSON through a temporary file in the same folder so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _entry(item: Mapping, where: str) -> dict:
    if "image" not in item or "label" not in item:
        raise DataError(f"{where}: item lacks an 'image' or 'label' key: {dict(item)!r}")
    label = item["label"]
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise DataError(f"{where}: label must be a non-negative integer, got {label!r} for {item['image']}")
    check_label(label, where)
    try:
        return {"image": str(Path(item["image"]).expanduser().resolve()), "label": label}
    except ValueError as exc:  # e.g. a NUL character in the path
        raise DataError(f"{where}: {item['image']!r} is not a usable file path ({exc}).") from exc


def check_label(label: int, where: str) -> None:
    """Refuse a label too large to be a class index (it would ask for that many classes)."""
    if label > MAX_LABEL:
        raise DataError(f"{where}: label {label} is too large for a class index (at most {MAX_LABEL}); "
                        "labels number the classes from 0.")


def _draw_balanced(pools: dict[int, list[dict]], count: int, first_class_index: int) -> list[dict]:
    """Take ``count`` items round-robin over the labels (in sorted order, starting at ``first_class_index``)."""
    labels = sorted(pools)
    order = labels[first_class_index % len(labels):] + labels[:first_class_index % len(labels)]
    taken: list[dict] = []
    while len(taken) < count:
        progressed = False
        for label in order:
            if len(taken) == count:
                break
            if pools[label]:
                taken.append(pools[label].pop(0))
                progressed = True
        if not progressed:
            raise AssertionError("pools exhausted; callers check the total first")
    return taken


def _shuffled_pools(entries: list[dict], seed: int) -> dict[int, list[dict]]:
    rng = random.Random(seed)
    pools: dict[int, list[dict]] = {}
    for entry in entries:
        pools.setdefault(entry["label"], []).append(entry)
    for label in sorted(pools):
        rng.shuffle(pools[label])
    return pools


def hold_out(items: Sequence[Mapping], count: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split ``items`` into ``(rest, held_out)`` with ``count`` class-balanced held-out items (seeded).

    For sources without a test split: hold images out for evaluating the global model before giving
    the rest to sites. ``rest`` keeps the input order.
    """
    entries = [_entry(item, f"item {index}") for index, item in enumerate(items)]
    if not 0 <= count <= len(entries):
        raise DataError(f"cannot hold out {count} of {len(entries)} images.")
    if count == 0:
        return entries, []
    held = _draw_balanced(_shuffled_pools(entries, seed), count, 0)
    held_paths = {entry["image"] for entry in held}
    return [entry for entry in entries if entry["image"] not in held_paths], held


def make_site_datalists(items: Sequence[Mapping], images_per_site: Sequence[int], out_dir: str | Path,
                        seed: int = 0, test_items: Sequence[Mapping] | None = None,
                        names: Sequence[str] | None = None, *,
                        class_names: Sequence[str] | None = None, verify: bool = False) -> dict[str, Path]:
    """Write one datalist per site, each with its own disjoint, class-balanced images.

    ``items``: ``{"image", "label"}`` mappings (e.g. ``ImageList.items``); ``images_per_site``: how
    many training images each site gets; ``test_items``: held-out images listed under ``validation``
    and ``test`` for every site (must not overlap the training images); ``names``: site names
    (default ``site-1 .. site-K``), also the file names ``<out_dir>/<name>.json``; ``class_names``
    fill the ``labels`` map (default ``class_<k>``). Deterministic for a given ``seed`` and item order.
    ``verify`` decodes every image the datalists will list before any is written (unreadable ones are named).
    Returns ``{site name: datalist path}``.
    """
    entries = [_entry(item, f"item {index}") for index, item in enumerate(items)]
    test_entries = [_entry(item, f"test item {index}") for index, item in enumerate(test_items or [])]
    counts = [int(count) for count in images_per_site]
    if not counts or any(count < 1 for count in counts):
        raise DataError(f"images per site must be positive integers, got {list(images_per_site)}.")
    if len({entry["image"] for entry in entries}) != len(entries):
        raise DataError("the image list names the same file more than once; sites would share images.")
    if sum(counts) > len(entries):
        raise DataError(f"{len(counts)} sites need {sum(counts)} images ({', '.join(map(str, counts))}) "
                        f"but the source has only {len(entries)}; ask for fewer or add images.")
    site_names = list(names) if names is not None else [f"site-{index + 1}" for index in range(len(counts))]
    if len(site_names) != len(counts) or len(set(site_names)) != len(site_names):
        raise DataError(f"need {len(counts)} distinct site names, got {site_names}.")
    for name in site_names:
        if not _SITE_NAME.fullmatch(name):
            raise DataError(f"site name {name!r} must be letters, digits, '.', '_' or '-' (it becomes a file name).")
    overlap = {entry["image"] for entry in entries} & {entry["image"] for entry in test_entries}
    if overlap:
        raise DataError(f"{len(overlap)} test image(s) are also training images (e.g. {sorted(overlap)[0]}); "
                        "held-out images must not be trained on.")

    all_labels = [entry["label"] for entry in entries + test_entries]
    num_classes = max(all_labels) + 1
    if class_names is None:
        class_names = [f"class_{k}" for k in range(num_classes)]
    if len(class_names) < num_classes:
        beyond = sorted({entry["label"] for entry in test_entries if entry["label"] >= len(class_names)})
        if beyond and max(entry["label"] for entry in entries) < len(class_names):
            raise DataError(f"the test images have label(s) {', '.join(map(str, beyond[:5]))} that the training images "
                            f"lack (their classes: {', '.join(class_names)}); use test images of the same classes.")
        raise DataError(f"labels go up to {num_classes - 1} but only {len(class_names)} class names were given.")
    labels_map = {str(k): name for k, name in enumerate(class_names)}

    pools = _shuffled_pools(entries, seed)
    drawn = {name: _draw_balanced(pools, count, site_index)
             for site_index, (name, count) in enumerate(zip(site_names, counts))}
    if verify:
        from gradinv.data.images import check_readable

        check_readable([entry["image"] for training in drawn.values() for entry in training]
                       + [entry["image"] for entry in test_entries])
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose a folder for the datalists.")
    written: dict[str, Path] = {}
    for name, training in drawn.items():
        path = out_dir / f"{name}.json"
        try:
            _write_json_atomically(path, {
                "labels": labels_map,
                "training": training,
                "validation": test_entries,
                "test": test_entries,
            })
        except OSError as exc:  # OUT is a file, lies under one, or is not writable
            raise DataError(f"{path}: cannot write the datalist ({exc.strerror or exc}); choose a writable "
                            "folder for the datalists.") from exc
        written[name] = path
    return written


def read_json_document(path: Path) -> object:
    """The parsed JSON of a datalist file, or a one-line :class:`DataError` naming it."""
    if not path.is_file():
        raise DataError(f"{path}: datalist not found; check the path or write one with `gradinv data datalists`.")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark, as editors write, is fine
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 JSON datalist ({exc}).") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc
    except RecursionError as exc:
        raise DataError(f"{path}: JSON nested too deeply to be a datalist.") from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DataError(f"{path}: not a usable JSON datalist ({exc}).") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions.") from exc


def load_datalist(path: str | Path, key: str = "training") -> list[dict]:
    """Read and validate one list of a decathlon-style datalist.

    Returns ``[{"image": absolute path, "label": int}]``; relative image paths resolve against the
    datalist's folder (as MONAI's ``load_decathlon_datalist`` does). Raises :class:`DataError` for a
    missing file, bad JSON, a missing key, malformed entries, or image files that do not exist.
    """
    path = Path(path).expanduser().resolve()
    document = read_json_document(path)
    if not isinstance(document, dict):
        raise DataError(f"{path}: a datalist must be a JSON object with a {key!r} list, "
                        f"found {type(document).__name__}.")
    if key not in document:
        raise DataError(f"{path}: no {key!r} list (keys present: {', '.join(document) or 'none'}).")
    listed = document[key]
    if not isinstance(listed, list):
        raise DataError(f"{path}: {key!r} must be a list of {{'image', 'label'}} objects.")

    entries = []
    for index, item in enumerate(listed):
        where = f"{path}, {key}[{index}]"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object with 'image' and 'label', found {item!r}.")
        if not isinstance(item.get("image"), str) or not item["image"]:
            raise DataError(f"{where}: 'image' must be a path string.")
        image = Path(item["image"]).expanduser()
        entries.append(_entry({**item, "image": image if image.is_absolute() else path.parent / image}, where))

    missing = [entry["image"] for entry in entries if not Path(entry["image"]).is_file()]
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path}: {len(missing)} image file(s) in {key!r} do not exist: {shown}.")
    return entries


def datalist_class_names(path: str | Path, num_classes: int) -> list[str]:
    """Class names from a datalist's ``labels`` map, ``class_<k>`` where it names none."""
    path = Path(path).expanduser().resolve()
    document = read_json_document(path)
    labels = document.get("labels", {}) if isinstance(document, dict) else {}
    if not isinstance(labels, dict):
        raise DataError(f"{path}: 'labels' must map label numbers to names, e.g. {{\"0\": \"normal\"}}.")
    return [str(labels.get(str(k), f"class_{k}")) for k in range(num_classes)]
