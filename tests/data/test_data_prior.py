"""``load_prior``: the attack's starting image, as ``gradinv attack`` and the server filter load it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradinv.data import load_image
from gradinv.data import sample as sample_module
from gradinv.data.sample import load_prior
from gradinv.errors import DataError

from .data_helpers import write_png


@pytest.mark.parametrize("prior", [None, "none", " None "])
def test_no_prior_is_none_with_a_description(prior):
    image, description = load_prior(prior, 16)
    assert image is None and description.startswith("none")


def test_an_image_path_is_loaded_like_any_image(tmp_path: Path):
    path = write_png(tmp_path / "prior.png", seed=3, size=40)
    image, description = load_prior(path, 16)
    np.testing.assert_array_equal(image, load_image(path, 16))
    assert image.shape == (16, 16) and description == f"image: {path}"
    same, _ = load_prior(str(path), 16)
    np.testing.assert_array_equal(same, image)


def test_sample_means_the_bundled_prior_and_a_path_named_sample_is_a_path(tmp_path: Path, monkeypatch):
    bundled = write_png(tmp_path / "bundled" / "prior.png", seed=5)
    monkeypatch.setattr(sample_module, "prior_path", lambda: bundled)
    image, description = load_prior("sample", 16)
    np.testing.assert_array_equal(image, load_image(bundled, 16))
    assert description == f"bundled public sample set mean: {bundled}"

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="the prior image sample cannot be used"):
        load_prior(Path("sample"), 16)


def test_an_unusable_image_names_the_file(tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    with pytest.raises(DataError, match=r"the prior image .*broken\.png cannot be used"):
        load_prior(broken, 16)


def test_a_bundled_set_that_cannot_be_built_is_one_data_error(monkeypatch):
    def fail():
        raise OSError("disk full")

    monkeypatch.setattr(sample_module, "prior_path", fail)
    with pytest.raises(DataError, match="the bundled prior .* is unavailable: disk full"):
        load_prior("sample", 16)


def test_a_class_folder_gives_the_mean_of_each_class(tmp_path: Path):
    for index in range(4):
        write_png(tmp_path / "public" / ("benign" if index % 2 == 0 else "malignant") / f"{index}.png", seed=index)
    priors, description = load_prior(tmp_path / "public", 16)
    assert priors.shape == (2, 1, 16, 16) and "mean of each class" in description
    benign = np.mean([load_image(tmp_path / "public" / "benign" / f"{i}.png", 16) for i in (0, 2)], axis=0)
    np.testing.assert_allclose(priors[0, 0], benign, atol=1e-6)


def test_a_flat_folder_gives_one_mean_image(tmp_path: Path):
    paths = [write_png(tmp_path / "flat" / f"{index}.png", seed=index) for index in range(3)]
    prior, description = load_prior(tmp_path / "flat", 16, channels=3)
    assert prior.shape == (3, 16, 16) and description.startswith("mean of the public images")
    np.testing.assert_allclose(prior, np.mean([load_image(path, 16, channels=3) for path in paths], axis=0),
                               atol=1e-6)


def test_sample_classes_are_the_public_split_class_means(sample_dir: Path):
    from gradinv.data import load_images, sample_split

    priors, description = load_prior("sample-classes", 16)
    assert priors.shape == (2, 1, 16, 16) and "mean of each class" in description
    images, labels = load_images(sample_split("public").items, 16)
    for label in (0, 1):
        np.testing.assert_allclose(priors[label], images[labels == label].mean(dim=0).numpy(), atol=1e-6)
