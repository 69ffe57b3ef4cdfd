"""evaluate_reconstruction: the report dict, its conventions and its input validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gradinv.metrics import evaluate_reconstruction, lpips_distance, rdlv, ssim

REQUIRED_KEYS = {
    "ssim", "psnr", "lpips", "rdlv", "rdlv_max", "ssim_max", "ssim_minmax", "ssim_best_match", "rdlv_best_match",
    "prior_ssim", "visibly_leaked_fraction", "label_accuracy", "label_accuracy_matched", "lpips_status",
    "assignment", "per_image",
}  # fmt: skip
REQUIRED_PER_IMAGE_KEYS = {
    "index", "reconstruction_index", "ssim", "psnr", "lpips", "rdlv", "ssim_best_match", "rdlv_best_match",
    "label", "recovered_label",
}  # fmt: skip


@pytest.fixture
def client_batch(bundled_images):
    """Four originals, their reconstructions (permuted, two good, two poor) and a flat prior."""
    rng = np.random.default_rng(1)
    originals = np.stack([bundled_images[name] for name in ("camera", "moon", "coins", "text")])
    permutation = np.array([2, 0, 3, 1])  # reconstruction r shows original permutation[r]
    noise = np.array([0.02, 0.3, 0.02, 0.3])[permutation][:, None, None]
    reconstructions = originals[permutation] + rng.normal(0.0, 1.0, originals.shape) * noise
    prior = originals.mean(axis=0)
    return originals, reconstructions, prior, permutation


def test_report_has_the_agreed_keys_and_is_strict_json(lpips_home, client_batch):
    originals, reconstructions, prior, permutation = client_batch
    result = evaluate_reconstruction(
        originals, reconstructions, prior, true_labels=[0, 1, 1, 0], recovered_labels=np.array([1, 0, 0, 1])
    )
    assert REQUIRED_KEYS <= set(result)
    assert len(result["per_image"]) == 4
    assert all(REQUIRED_PER_IMAGE_KEYS <= set(entry) for entry in result["per_image"])
    assert [entry["index"] for entry in result["per_image"]] == [0, 1, 2, 3]
    json.dumps(result, allow_nan=False)
    assert result["assignment"] == list(np.argsort(permutation))
    assert result["lpips_status"] == "ok"


def test_values_follow_the_hungarian_pairs(lpips_home, client_batch):
    originals, reconstructions, prior, permutation = client_batch
    result = evaluate_reconstruction(originals, reconstructions, prior)
    clipped = np.clip(reconstructions, 0.0, 1.0)
    for entry in result["per_image"]:
        original = originals[entry["index"]]
        paired = clipped[entry["reconstruction_index"]]
        prior_ssim = ssim(original, prior)
        assert entry["ssim"] == pytest.approx(ssim(original, paired))
        assert entry["prior_ssim"] == pytest.approx(prior_ssim)
        assert entry["rdlv"] == pytest.approx((entry["ssim"] - prior_ssim) / prior_ssim)
        assert entry["lpips"] == pytest.approx(float(lpips_distance(paired[None], original[None])[0]), abs=1e-6)
    per_image_ssim = [entry["ssim"] for entry in result["per_image"]]
    per_image_rdlv = [entry["rdlv"] for entry in result["per_image"]]
    assert result["ssim"] == pytest.approx(np.mean(per_image_ssim))
    assert result["ssim_max"] == pytest.approx(max(per_image_ssim))
    assert result["rdlv"] == pytest.approx(np.mean(per_image_rdlv))
    assert result["rdlv_max"] == pytest.approx(max(per_image_rdlv))
    assert result["visibly_leaked_fraction"] == pytest.approx(np.mean(np.array(per_image_ssim) >= 0.5))
    assert 0.0 < result["visibly_leaked_fraction"] < 1.0  # the batch mixes good and poor reconstructions


def test_best_match_may_share_a_reconstruction(bundled_images):
    camera, moon = bundled_images["camera"], bundled_images["moon"]
    originals = np.stack([camera, np.clip(camera + 0.01, 0, 1)])  # two near-copies compete for one reconstruction
    reconstructions = np.stack([camera, moon])
    prior = np.full_like(camera, 0.5)
    result = evaluate_reconstruction(originals, reconstructions, prior, compute_lpips=False)
    assert result["best_match_assignment"] == [0, 0]
    assert sorted(result["assignment"]) == [0, 1]
    assert result["ssim_best_match"] > result["ssim"]
    for entry in result["per_image"]:
        assert entry["rdlv_best_match"] == pytest.approx(rdlv(entry["ssim_best_match"], entry["prior_ssim"]))
    assert result["rdlv_best_match_max"] == pytest.approx(max(e["rdlv_best_match"] for e in result["per_image"]))


def test_without_prior_rdlv_is_none_not_invented(client_batch):
    originals, reconstructions, _, _ = client_batch
    result = evaluate_reconstruction(originals, reconstructions, compute_lpips=False)
    for key in ("rdlv", "rdlv_max", "rdlv_best_match", "prior_ssim"):
        assert result[key] is None
    assert all(entry["rdlv"] is None and entry["rdlv_best_match"] is None for entry in result["per_image"])
    assert result["ssim"] is not None
    assert result["lpips"] is None and result["lpips_status"] == "not requested"


def test_prior_with_non_positive_ssim_gives_none(bundled_images):
    camera = bundled_images["camera"]
    inverted_prior = 1.0 - camera  # anticorrelated: SSIM(prior, x) < 0
    result = evaluate_reconstruction(camera[None], camera[None], inverted_prior, compute_lpips=False)
    assert result["per_image"][0]["prior_ssim"] < 0
    assert result["rdlv"] is None and result["per_image"][0]["rdlv"] is None


def test_identical_reconstruction_scores_perfectly(lpips_home, bundled_images):
    images = np.stack([bundled_images["camera"], bundled_images["moon"]])
    result = evaluate_reconstruction(images, images[::-1])
    assert result["ssim"] == pytest.approx(1.0)
    assert result["psnr"] == 100.0
    assert result["lpips"] == 0.0
    assert result["visibly_leaked_fraction"] == 1.0
    json.dumps(result, allow_nan=False)


def test_minmax_ssim_forgives_a_contrast_error(bundled_images):
    camera = bundled_images["camera"]
    dimmed = 0.2 + 0.5 * minmax(camera)
    result = evaluate_reconstruction(minmax(camera)[None], dimmed[None], compute_lpips=False)
    assert result["ssim_minmax"] == pytest.approx(1.0)
    assert result["ssim"] < 0.95


def minmax(image: np.ndarray) -> np.ndarray:
    return (image - image.min()) / (image.max() - image.min())


def test_reconstructions_are_clipped_not_rejected(bundled_images):
    camera = bundled_images["camera"]
    overshooting = camera * 1.4 - 0.2
    result = evaluate_reconstruction(camera[None], overshooting[None], compute_lpips=False)
    assert result["ssim"] == pytest.approx(ssim(camera, np.clip(overshooting, 0, 1)))


def test_labels_are_reported_both_ways(client_batch):
    originals, reconstructions, _, permutation = client_batch
    true_labels = np.array([0, 1, 1, 0])
    recovered_soft = np.eye(2)[true_labels[permutation]]  # exactly right, in reconstruction order
    result = evaluate_reconstruction(
        originals, reconstructions, true_labels=true_labels, recovered_labels=recovered_soft, compute_lpips=False
    )
    assert result["label_accuracy"] == 1.0
    assert result["label_accuracy_matched"] == 1.0
    assert [entry["recovered_label"] for entry in result["per_image"]] == list(true_labels)
    unlabelled = evaluate_reconstruction(originals, reconstructions, compute_lpips=False)
    assert unlabelled["label_accuracy"] is None and unlabelled["label_accuracy_matched"] is None


def test_torch_and_channel_dim_inputs_match_numpy(client_batch):
    originals, reconstructions, prior, _ = client_batch
    from_numpy = evaluate_reconstruction(originals, reconstructions, prior, compute_lpips=False)
    from_torch = evaluate_reconstruction(
        torch.from_numpy(originals[:, None]).double(),
        torch.from_numpy(reconstructions[:, None]).double(),
        torch.from_numpy(prior[None, None]),
        compute_lpips=False,
    )
    assert from_torch["assignment"] == from_numpy["assignment"]
    assert from_torch["rdlv"] == pytest.approx(from_numpy["rdlv"])


def test_fewer_reconstructions_than_originals(bundled_images):
    originals = np.stack([bundled_images["camera"], bundled_images["moon"]])
    result = evaluate_reconstruction(originals, bundled_images["moon"][None], compute_lpips=False)
    assert result["assignment"] == [None, 0]
    assert result["per_image"][0]["ssim"] is None
    assert result["visibly_leaked_fraction"] == 0.5  # the unpaired original counts as not leaked


def test_missing_lpips_weights_give_none_with_a_reason(empty_home_without_source, bundled_images):
    images = np.stack([bundled_images["camera"], bundled_images["moon"]])
    result = evaluate_reconstruction(images, images)
    assert result["lpips"] is None
    assert all(entry["lpips"] is None for entry in result["per_image"])
    assert result["lpips_status"].startswith("unavailable") and "gradinv assets" in result["lpips_status"]
    assert result["ssim"] == pytest.approx(1.0)


def test_images_too_small_for_lpips_give_none_with_a_reason():
    images = np.random.default_rng(0).random((2, 16, 16))
    result = evaluate_reconstruction(images, images)
    assert result["lpips"] is None and "31 px" in result["lpips_status"]


GOOD = np.full((2, 16, 16), 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"originals": np.zeros((0, 16, 16))}, "originals is empty"),
        ({"reconstructions": np.zeros((0, 16, 16))}, "reconstructions is empty"),
        ({"reconstructions": np.full((2, 16, 15), 0.5)}, "reconstructions are .* but originals are"),
        ({"originals": np.full((2, 6, 6), 0.5), "reconstructions": np.full((2, 6, 6), 0.5)}, "at least 7 px"),
        ({"originals": np.full((16, 16), 0.5)}, r"image\[None\]"),
        ({"originals": np.full((2, 3, 16, 16), 0.5)}, "greyscale"),
        ({"originals": np.where(np.eye(16, dtype=bool), np.nan, 0.5)[None]}, "originals contain NaN"),
        ({"reconstructions": np.full((2, 16, 16), np.inf)}, "reconstructions contain NaN or infinite"),
        ({"originals": np.full((2, 16, 16), 2.0)}, r"originals must lie in \[0, 1\]"),
        ({"reconstructions": np.full((2, 16, 16), 128, dtype=np.uint8)}, "divide 8-bit images by 255"),
        ({"prior": np.full((8, 8), 0.5)}, "prior must be one"),
        ({"prior": np.full((16, 16), -1.0)}, r"prior must lie in \[0, 1\]"),
        ({"true_labels": [0, 1, 1]}, "true_labels has 3 entries for 2 originals"),
        ({"recovered_labels": [0]}, "recovered_labels has 1 entries for 2 reconstructions"),
    ],
)
def test_invalid_inputs_name_the_problem(kwargs, message):
    arguments = {"originals": GOOD, "reconstructions": GOOD, "compute_lpips": False} | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate_reconstruction(**arguments)


def test_public_api_resolves_to_callables():
    import gradinv.metrics as metrics
    from gradinv.metrics import evaluate  # noqa: F401  (submodule imports must not shadow exported functions)

    for name in metrics.__all__:
        assert getattr(metrics, name) is not None
    assert callable(metrics.rdlv) and metrics.rdlv(0.6, 0.4) == pytest.approx(0.5)


def test_per_slot_priors_follow_the_hungarian_pairs(bundled_images):
    camera, moon = bundled_images["camera"], bundled_images["moon"]
    originals = np.stack([camera, moon])
    reconstructions = np.stack([moon, camera])  # slot 0 holds the moon, slot 1 the camera
    priors = np.stack([bundled_images["coins"], bundled_images["camera_blur"]])[:, None]  # one per slot
    result = evaluate_reconstruction(originals, reconstructions, priors, compute_lpips=False)
    assert [entry["reconstruction_index"] for entry in result["per_image"]] == [1, 0]
    assert result["per_image"][0]["prior_ssim"] == pytest.approx(ssim(camera, bundled_images["camera_blur"]))
    assert result["per_image"][1]["prior_ssim"] == pytest.approx(ssim(moon, bundled_images["coins"]))
    with pytest.raises(ValueError, match=r"one such image per reconstruction \(2, C, H, W\)"):
        evaluate_reconstruction(originals, reconstructions, np.stack([priors[0]] * 3), compute_lpips=False)
