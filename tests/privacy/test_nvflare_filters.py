"""make_privacy_filter, and what NVFlare's PercentilePrivacy / SVTPrivacy do with a WEIGHT_DIFF."""

from __future__ import annotations

import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
from nvflare.app_common.filters.svt_privacy import SVTPrivacy

from gradinv.privacy import GaussianPrivacy, make_privacy_filter


def weight_diff() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w": (rng.normal(size=(40, 25)) * 1e-3).astype(np.float32), "bn.num_batches_tracked": np.array(3)}


def test_each_name_builds_its_filter() -> None:
    assert make_privacy_filter("none") is None
    gaussian = make_privacy_filter("Gaussian", sigma0=10.0, seed=1)
    assert isinstance(gaussian, GaussianPrivacy) and gaussian.sigma0 == 10.0
    percentile = make_privacy_filter("percentile", percentile=50, gamma=0.02)
    assert isinstance(percentile, PercentilePrivacy) and (percentile.percentile, percentile.gamma) == (50, 0.02)
    assert isinstance(make_privacy_filter("svt", fraction=0.2), SVTPrivacy)


def test_bad_names_and_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match="valid names: none, gaussian, percentile, svt"):
        make_privacy_filter("dp-sgd")
    with pytest.raises(ValueError, match="takes no argument sigma; it takes: sigma0, seed"):
        make_privacy_filter("gaussian", sigma=1.0)
    with pytest.raises(ValueError, match="'none' takes no arguments"):
        make_privacy_filter("none", sigma0=1.0)


@pytest.mark.parametrize("name", ["percentile", "svt"])
def test_nvflare_filters_accept_weight_diff(name: str) -> None:
    diff = weight_diff()
    shareable = DXO(DataKind.WEIGHT_DIFF, data=diff, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: 3}).to_shareable()

    result = from_shareable(make_privacy_filter(name).process(shareable, FLContext()))

    assert result.data_kind == DataKind.WEIGHT_DIFF
    assert result.get_filter_history() == [{"percentile": "PercentilePrivacy", "svt": "SVTPrivacy"}[name]]
    assert not np.allclose(result.data["w"], diff["w"])
    np.testing.assert_array_equal(diff["w"], weight_diff()["w"])  # new arrays, inputs untouched
    kept = np.count_nonzero(result.data["w"]) / diff["w"].size
    assert kept == pytest.approx(0.9, abs=0.01) if name == "percentile" else kept < 0.2  # truncation vs sparse SVT
