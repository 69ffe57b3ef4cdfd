"""The ground-truth-free verdicts of :mod:`gradinv.attack.scoring`."""

from __future__ import annotations

import math

import pytest

from gradinv.attack.scoring import CONVERGED_UPDATE_DISTANCE, attack_converged, leak_score


@pytest.mark.parametrize("distance", [0.0, 7e-4, CONVERGED_UPDATE_DISTANCE])
def test_an_attack_that_reproduces_the_update_converged(distance: float) -> None:
    assert attack_converged(distance) is True


@pytest.mark.parametrize("distance", [math.nextafter(CONVERGED_UPDATE_DISTANCE, 1.0), 0.2, 0.64, 1.0, 2.0,
                                      math.nan, math.inf])
def test_an_attack_that_leaves_the_update_unexplained_did_not_converge(distance: float) -> None:
    assert attack_converged(distance) is False


def test_no_distance_means_no_verdict() -> None:
    assert attack_converged(None) is None


def test_leak_score_falls_with_the_distance_the_residual_and_the_images_per_step() -> None:
    assert leak_score(0.0, None, 1) == 1.0
    assert leak_score(0.0, 0.0, 1) > leak_score(0.5, 0.0, 1) > leak_score(1.0, 0.0, 1) == 0.0
    assert leak_score(0.1, 0.0, 1) > leak_score(0.1, 1.0, 1) > leak_score(0.1, 1.0, 4)
