"""make_site_datalists, hold_out and load_datalist: disjointness, sizes, determinism and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradinv.data import hold_out, load_datalist, make_site_datalists
from gradinv.errors import DataError

from .data_helpers import write_png


@pytest.fixture
def items(tmp_path: Path) -> list[dict]:
    """20 images, 10 per class."""
    return [{"image": str(write_png(tmp_path / "pool" / f"{index:02d}.png", seed=index, size=8)), "label": index % 2}
            for index in range(20)]


def _training(paths: dict[str, Path]) -> dict[str, list[dict]]:
    return {name: json.loads(path.read_text())["training"] for name, path in paths.items()}


def test_sites_get_disjoint_balanced_images(items: list[dict], tmp_path: Path) -> None:
    paths = make_site_datalists(items, [1, 2, 4, 5], tmp_path / "out", class_names=["normal", "covid"])
    assert list(paths) == ["site-1", "site-2", "site-3", "site-4"]
    training = _training(paths)
    assert [len(training[name]) for name in paths] == [1, 2, 4, 5]
    all_images = [entry["image"] for entries in training.values() for entry in entries]
    assert len(all_images) == len(set(all_images)) == 12
    for name, count in (("site-2", 2), ("site-3", 4)):
        assert sorted(entry["label"] for entry in training[name]) == [0] * (count // 2) + [1] * (count // 2)
    odd_site_classes = [training["site-1"][0]["label"], sorted(e["label"] for e in training["site-4"]).count(0)]
    assert odd_site_classes == [0, 2]  # extras rotate: site-1 gets class 0, site-4 gets one more class 1
    document = json.loads(paths["site-1"].read_text())
    assert document["labels"] == {"0": "normal", "1": "covid"}
    assert document["validation"] == document["test"] == []


def test_deterministic_per_seed(items: list[dict], tmp_path: Path) -> None:
    first = _training(make_site_datalists(items, [2, 3], tmp_path / "a", seed=5))
    again = _training(make_site_datalists(items, [2, 3], tmp_path / "b", seed=5))
    other = _training(make_site_datalists(items, [2, 3], tmp_path / "c", seed=6))
    assert first == again
    assert first != other


def test_names_and_test_items(items: list[dict], tmp_path: Path) -> None:
    paths = make_site_datalists(items[:10], [2, 2], tmp_path / "out", names=["hospital-a", "hospital-b"],
                                test_items=items[10:12])
    assert sorted(path.name for path in paths.values()) == ["hospital-a.json", "hospital-b.json"]
    document = json.loads(paths["hospital-a"].read_text())
    assert [entry["image"] for entry in document["test"]] == [items[10]["image"], items[11]["image"]]
    assert load_datalist(paths["hospital-a"], "validation") == document["test"]


def test_class_imbalance_falls_back_to_what_is_left(tmp_path: Path, items: list[dict]) -> None:
    skewed = [item for item in items if item["label"] == 0] + [items[1]]  # 10 of class 0, 1 of class 1
    training = _training(make_site_datalists(skewed, [4, 4], tmp_path / "out"))
    labels = [entry["label"] for entries in training.values() for entry in entries]
    assert labels.count(1) == 1 and len(labels) == 8


@pytest.mark.parametrize(("counts", "names", "message"), [
    ([15, 10], None, "need 25 images.*only 20"),
    ([0, 2], None, "positive integers"),
    ([1, 1], ["same", "same"], "distinct site names"),
    ([1, 1], ["ok", "../escape"], "becomes a file name"),
])
def test_bad_requests(items: list[dict], tmp_path: Path, counts: list[int], names, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make_site_datalists(items, counts, tmp_path / "out", names=names)


def test_test_items_must_not_be_trained_on(items: list[dict], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="also training images"):
        make_site_datalists(items, [1], tmp_path / "out", test_items=items[:1])


def test_hold_out_is_balanced_and_disjoint(items: list[dict]) -> None:
    rest, held = hold_out(items, 4, seed=1)
    assert len(rest) == 16 and sorted(entry["label"] for entry in held) == [0, 0, 1, 1]
    assert not {entry["image"] for entry in rest} & {entry["image"] for entry in held}
    assert hold_out(items, 4, seed=1) == (rest, held)


def test_load_datalist_resolves_relative_paths(json_datalist: Path) -> None:
    entries = load_datalist(json_datalist)
    assert [Path(entry["image"]).name for entry in entries] == ["t0.png", "t1.png", "t2.png", "t3.png"]
    assert all(Path(entry["image"]).is_absolute() for entry in entries)


def test_load_datalist_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent.json.*not found"):
        load_datalist(tmp_path / "absent.json")


def test_load_datalist_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"training": [}')
    with pytest.raises(DataError, match="bad.json.*not valid JSON.*line 1"):
        load_datalist(path)


def test_load_datalist_missing_key(json_datalist: Path) -> None:
    with pytest.raises(DataError, match="no 'validation' list.*labels, training, test"):
        load_datalist(json_datalist, "validation")


def test_load_datalist_nonexistent_images_are_named(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": "gone1.png", "label": 0}, {"image": "gone2.png", "label": 1}]}))
    with pytest.raises(DataError, match="2 image file.*gone1.png.*gone2.png"):
        load_datalist(path)


@pytest.mark.parametrize(("entry", "message"), [
    ({"image": "x.png"}, "lacks an 'image' or 'label'"),
    ({"image": "x.png", "label": "covid"}, "non-negative integer"),
    ({"image": "x.png", "label": True}, "non-negative integer"),
    ({"label": 0}, "'image' must be a path"),
    ("x.png", "expected an object"),
])
def test_load_datalist_malformed_entries(tmp_path: Path, entry, message: str) -> None:
    write_png(tmp_path / "x.png")
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DataError, match=message):
        load_datalist(path)
