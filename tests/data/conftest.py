"""Fixtures for the data tests: small image trees in every supported layout, built in tmp folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .data_helpers import write_dicom, write_png


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """``classA/*.png`` (3 images) and ``classB/*.png`` (4 images)."""
    root = tmp_path / "classes"
    for index in range(3):
        write_png(root / "classA" / f"a{index}.png", seed=index)
    for index in range(4):
        write_png(root / "classB" / f"b{index}.png", seed=10 + index)
    return root


@pytest.fixture
def covid_tree(tmp_path: Path) -> Path:
    """The COVID-19 Radiography Database layout: images/ and masks/ per class, a metadata file at the top."""
    root = tmp_path / "COVID-19_Radiography_Dataset"
    for class_index, (name, count) in enumerate((("COVID", 3), ("Normal", 5), ("Viral Pneumonia", 2))):
        for index in range(count):
            write_png(root / name / "images" / f"{name}-{index + 1}.png", seed=20 * class_index + index)
            write_png(root / name / "masks" / f"{name}-{index + 1}.png", seed=200 + index)
        (root / f"{name}.metadata.xlsx").write_bytes(b"not an image")
    (root / "README.md.txt").write_text("dataset readme")
    return root


@pytest.fixture
def flat_folder(tmp_path: Path) -> Path:
    """Five PNGs, one extensionless DICOM, a hidden file and a text file in one folder."""
    root = tmp_path / "flat"
    for index in range(5):
        write_png(root / f"img{index}.png", seed=index)
    write_dicom(root / "IM0001", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def medmnist_npz(tmp_path: Path) -> Path:
    """A tiny MedMNIST-style file: 6/2/4 grayscale 28x28 images, labels (N, 1)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 6), ("val", 2), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(count, 1).astype(np.uint8)
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture
def csv_list(tmp_path: Path) -> Path:
    """A CSV with relative and absolute paths and integer labels."""
    root = tmp_path / "csvset"
    first = write_png(root / "images" / "p1.png", seed=1)
    write_png(root / "images" / "p2.png", seed=2)
    write_png(root / "images" / "p3.png", seed=3)
    (root / "list.csv").write_text(f"path,label\n{first},0\nimages/p2.png,1\nimages/p3.png,1\n")
    return root / "list.csv"


@pytest.fixture
def json_datalist(tmp_path: Path) -> Path:
    """A decathlon-style datalist with a labels map, relative image paths and a test list."""
    root = tmp_path / "jsonset"
    for index in range(4):
        write_png(root / f"t{index}.png", seed=index)
    write_png(root / "test0.png", seed=9)
    document = {
        "labels": {"0": "normal", "1": "covid"},
        "training": [{"image": f"t{index}.png", "label": index % 2} for index in range(4)],
        "test": [{"image": "test0.png", "label": 1}],
    }
    path = root / "datalist.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GRADINV_HOME with the real sample set built once for the whole session."""
    from gradinv.data import build_sample

    home = tmp_path_factory.mktemp("gradinv_home")
    build_sample(home / "data" / "sample", quiet=True)
    return home


@pytest.fixture
def sample_dir(sample_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's sample set, with GRADINV_HOME pointing at it (as the default location)."""
    monkeypatch.setenv("GRADINV_HOME", str(sample_home))
    return sample_home / "data" / "sample"
