"""The job end to end in the NVFlare simulator (small: 32 px, 2 sites, 1 round, a few hundred iterations)."""

import csv
import stat

import numpy as np
import pytest
import torch

from gradinv.data import demo_datalists, load_datalist, load_images
from gradinv.fl.job import JobSettings, simulate
from gradinv.models import build_model
from gradinv.simulation import simulate_client

pytestmark = pytest.mark.e2e
RESOLUTION = 32


def _settings(name, filter_settings=None, **job):
    # A budget far above the attacks' time: these tests check the pipeline, and a loaded machine must not turn an
    # attack into a "timeout" row (the budget itself is tested in test_filter.py).
    attack = {"attack_overrides": {"iterations": 300, "iterations_per_image_cap": 1}, "time_budget_s": 3600.0}
    return JobSettings(**{"name": name, "images_per_site": (1, 4), "num_rounds": 1, "resolution": RESOLUTION,
                          "filter": {**attack, **(filter_settings or {})}, **job})


def _final_global_model(run_dir):
    checkpoint = torch.load(run_dir / "app_server" / "FL_global_model.pt", weights_only=False)
    return checkpoint["model"]


def _rows(run_dir):
    with open(run_dir / "gradinv" / "metrics.csv") as handle:
        return {row["site"]: row for row in csv.DictReader(handle)}


def test_leaking_update_is_blocked_and_the_round_completes_with_the_others(tmp_path):
    settings = _settings("gate_e2e", {"block_metric": "ssim_max", "block_threshold": 0.9})
    run_dir = simulate(settings, tmp_path)

    rows = _rows(run_dir)
    assert set(rows) == {"site-1", "site-2"}
    assert rows["site-1"]["num_images"] == "1" and rows["site-2"]["num_images"] == "4"
    assert float(rows["site-1"]["ssim"]) > 0.9 and rows["site-1"]["decision"] == "block"
    assert rows["site-2"]["decision"] == "pass"
    # Ground truth configured: SSIM and LPIPS are measured (RDLV only where SSIM(prior, x) > 0).
    for row in rows.values():
        assert row["ssim"] != "" and row["lpips"] != "" and row["status"] == "ok"
        assert -1.0 <= float(row["prior_ssim"]) <= 1.0  # what RDLV is relative to, beside it in every row
    single = rows["site-1"]
    if single["rdlv"] != "":
        prior_ssim = float(single["prior_ssim"])
        assert float(single["rdlv"]) == pytest.approx((float(single["ssim"]) - prior_ssim) / prior_ssim, rel=1e-3)

    # FedAvg aggregated site-2 alone: global = initial + site-2's own update, replayed here.
    initial = build_model("bn_cnn", resolution=RESOLUTION, init_seed=settings.seed)
    images, labels = load_images(load_datalist(demo_datalists((1, 4))["site-2"]), RESOLUTION)
    site2 = simulate_client(initial, images, labels, settings.training)
    final = _final_global_model(run_dir)
    for name, value in initial.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        expected = value + site2.diff[name]
        assert torch.allclose(torch.as_tensor(final[name]).float(), expected, atol=1e-6), name
    assert any(not torch.equal(torch.as_tensor(final[k]).float(), v.float()) for k, v in initial.state_dict().items())

    gradinv_dir = run_dir / "gradinv"
    for site, count in (("site-1", 1), ("site-2", 4)):
        png = gradinv_dir / "round_000" / site / "reconstruction.png"
        assert stat.S_IMODE(png.stat().st_mode) == 0o600
        # The job's prior is per class: each reconstruction is stored with the prior of its recovered label.
        with np.load(gradinv_dir / "round_000" / site / "reconstruction.npz") as arrays:
            assert arrays["prior"].shape == (count, 1, RESOLUTION, RESOLUTION)
    report = (gradinv_dir / "report.html").read_text()
    assert "site-1" in report and "site-2" in report
    assert (gradinv_dir / "global_metrics.csv").exists()


def test_audit_mode_leaves_the_aggregate_bit_identical(tmp_path):
    baseline = simulate(_settings("no_filter", images_per_site=(1, 2), attack=False), tmp_path / "baseline")
    audited = simulate(_settings("audited", {"mode": "audit", "attack_overrides": {"iterations": 20}},
                                 images_per_site=(1, 2)), tmp_path / "audited")

    expected, observed = _final_global_model(baseline), _final_global_model(audited)
    assert set(expected) == set(observed)
    for name in expected:
        assert torch.equal(torch.as_tensor(expected[name]), torch.as_tensor(observed[name])), name
    assert set(_rows(audited)) == {"site-1", "site-2"}
    assert not (baseline / "gradinv").exists()
