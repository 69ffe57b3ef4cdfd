"""GaussianPrivacy exactly as the paper: σ = σ0 × P95 of the non-zero |Δ| pooled over every entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext

from gradinv.privacy import GaussianPrivacy, gaussian_privacy_noise


def hand_made_diff() -> dict[str, np.ndarray]:
    # non-zero |entries| pooled: 1, 2, 3, 4, 5 → P95 (linear) = 4 + 0.8 × (5 − 4) = 4.8
    # (with the two zeros included it would be 4.7)
    return {
        "conv.weight": np.array([[0.0, 1.0], [-2.0, 3.0]], dtype=np.float32),
        "bn.running_mean": np.array([0.0, -4.0], dtype=np.float64),
        "bn.num_batches_tracked": np.array(5, dtype=np.int64),
    }


def test_sigma_is_sigma0_times_p95_of_nonzero_abs_pooled_over_all_entries() -> None:
    noised, sigma = gaussian_privacy_noise(hand_made_diff(), 2.0, np.random.default_rng(0))

    assert sigma == pytest.approx(2.0 * 4.8)
    assert noised["conv.weight"].dtype == np.float32 and noised["bn.running_mean"].dtype == np.float64
    assert noised["bn.num_batches_tracked"].dtype == np.float64  # the counter is noised too, as in the paper
    assert noised["bn.num_batches_tracked"].shape == ()
    for name, original in hand_made_diff().items():
        assert not np.allclose(noised[name], original)


def test_noise_is_gaussian_with_that_sigma() -> None:
    rng = np.random.default_rng(1)
    diff = {"w": rng.normal(size=200_000).astype(np.float32)}
    expected_sigma = 0.5 * np.percentile(np.abs(diff["w"]), 95)

    noised, sigma = gaussian_privacy_noise(diff, 0.5, np.random.default_rng(2))

    assert sigma == pytest.approx(expected_sigma, rel=1e-6)
    noise = noised["w"].astype(np.float64) - diff["w"]
    assert abs(noise.mean()) < 0.01 * sigma and noise.std() == pytest.approx(sigma, rel=0.01)


def test_inputs_are_not_mutated_and_outputs_are_new_arrays() -> None:
    diff = hand_made_diff()
    noised, _ = gaussian_privacy_noise(diff, 3.0, np.random.default_rng(0))
    for name, original in hand_made_diff().items():
        np.testing.assert_array_equal(diff[name], original)
        assert diff[name].dtype == original.dtype
        assert not np.shares_memory(noised[name], diff[name])


def test_sigma0_zero_returns_exact_copies() -> None:
    diff = hand_made_diff()
    copies, sigma = gaussian_privacy_noise(diff, 0.0, np.random.default_rng(0))
    assert sigma == 0.0
    for name in diff:
        np.testing.assert_array_equal(copies[name], diff[name])
        assert copies[name].dtype == diff[name].dtype and not np.shares_memory(copies[name], diff[name])


def test_seeded_noise_is_reproducible() -> None:
    first, _ = gaussian_privacy_noise(hand_made_diff(), 1.0, np.random.default_rng(7))
    again, _ = gaussian_privacy_noise(hand_made_diff(), 1.0, np.random.default_rng(7))
    other, _ = gaussian_privacy_noise(hand_made_diff(), 1.0, np.random.default_rng(8))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["conv.weight"], other["conv.weight"])


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="sigma0"):
        gaussian_privacy_noise(hand_made_diff(), -1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="conv.weight"):
        gaussian_privacy_noise({"conv.weight": np.array([1.0, np.nan])}, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sigma0"):
        GaussianPrivacy(sigma0=float("inf"))


def client_context(site: str) -> FLContext:
    fl_ctx = FLContext()
    fl_ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    return fl_ctx


def test_filter_returns_a_new_noised_weight_diff_dxo() -> None:
    diff = hand_made_diff()
    meta = {MetaKey.NUM_STEPS_CURRENT_ROUND: 3, "initial_metrics": {"loss": 0.7}}
    shareable = DXO(DataKind.WEIGHT_DIFF, data=diff, meta=meta).to_shareable()
    privacy_filter = GaussianPrivacy(sigma0=5.0, seed=0)
    assert (privacy_filter.sigma0, privacy_filter.seed) == (5.0, 0)  # exported by NVFlare's job API

    result = from_shareable(privacy_filter.process(shareable, FLContext()))

    assert result.data_kind == DataKind.WEIGHT_DIFF
    assert result.get_filter_history() == ["GaussianPrivacy"]
    assert {k: v for k, v in result.meta.items() if k != "filter_history"} == meta and result.meta is not meta
    assert set(result.data) == set(diff)
    for name, original in hand_made_diff().items():
        assert not np.allclose(result.data[name], original)
        np.testing.assert_array_equal(diff[name], original)  # what the client trained is untouched


def test_filter_keeps_torch_tensors_and_their_dtypes() -> None:
    data = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "half": torch.ones(2, dtype=torch.bfloat16),
            "bn.num_batches_tracked": torch.tensor(4)}
    shareable = DXO(DataKind.WEIGHTS, data=data).to_shareable()

    result = from_shareable(GaussianPrivacy(sigma0=1.0, seed=0).process(shareable, FLContext()))

    assert all(isinstance(v, torch.Tensor) for v in result.data.values())
    assert result.data["w"].dtype == torch.float32 and result.data["half"].dtype == torch.bfloat16
    assert result.data["bn.num_batches_tracked"].dtype == torch.float64
    assert not torch.equal(result.data["w"], data["w"])
    assert torch.equal(data["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_filter_sigma0_zero_passes_values_unchanged() -> None:
    shareable = DXO(DataKind.WEIGHT_DIFF, data=hand_made_diff()).to_shareable()
    result = from_shareable(GaussianPrivacy().process(shareable, FLContext()))
    for name, original in hand_made_diff().items():
        np.testing.assert_array_equal(result.data[name], original)


def test_same_seed_gives_each_client_its_own_reproducible_noise() -> None:
    def noised_for(site: str) -> np.ndarray:
        shareable = DXO(DataKind.WEIGHT_DIFF, data=hand_made_diff()).to_shareable()
        return from_shareable(GaussianPrivacy(sigma0=1.0, seed=3).process(shareable, client_context(site))).data[
            "conv.weight"]

    np.testing.assert_array_equal(noised_for("site-1"), noised_for("site-1"))
    assert not np.array_equal(noised_for("site-1"), noised_for("site-2"))
