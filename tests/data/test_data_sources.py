"""list_images and the per-format loaders: layouts, label rules, and every user-facing error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradinv.data import list_csv, list_datalist, list_folder, list_images, list_medmnist_npz
from gradinv.data.sources import site_datalists_from_source
from gradinv.errors import DataError

from .data_helpers import write_dicom, write_png


def _names(listed) -> list[str]:
    return [Path(item["image"]).name for item in listed.items]


def test_class_folders_give_sorted_labels(class_tree: Path) -> None:
    listed = list_images(class_tree)
    assert listed.class_names == ["classA", "classB"] and listed.labels_known
    assert [item["label"] for item in listed.items] == [0, 0, 0, 1, 1, 1, 1]
    assert _names(listed)[:3] == ["a0.png", "a1.png", "a2.png"]
    assert all(Path(item["image"]).is_absolute() for item in listed.items)


def test_covid_layout_uses_images_not_masks(covid_tree: Path) -> None:
    listed = list_images(covid_tree, classes=["Normal", "COVID"])
    assert listed.class_names == ["Normal", "COVID"]
    assert len(listed) == 8
    assert all(Path(item["image"]).parent.name == "images" for item in listed.items)
    assert {item["label"] for item in listed.items if "COVID" in item["image"].split("/")[-1]} == {1}
    assert len(list_images(covid_tree)) == 10  # all three classes when none are chosen


def test_unknown_class_is_reported(covid_tree: Path) -> None:
    with pytest.raises(DataError, match="named Pneumonia; class folders found: COVID, Normal, Viral Pneumonia"):
        list_images(covid_tree, classes=["COVID", "Pneumonia"])
    with pytest.raises(DataError, match="twice"):
        list_images(covid_tree, classes=["COVID", "COVID"])


def test_flat_folder_labels_are_assigned_by_documented_rule(flat_folder: Path) -> None:
    listed = list_images(flat_folder)
    assert not listed.labels_known
    assert listed.class_names == ["assigned_0", "assigned_1"]
    # sorted names (the extensionless DICOM sorts first); hidden and text files are ignored
    assert _names(listed) == ["IM0001", "img0.png", "img1.png", "img2.png", "img3.png", "img4.png"]
    assert [item["label"] for item in listed.items] == [0, 1, 0, 1, 0, 1]
    assert [item["label"] for item in list_images(flat_folder, seed=1).items] == [1, 0, 1, 0, 1, 0]


def test_first_n_images_in_sorted_order(flat_folder: Path) -> None:
    listed = list_images(flat_folder, n=3, verify=True)
    assert _names(listed) == ["IM0001", "img0.png", "img1.png"]


def test_fewer_images_than_asked(flat_folder: Path) -> None:
    with pytest.raises(DataError, match="holds 6 image.*10 were asked"):
        list_images(flat_folder, n=10)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.*not found"):
        list_images(tmp_path / "nowhere")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        list_images(tmp_path / "empty")


def test_folder_without_images_names_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="no images.*readme.txt"):
        list_images(tmp_path / "docs")


def test_unreadable_image_is_named_when_verifying(flat_folder: Path) -> None:
    (flat_folder / "img0.png").write_text("not really a png")
    listed = list_images(flat_folder, n=3)  # listing alone does not decode
    assert len(listed) == 3
    with pytest.raises(DataError, match="img0.png"):
        list_images(flat_folder, n=3, verify=True)


def test_loose_images_beside_class_folders_are_ambiguous(class_tree: Path) -> None:
    write_png(class_tree / "stray.png")
    with pytest.raises(DataError, match="both images.*class subfolders"):
        list_folder(class_tree)


def test_unsupported_source_file(tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported source"):
        list_images(tmp_path / "data.xlsx")


def test_medmnist_npz_is_extracted_deterministically(medmnist_npz: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    listed = list_medmnist_npz(medmnist_npz, split="train", cache_dir=cache)
    assert _names(listed) == [f"train_{index:06d}.png" for index in range(6)]
    assert [item["label"] for item in listed.items] == [0, 1, 0, 1, 0, 1]
    assert listed.class_names == ["class_0", "class_1"]
    with np.load(medmnist_npz) as archive:
        np.testing.assert_array_equal(np.asarray(Image.open(listed.items[2]["image"])), archive["train_images"][2])
    first_mtime = Path(listed.items[0]["image"]).stat().st_mtime_ns
    again = list_images(medmnist_npz, cache_dir=cache)  # dispatch by suffix; reuses the extraction
    assert again.items == listed.items
    assert Path(again.items[0]["image"]).stat().st_mtime_ns == first_mtime
    assert len(list_images(medmnist_npz, split="test", cache_dir=cache)) == 4


def test_medmnist_rgb_and_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADINV_HOME", str(tmp_path / "home"))
    path = tmp_path / "dermamnist.npz"
    np.savez(path, train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.array([[3], [5]], np.uint8))
    listed = list_medmnist_npz(path)
    assert Path(listed.items[0]["image"]).is_relative_to(tmp_path / "home" / "data" / "medmnist")
    assert len(listed.class_names) == 6


def test_medmnist_errors(tmp_path: Path, medmnist_npz: Path) -> None:
    with pytest.raises(DataError, match="'val_images'/'val_labels'.*found"):
        path = tmp_path / "onlytrain.npz"
        np.savez(path, train_images=np.zeros((1, 4, 4), np.uint8), train_labels=np.zeros((1, 1), np.uint8))
        list_medmnist_npz(path, split="val", cache_dir=tmp_path / "c")
    chest = tmp_path / "chestmnist.npz"
    np.savez(chest, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 14), np.uint8))
    with pytest.raises(DataError, match="multi-label"):
        list_medmnist_npz(chest, cache_dir=tmp_path / "c")
    broken = tmp_path / "broken.npz"
    broken.write_text("nope")
    with pytest.raises(DataError, match="broken.npz"):
        list_medmnist_npz(broken, cache_dir=tmp_path / "c")


def test_csv_relative_and_absolute_paths(csv_list: Path) -> None:
    listed = list_images(csv_list)
    assert _names(listed) == ["p1.png", "p2.png", "p3.png"]
    assert [item["label"] for item in listed.items] == [0, 1, 1]
    assert all(Path(item["image"]).is_file() for item in listed.items)


def test_csv_with_class_names(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png")
    write_png(tmp_path / "y.png", seed=1)
    (tmp_path / "named.csv").write_text("path,label\nx.png,Normal\ny.png,COVID\n")
    listed = list_csv(tmp_path / "named.csv")
    assert listed.class_names == ["COVID", "Normal"]
    assert [item["label"] for item in listed.items] == [1, 0]


@pytest.mark.parametrize(("content", "message"), [
    ("file,class\nx.png,0\n", "header naming the columns 'path' and 'label'"),
    ("", "header"),
    ("path,label\n", "no rows"),
    ("path,label\nx.png,\n", "line 2: empty path or label"),
    ("path,label\nx.png,0\nmissing.png,1\n", "line 3: .*missing.png"),
])
def test_bad_csv(tmp_path: Path, content: str, message: str) -> None:
    write_png(tmp_path / "x.png")
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        list_images(tmp_path / "bad.csv")


def test_json_datalist_source(json_datalist: Path) -> None:
    listed = list_datalist(json_datalist)
    assert listed.class_names == ["normal", "covid"]
    assert [item["label"] for item in listed.items] == [0, 1, 0, 1]
    assert _names(list_images(json_datalist, split="test")) == ["test0.png"]


def test_site_datalists_from_a_folder_hold_out_test_images(covid_tree: Path, tmp_path: Path) -> None:
    paths, training, test_count = site_datalists_from_source(
        covid_tree, [1, 2], tmp_path / "lists", classes=["COVID", "Normal"], test_images=2)
    assert training.class_names == ["COVID", "Normal"] and test_count == 2
    site_2 = json.loads(paths["site-2"].read_text())
    assert site_2["labels"] == {"0": "COVID", "1": "Normal"}
    assert len(site_2["training"]) == 2 and len(site_2["test"]) == 2
    trained = {entry["image"] for path in paths.values() for entry in json.loads(path.read_text())["training"]}
    assert not trained & {entry["image"] for entry in site_2["test"]}


def test_site_datalists_from_npz_use_its_test_split(medmnist_npz: Path, tmp_path: Path) -> None:
    paths, _, test_count = site_datalists_from_source(medmnist_npz, [2, 2], tmp_path / "lists",
                                                      cache_dir=tmp_path / "cache")
    assert test_count == 4
    assert all(Path(entry["image"]).name.startswith("test_")
               for entry in json.loads(paths["site-1"].read_text())["test"])


def test_held_out_images_must_fit_beside_the_sites(covid_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot cover 3 for the sites plus 9 held out"):
        site_datalists_from_source(covid_tree, [1, 2], tmp_path / "lists", test_images=9)


def test_a_dicom_export_lists_its_images_not_its_dicomdir(tmp_path: Path) -> None:
    export = tmp_path / "export"
    write_dicom(export / "DICOMDIR", np.zeros((4, 4), dtype=np.uint16))  # skipped by name: the export's index
    write_dicom(export / "IM0000", np.arange(256, dtype=np.uint16).reshape(16, 16))
    listed = list_images(export, verify=True)
    assert _names(listed) == ["IM0000"]


def test_one_class_folder_of_the_covid_layout_reads_as_a_flat_folder_without_masks(covid_tree: Path) -> None:
    listed = list_images(covid_tree / "COVID")
    assert not listed.labels_known and listed.class_names == ["assigned_0", "assigned_1"]
    assert _names(listed) == ["COVID-1.png", "COVID-2.png", "COVID-3.png"]
    assert all(Path(item["image"]).parent.name == "images" for item in listed.items)


def test_masks_are_never_read_in_any_letter_case(tmp_path: Path) -> None:
    for name in ("A", "B"):
        write_png(tmp_path / "root" / name / "Images" / f"{name}.png")
        write_png(tmp_path / "root" / name / "Masks" / f"{name}-mask.png")
    write_png(tmp_path / "root" / "mask" / "stray-mask.png")
    listed = list_images(tmp_path / "root")
    assert listed.class_names == ["A", "B"] and _names(listed) == ["A.png", "B.png"]


def test_a_class_folder_keeps_its_own_images_beside_an_images_subfolder(tmp_path: Path) -> None:
    write_png(tmp_path / "root" / "A" / "direct.png")
    (tmp_path / "root" / "A" / "images").mkdir()  # empty: A's own image still counts
    write_png(tmp_path / "root" / "B" / "direct.png", seed=1)
    write_png(tmp_path / "root" / "B" / "images" / "nested.png", seed=2)
    listed = list_images(tmp_path / "root")
    assert listed.class_names == ["A", "B"]
    assert [(Path(item["image"]).name, item["label"]) for item in listed.items] == [
        ("direct.png", 0), ("direct.png", 1), ("nested.png", 1)]


def test_an_unreadable_folder_is_named(class_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    iterdir = Path.iterdir

    def refuse_class_b(self: Path):
        if self.name == "classB":
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refuse_class_b)
    with pytest.raises(DataError, match=r"classB: cannot be read \(Permission denied\); check its permissions"):
        list_images(class_tree)


def test_an_empty_source_path_is_refused() -> None:
    with pytest.raises(DataError, match="empty path"):
        list_images("")


def _npz_variants(tmp_path: Path, medmnist_npz: Path) -> dict[str, tuple[Path, str]]:
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(medmnist_npz.read_bytes()[:300])
    renamed_npy = tmp_path / "renamed.npz"
    with open(renamed_npy, "wb") as handle:
        np.save(handle, np.zeros((2, 4, 4), np.uint8))
    objects = tmp_path / "objects.npz"
    np.savez(objects, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.array([0, "a"], dtype=object))
    empty_images = tmp_path / "zerosize.npz"
    np.savez(empty_images, train_images=np.zeros((2, 0, 0), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    huge_label = tmp_path / "hugelabel.npz"
    np.savez(huge_label, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.array([[0], [10**9]]))
    return {
        "truncated": (truncated, "truncated.npz: not a .npz .zip. file, or one cut short"),
        "an .npy renamed": (renamed_npy, "renamed.npz: not a .npz .zip. file"),
        "object arrays": (objects, "objects.npz: the train arrays cannot be read .*Object arrays"),
        "zero-size images": (empty_images, r"zerosize.npz: train_images has shape \(2, 0, 0\): images of zero pixels"),
        "a huge label": (huge_label, "hugelabel.npz, train_labels: label 1000000000 is too large for a class index"),
    }


@pytest.mark.parametrize("case", ["truncated", "an .npy renamed", "object arrays", "zero-size images", "a huge label"])
def test_malformed_npz_files_are_named(case: str, tmp_path: Path, medmnist_npz: Path) -> None:
    path, message = _npz_variants(tmp_path, medmnist_npz)[case]
    with pytest.raises(DataError, match=message):
        list_images(path, cache_dir=tmp_path / "cache")


def test_an_unwritable_npz_cache_is_named(tmp_path: Path, medmnist_npz: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataError, match="a_file: cannot extract the train images there .*writable cache folder"):
        list_images(medmnist_npz, cache_dir=tmp_path / "a_file")


def test_a_repeated_path_is_named_with_its_lines(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png")
    write_png(tmp_path / "y.png", seed=1)
    (tmp_path / "dup.csv").write_text("path,label\nx.png,0\ny.png,1\n./x.png,0\n")
    with pytest.raises(DataError, match=r"dup.csv: lists the same image more than once: .*x.png at line 2, line 4"):
        list_images(tmp_path / "dup.csv")
    (tmp_path / "dup.json").write_text(json.dumps({"training": [{"image": "x.png", "label": 0}] * 2}))
    with pytest.raises(DataError, match=r"dup.json: lists the same image more than once: .*x.png at training\[0\], "
                                        r"training\[1\]"):
        list_images(tmp_path / "dup.json")


def test_a_nul_character_in_a_listed_path_is_one_line(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png")
    (tmp_path / "nul.csv").write_text("path,label\nx.png\0,0\n")
    with pytest.raises(DataError, match="nul.csv: 1 image file.s. not found .line 2"):
        list_images(tmp_path / "nul.csv")
    (tmp_path / "nul.json").write_text(json.dumps({"training": [{"image": "x.png\0", "label": 0}]}))
    with pytest.raises(DataError, match=r"nul.json, training\[0\]: .* is not a usable file path"):
        list_images(tmp_path / "nul.json")


def test_csv_labels_integers_only_in_ascii_digits_and_not_huge(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png")
    write_png(tmp_path / "y.png", seed=1)
    (tmp_path / "superscript.csv").write_text("path,label\nx.png,0\ny.png,\u00b2\n", encoding="utf-8")
    listed = list_images(tmp_path / "superscript.csv")  # "²" is not a number: both labels are class names
    assert listed.class_names == ["0", "\u00b2"] and [item["label"] for item in listed.items] == [0, 1]
    (tmp_path / "huge.csv").write_text(f"path,label\nx.png,0\ny.png,{10**12}\n")
    with pytest.raises(DataError, match=r"huge.csv, line 3: label 1000000000000 is too large for a class index "
                                        r"\(at most 9999\)"):
        list_images(tmp_path / "huge.csv")


def test_json_datalists_deeply_nested_with_a_bom_or_a_huge_label(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="deep.json: JSON nested too deeply"):
        list_images(tmp_path / "deep.json")
    document = {"training": [{"image": "x.png", "label": 0}]}
    (tmp_path / "bom.json").write_text("\ufeff" + json.dumps(document), encoding="utf-8")
    assert _names(list_images(tmp_path / "bom.json")) == ["x.png"]
    (tmp_path / "huge.json").write_text(json.dumps({"training": [{"image": "x.png", "label": 10**9}]}))
    with pytest.raises(DataError, match=r"huge.json, training\[0\]: label 1000000000 is too large"):
        list_images(tmp_path / "huge.json")


def test_site_datalists_name_unreadable_images_and_write_nothing(flat_folder: Path, tmp_path: Path) -> None:
    (flat_folder / "img3.png").write_text("not a png")
    (flat_folder / "img4.png").write_text("not a png")
    with pytest.raises(DataError, match=r"2 of 6 images cannot be read\. The first: .*img3.png.* "
                                        r"The others: .*img4.png"):
        site_datalists_from_source(flat_folder, [2, 2], tmp_path / "lists")
    assert not (tmp_path / "lists").exists()


def test_an_empty_npz_test_split_holds_images_out_instead(tmp_path: Path) -> None:
    path = tmp_path / "emptytest.npz"
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=(np.arange(6) % 2).reshape(6, 1),
             test_images=np.zeros((0, 8, 8), np.uint8), test_labels=np.zeros((0, 1), np.uint8))
    paths, _, test_count = site_datalists_from_source(path, [1, 1], tmp_path / "lists", cache_dir=tmp_path / "cache")
    assert test_count == 4
    test_entries = json.loads(paths["site-1"].read_text())["test"]
    assert all(Path(entry["image"]).name.startswith("train_") for entry in test_entries)


def test_test_labels_the_training_split_lacks_are_named(tmp_path: Path) -> None:
    path = tmp_path / "testlabel5.npz"
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.array([0, 1, 0, 1]),
             test_images=images[:2], test_labels=np.array([5, 0]))
    with pytest.raises(DataError, match="the test images have label.s. 5 that the training images lack .their classes: "
                                        "class_0, class_1."):
        site_datalists_from_source(path, [1], tmp_path / "lists", cache_dir=tmp_path / "cache")


def test_datalists_out_that_is_a_file_or_under_one(flat_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataError, match="a_file: exists and is not a folder"):
        site_datalists_from_source(flat_folder, [1], tmp_path / "a_file")
    with pytest.raises(DataError, match=r"a_file/lists/site-1.json: cannot write the datalist \(Not a directory\)"):
        site_datalists_from_source(flat_folder, [1], tmp_path / "a_file" / "lists")
