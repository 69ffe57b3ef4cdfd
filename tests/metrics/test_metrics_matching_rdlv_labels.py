"""Matching (Hungarian and the reference's best match), RDLV and recovered-label accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradinv.metrics import label_accuracy, match_reconstructions, matched_label_accuracy, rdlv, ssim_matrix


def test_hungarian_recovers_a_known_permutation(bundled_images):
    rng = np.random.default_rng(0)
    originals = np.stack([bundled_images[name] for name in ("camera", "moon", "coins", "astronaut", "text")])
    permutation = np.array([3, 0, 4, 1, 2])  # reconstruction r shows original permutation[r]
    reconstructions = np.clip(originals[permutation] + rng.normal(0.0, 0.05, originals.shape), 0.0, 1.0)
    matching = match_reconstructions(ssim_matrix(originals, reconstructions))
    assert matching.hungarian == list(np.argsort(permutation))
    assert matching.best_match == list(np.argsort(permutation))


def test_best_match_may_share_while_hungarian_stays_one_to_one():
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    matching = match_reconstructions(similarity)
    assert matching.best_match == [0, 0]
    assert matching.hungarian == [1, 0]  # total 1.65 beats the greedy 0.9 + 0.1


def test_fewer_reconstructions_leave_originals_unpaired():
    matching = match_reconstructions(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.4]]))
    assert matching.hungarian == [1, 0, None]
    assert matching.best_match == [1, 0, 1]


def test_matching_rejects_empty_or_nan():
    with pytest.raises(ValueError, match="non-empty"):
        match_reconstructions(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        match_reconstructions(np.array([[np.nan]]))


def test_rdlv_formula_on_hand_computed_values():
    assert rdlv(0.6, 0.4) == pytest.approx(0.5)
    assert rdlv(0.2, 0.4) == pytest.approx(-0.5)
    assert rdlv(0.74, 0.37) == pytest.approx(1.0)  # twice the prior's similarity
    assert rdlv(0.37, 0.37) == 0.0


@pytest.mark.parametrize("prior_ssim", [None, 0.0, -0.2])
def test_rdlv_is_none_without_a_usable_prior(prior_ssim):
    assert rdlv(0.8, prior_ssim) is None


def test_label_accuracy_is_order_free():
    assert label_accuracy([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    # counts (3, 1) vs (0, 4): |3 - 0| + |1 - 4| = 6 over 2N = 8
    assert label_accuracy([0, 0, 0, 1], [1, 1, 1, 1]) == pytest.approx(0.25)
    assert label_accuracy([0, 1], [2, 2]) == 0.0


def test_label_accuracy_accepts_soft_labels_and_tensors():
    soft = np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])  # argmax 1, 0, 1
    assert label_accuracy([1, 1, 0], soft) == 1.0
    assert label_accuracy(torch.tensor([1, 1, 0]), torch.from_numpy(soft)) == 1.0
    assert label_accuracy(np.array([1.0, 0.0]), [0, 1]) == 1.0  # integral floats are class indices


def test_matched_label_accuracy_follows_the_assignment():
    assert matched_label_accuracy([0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 2, 3]) == 0.0
    assert matched_label_accuracy([0, 0, 1, 1], [1, 1, 0, 0], [2, 3, 0, 1]) == 1.0
    assert matched_label_accuracy([0, 1, 1], [0, 1], [0, 1, None]) == pytest.approx(2 / 3)  # unpaired is a miss


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0.5, 1.0], "integer class indices"), ([-1, 0], "non-negative"), (np.zeros((2, 2, 2)), "shape")],
)
def test_label_validation(labels, message):
    with pytest.raises(ValueError, match=message):
        label_accuracy(labels, [0, 1])
