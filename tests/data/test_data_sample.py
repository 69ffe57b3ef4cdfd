"""The offline sample set: complete, idempotent, traceable, disjoint, learnable; atomic builds."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradinv.data import build_sample, demo_datalists, load_datalist, load_images, prior_path, sample_split
from gradinv.data import sample as sample_module
from gradinv.errors import DataError


def _provenance(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "provenance.json").read_text())


def test_splits_meet_their_sizes_and_train_is_balanced(sample_dir: Path) -> None:
    counts = _provenance(sample_dir)["counts"]
    assert sum(counts["train"].values()) >= 40 and counts["train"]["mri"] == counts["train"]["xray_ct"]
    assert sum(counts["public"].values()) >= 20
    assert sum(counts["test"].values()) >= 40
    assert min(count for split in counts.values() for count in split.values()) > 0


def test_provenance_lists_every_image_and_nothing_else(sample_dir: Path) -> None:
    provenance = _provenance(sample_dir)
    on_disk = {path.relative_to(sample_dir).as_posix() for split in ("train", "public", "test")
               for path in (sample_dir / split).rglob("*.png")}
    listed = {image["file"] for image in provenance["images"]}
    assert listed == on_disk
    for image in provenance["images"]:
        assert image["file"].startswith(f"{image['split']}/{image['class_name']}/")
        assert provenance["labels"][str(image["label"])] == image["class_name"]
        assert image["source"]["package"] in {"nilearn", "nibabel", "pydicom", "pydicom-data"}
        assert image["source"]["version"] and image["source"]["file"] and image["source"]["function"]
        assert image["licence"] and image["transform"]
        assert hashlib.sha256((sample_dir / image["file"]).read_bytes()).hexdigest() == image["sha256"]
        with Image.open(sample_dir / image["file"]) as png:
            assert png.mode == "L" and png.size == (256, 256)
    markdown = (sample_dir / "PROVENANCE.md").read_text()
    assert "NOT a patient cohort" in markdown


def test_splits_are_disjoint_and_public_shares_no_scan_with_train(sample_dir: Path) -> None:
    images = _provenance(sample_dir)["images"]
    digests = [image["sha256"] for image in images]
    assert len(set(digests)) == len(digests)  # no image appears twice, in any split
    scans = {split: {image["source"]["file"] for image in images if image["split"] == split}
             for split in ("train", "public", "test")}
    assert not scans["train"] & scans["public"]


def test_prior_is_the_mean_of_the_public_split(sample_dir: Path) -> None:
    public = sample_split("public").items
    mean = np.mean([np.asarray(Image.open(item["image"]), dtype=np.float64) for item in public], axis=0)
    prior = np.asarray(Image.open(prior_path()), dtype=np.float64)
    assert prior.shape == (256, 256)
    assert np.abs(prior - mean).max() <= 0.5 + 1e-9


def test_second_build_returns_at_once_without_rewriting(sample_dir: Path) -> None:
    marker = sample_dir / ".complete"
    before = marker.stat().st_mtime_ns
    started = time.perf_counter()
    assert build_sample(quiet=True) == sample_dir
    assert time.perf_counter() - started < 1.0
    assert marker.stat().st_mtime_ns == before


def test_sample_split_items(sample_dir: Path) -> None:
    train = sample_split("train")
    assert train.class_names == ["mri", "xray_ct"] and train.labels_known
    assert len(train) == sum(_provenance(sample_dir)["counts"]["train"].values())
    with pytest.raises(DataError, match="splits train, public, test"):
        sample_split("validation")


def test_demo_datalists(sample_dir: Path) -> None:
    paths = demo_datalists()
    assert list(paths) == ["site-1", "site-2", "site-3"]
    assert paths["site-1"].parent == sample_dir / "datalists" / "demo-1-2-4"
    assert [len(load_datalist(path)) for path in paths.values()] == [1, 2, 4]
    test_images = {entry["image"] for entry in load_datalist(paths["site-1"], "test")}
    assert test_images == {item["image"] for item in sample_split("test").items}


def test_a_small_model_learns_the_task(sample_dir: Path) -> None:
    """Logistic regression on 64 px pixels: far above chance on the held-out test split."""
    train_x, train_y = load_images(sample_split("train").items, 64)
    test_x, test_y = load_images(sample_split("test").items, 64)
    model = torch.nn.Linear(64 * 64, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(300):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(train_x.flatten(1)), train_y).backward()
        optimiser.step()
    accuracy = (model(test_x.flatten(1)).argmax(1) == test_y).float().mean().item()
    assert accuracy >= 0.85


def _fake_render(count_per_split: int = 2) -> list:
    """A few tiny rendered images, so build mechanics can be tested without decoding real scans."""
    rendered = []
    for split in ("train", "public", "test"):
        for index in range(count_per_split):
            label = index % 2
            pixels = np.full((256, 256), 40 * index + 10, dtype=np.uint8)
            rendered.append(sample_module._Rendered(split, label, f"fake_{index}", pixels, {
                "source": {"package": "pydicom", "version": "0", "file": "f", "function": "f", "sha256": "0",
                           "content": "synthetic test image"},
                "licence": "test", "transform": "none"}))
    return rendered


@pytest.fixture
def fake_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_module, "_render_icbm152", _fake_render)
    monkeypatch.setattr(sample_module, "_render_dicom_sources", lambda skipped: [])
    monkeypatch.setattr(sample_module, "MINIMUM_IMAGES", {"train": 1, "public": 1, "test": 1})


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path: Path, fake_sources,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def crash_after_writing(staging: Path, *args):
        write_set(staging, *args)
        raise KeyboardInterrupt

    write_set = sample_module._write_set
    monkeypatch.setattr(sample_module, "_write_set", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        build_sample(tmp_path / "sample", quiet=True)
    assert list(tmp_path.iterdir()) == []  # no target, no staging left behind


def test_incomplete_or_outdated_sets_are_rebuilt(tmp_path: Path, fake_sources) -> None:
    target = tmp_path / "sample"
    target.mkdir()
    (target / "leftover.png").write_bytes(b"half-written")
    build_sample(target, quiet=True)
    assert (target / ".complete").read_text().strip() == sample_module.BUILDER_VERSION
    assert not (target / "leftover.png").exists()

    (target / ".complete").write_text("0\n")  # a set from an older builder
    (target / "leftover.png").write_bytes(b"old")
    build_sample(target, quiet=True)
    assert not (target / "leftover.png").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["sample"]


def test_too_few_decodable_images_is_a_clear_error(tmp_path: Path, fake_sources,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_module, "MINIMUM_IMAGES", {"train": 40, "public": 1, "test": 1})
    with pytest.raises(DataError, match="train split has 2 images, fewer than the 40 needed"):
        build_sample(tmp_path / "sample", quiet=True)


def test_public_mri_is_brain_mr_of_a_subject_not_in_train(sample_dir: Path) -> None:
    """The attacker's per-class prior for the brain-MR class comes from another subject's brain, never ICBM152."""
    images = _provenance(sample_dir)["images"]
    public_mri = {image["source"]["file"] for image in images if image["split"] == "public" and image["label"] == 0}
    train_files = {image["source"]["file"] for image in images if image["split"] == "train"}
    assert public_mri == {"nibabel/tests/data/example4d.nii.gz"}
    assert not public_mri & train_files
