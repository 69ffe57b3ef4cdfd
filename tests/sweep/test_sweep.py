"""``gradinv sweep``: CSV assembly, calibration, bisection, rank correlation (synthetic runs), and one real sweep.

The unit tests replace the NVFlare simulation with a fake runner that writes a ``gradinv/`` folder whose
leakage is a known function of σ0, so every expected number is computable by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import stat
import time
from pathlib import Path

import pytest

from gradinv.cli import main
from gradinv.errors import GradinvError
from gradinv.fl.job import SIMULATOR_JOB_DIR, JobSettings
from gradinv.report.artifacts import METRICS_COLUMNS
from gradinv.sweep.analysis import (
    SWEEP_COLUMNS,
    RunSpec,
    bisection_points,
    calibrate,
    final_test_accuracy,
    parse_filters,
    parse_sigma_grid,
    plan_runs,
    rank_correlation,
)
from gradinv.sweep.runner import (
    RUN_MARKER,
    SweepMeta,
    calibrate_by_bisection,
    load_job_settings,
    run_sweep,
    sweep_base_settings,
    write_outputs,
)

PRIOR_SSIM = 0.1
ROUNDS = 2


# ---------------------------------------------------------------- a fake simulation with known leakage


def synthetic_ssim(num_images: int, sigma0: float, round_number: int) -> float:
    """Best-image SSIM of a site: falls linearly with σ0, faster for sites with more images; round 1 a bit worse.

    The update's mean SSIM is 0.01 (n - 1) lower. So with the 0.1 prior: best-image SSIM < 0.5 ⇔ σ0 > 14.5 / n
    (site-1 14.5, site-2 7.26, site-3 3.63); mean RDLV < 0 only for site-3 (n = 4), once σ0 > 6.6.
    """
    return max(0.12, 0.95 - sigma0 * 0.031 * num_images - 0.02 * round_number)


def write_fake_run(gradinv_dir: Path, images_per_site, sigma0: float | None, accuracy_drop: float = 0.005,
                   missing: tuple[str, int] | None = None, resent: bool = False) -> None:
    """A gradinv/ folder as the server filter writes it, with metrics from :func:`synthetic_ssim`."""
    gradinv_dir.mkdir(parents=True)
    level = 20.0 if sigma0 is None else sigma0  # the NVFlare filters: leakage as at σ0 = 20
    rows = []
    for round_number in range(ROUNDS):
        for index, num_images in enumerate(images_per_site):
            site = f"site-{index + 1}"
            best = synthetic_ssim(num_images, level, round_number)
            mean = best - 0.01 * (num_images - 1)
            row = {column: "" for column in METRICS_COLUMNS}
            row.update(round=round_number, site=site, num_images=num_images, num_steps=1, status="ok",
                       decision="pass", ssim=mean, ssim_max=best, rdlv=(mean - PRIOR_SSIM) / PRIOR_SSIM,
                       rdlv_max=(best - PRIOR_SSIM) / PRIOR_SSIM, lpips=1 - mean, psnr=20 * mean,
                       leak_score=best / num_images, visibly_leaked_fraction=float(best >= 0.5),
                       update_distance=round(1 - best, 4), converged=best >= 0.5)
            if missing == (site, round_number):
                row.update(status="error", ssim="", ssim_max="", rdlv="", rdlv_max="", leak_score="")
            rows.append(row)
            if resent and (site, round_number) == ("site-2", 0):  # a re-sent result, attacked again
                rows.append(dict(row, ssim=0.0, ssim_max=0.0, seconds=99.0))
            folder = gradinv_dir / f"round_{round_number:03d}" / site
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"site": site, "round": round_number,
                                                             "ground_truth": {"prior_ssim": PRIOR_SSIM}}))
    with open(gradinv_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    final_accuracy = 0.8 - accuracy_drop * level
    (gradinv_dir / "global_metrics.csv").write_text(
        f"round,test_accuracy\n0,0.5\n1,0.6\n{ROUNDS},{final_accuracy:.4f}\n")
    (gradinv_dir / "settings.json").write_text(json.dumps({"prior": "synthetic flat prior"}))
    (gradinv_dir / "report.html").write_text("<html></html>")


class FakeRunner:
    """Stands in for the simulator subprocess: writes the run's gradinv/ folder from its settings JSON."""

    def __init__(self, fail_labels=(), missing=None, resent=False):
        self.calls: list[dict] = []
        self.fail_labels = set(fail_labels)
        self.missing = missing
        self.resent = resent

    def __call__(self, settings_json: Path, workspace: Path, log_path: Path, timeout) -> int:
        settings = json.loads(settings_json.read_text())
        self.calls.append(settings)
        log_path.write_text("fake simulation\n")
        if workspace.name in self.fail_labels:
            return 1
        sigma0 = (settings.get("privacy_args") or {}).get("sigma0") if settings["privacy"] == "gaussian" else None
        gradinv_dir = workspace / settings["name"] / SIMULATOR_JOB_DIR / "gradinv"
        write_fake_run(gradinv_dir, settings["images_per_site"], sigma0, missing=self.missing, resent=self.resent)
        return 0


@pytest.fixture
def base_settings(tmp_path):
    datalists = tmp_path / "datalists"
    datalists.mkdir()
    for site in ("site-1", "site-2", "site-3"):
        (datalists / f"{site}.json").write_text("{}")
    return JobSettings(datalists=str(datalists), images_per_site=[1, 2, 4], num_rounds=ROUNDS)


def _meta(settings, sigmas, filters=("gaussian",), calibrate_flag=False, steps=0):
    return SweepMeta(sigmas=list(sigmas), filters=list(filters), settings=settings.to_dict(),
                     command="gradinv sweep (test)", started_at="now", load_before=(1.0, 1.0, 1.0),
                     load_after=(1.0, 1.0, 1.0), cpu_count=2, calibrate=calibrate_flag, calibrate_steps=steps,
                     iterations_note="test")


def _sweep(tmp_path, settings, sigmas, filters=("gaussian",), runner=None, **kwargs):
    out = tmp_path / "sweep"
    out.mkdir(exist_ok=True)
    printed = []
    outcomes = run_sweep(plan_runs(sigmas, filters), settings, out, runner=runner or FakeRunner(),
                         echo=_collector(printed), **kwargs)
    return out, outcomes, "".join(printed).splitlines()


def _collector(printed):
    def echo(*parts, end="\n", flush=False):
        printed.append(" ".join(map(str, parts)) + end)
    return echo


def _read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


# ---------------------------------------------------------------- parsing and planning


def test_sigma_grid_and_filters_are_parsed_and_validated():
    assert parse_sigma_grid("30, 0,10,10") == [0.0, 10.0, 30.0]
    assert parse_sigma_grid("2.5") == [2.5]
    for bad in ("", "a", "-1", "nan", "inf"):
        with pytest.raises(GradinvError):
            parse_sigma_grid(bad)
    assert parse_filters("svt, gaussian") == ["gaussian", "svt"]
    with pytest.raises(GradinvError, match="unknown filter dp"):
        parse_filters("gaussian,dp")


def test_plan_puts_gaussian_per_sigma_then_each_nvflare_filter_once():
    specs = plan_runs([0.0, 12.5], ["gaussian", "percentile", "svt"])
    assert [s.label for s in specs] == ["gaussian_sigma0_0", "gaussian_sigma0_12.5", "percentile", "svt"]
    assert specs[1].privacy_args(seed=3) == {"sigma0": 12.5, "seed": 3}
    assert specs[2].privacy_args(seed=3) == {} and specs[2].sigma0 is None
    assert plan_runs([0.0, 10.0], ["svt"]) == [RunSpec("svt")]


def test_final_test_accuracy_is_the_max_round_row():
    rows = [{"round": "2", "test_accuracy": "0.7"}, {"round": "0", "test_accuracy": "0.9"},
            {"round": "3", "test_accuracy": ""}]
    assert final_test_accuracy(rows) == (2, 0.7)
    assert final_test_accuracy([]) == (None, None)


# ---------------------------------------------------------------- sweep.csv


def test_sweep_csv_has_one_row_per_run_site_round_with_the_final_accuracy(tmp_path, base_settings):
    out, outcomes, lines = _sweep(tmp_path, base_settings, [0.0, 10.0], filters=("gaussian", "percentile"))
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    assert len(lines) == 3 and lines[0].startswith("run 1/3: gaussian \u03c30=0 \u2026 done in")
    assert "site-1 (1 img) RDLV" in lines[0] and "test acc 0.8" in lines[0]

    columns, rows = _read_csv(out / "sweep.csv")
    assert list(columns) == list(SWEEP_COLUMNS)
    for required in ("filter", "sigma0", "site", "round", "num_images", "rdlv", "ssim", "lpips", "test_accuracy",
                     "leak_score", "ssim_max", "rdlv_max", "run_dir"):
        assert required in columns
    assert len(rows) == 3 * 3 * ROUNDS
    by_run = {(r["filter"], r["sigma0"]) for r in rows}
    assert by_run == {("gaussian", "0"), ("gaussian", "10"), ("percentile", "")}
    sigma10 = [r for r in rows if r["sigma0"] == "10"]
    assert {r["test_accuracy"] for r in sigma10} == {"0.75"}  # the max-round row (0.8 - 0.005 * 10), not round 0/1
    assert {r["test_accuracy_round"] for r in sigma10} == {str(ROUNDS)}
    site2 = next(r for r in sigma10 if r["site"] == "site-2" and r["round"] == "0")
    assert float(site2["ssim_max"]) == pytest.approx(synthetic_ssim(2, 10.0, 0))
    assert float(site2["prior_ssim"]) == PRIOR_SSIM
    for row in rows:  # metrics.csv's attack verdict passes through unchanged
        assert row["converged"].lower() == str(float(row["ssim_max"]) >= 0.5).lower()
        assert float(row["update_distance"]) == pytest.approx(1 - float(row["ssim_max"]), abs=1e-4)
    assert site2["run_dir"] == "runs/gaussian_sigma0_10/gradinv_demo/server/simulate_job"
    assert (out / site2["run_dir"] / "gradinv" / "metrics.csv").is_file()
    assert stat.S_IMODE((out / "sweep.csv").stat().st_mode) == 0o600


def test_each_run_gets_its_own_workspace_and_the_filter_settings(tmp_path, base_settings):
    runner = FakeRunner()
    out, _, _ = _sweep(tmp_path, base_settings, [0.0, 30.0], filters=("gaussian", "svt"), runner=runner)
    assert [(c["privacy"], c["privacy_args"]) for c in runner.calls] == [
        ("gaussian", {"sigma0": 0.0, "seed": 0}), ("gaussian", {"sigma0": 30.0, "seed": 0}), ("svt", None)]
    assert all(c["audit"] and c["attack"] for c in runner.calls)
    for label in ("gaussian_sigma0_0", "gaussian_sigma0_30", "svt"):
        marker = json.loads((out / "runs" / label / RUN_MARKER).read_text())
        assert marker["status"] == "ok"


def test_a_re_sent_update_attacked_twice_counts_once(tmp_path, base_settings):
    out, outcomes, lines = _sweep(tmp_path, base_settings, [0.0], runner=FakeRunner(resent=True))
    assert outcomes[0].repeats == 1 and "1 re-sent update(s) attacked again" in lines[0]
    rows = _read_csv(out / "sweep.csv")[1]
    site2_round0 = [r for r in rows if (r["site"], r["round"]) == ("site-2", "0")]
    assert len(rows) == 3 * ROUNDS and len(site2_round0) == 1
    assert float(site2_round0[0]["ssim_max"]) == pytest.approx(synthetic_ssim(2, 0.0, 0))  # the first one


def test_a_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, base_settings):
    out, outcomes, lines = _sweep(tmp_path, base_settings, [0.0, 10.0, 30.0],
                                  runner=FakeRunner(fail_labels={"gaussian_sigma0_10"}))
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"]
    assert "FAILED" in lines[1] and "exited with code 1" in outcomes[1].message
    assert {r["sigma0"] for r in _read_csv(out / "sweep.csv")[1]} == {"0", "30"}


def test_resume_reuses_finished_runs_with_the_same_settings(tmp_path, base_settings):
    out, _, _ = _sweep(tmp_path, base_settings, [0.0, 10.0])
    runner = FakeRunner()
    _, outcomes, lines = _sweep(tmp_path, base_settings, [0.0, 10.0, 30.0], runner=runner, resume=True)
    assert [o.status for o in outcomes] == ["reused", "reused", "ok"]
    assert len(runner.calls) == 1 and runner.calls[0]["privacy_args"]["sigma0"] == 30.0
    changed = dataclasses.replace(base_settings, training=dataclasses.replace(base_settings.training, lr=0.5))
    _, outcomes, _ = _sweep(tmp_path, changed, [0.0], runner=FakeRunner(), resume=True)
    assert outcomes[0].status == "ok"  # different settings: simulated again


def test_a_foreign_folder_in_the_way_is_not_deleted(tmp_path, base_settings):
    stranger = tmp_path / "sweep" / "runs" / "gaussian_sigma0_0"
    stranger.mkdir(parents=True)
    (stranger / "precious.txt").write_text("keep me")
    with pytest.raises(GradinvError, match="not written by gradinv sweep"):
        _sweep(tmp_path, base_settings, [0.0])
    assert (stranger / "precious.txt").is_file()


# ---------------------------------------------------------------- calibration


def _rows(outcomes):
    return [row for o in outcomes for row in o.rows]


def test_calibration_finds_the_smallest_passing_grid_value_per_site_and_criterion(tmp_path, base_settings):
    _, outcomes, _ = _sweep(tmp_path, base_settings, [0.0, 5.0, 10.0, 20.0, 30.0])
    rows = _rows(outcomes)
    # ssim criterion: worst-round best-image SSIM = 0.95 - 0.031 n σ0 < 0.5  ⇔  σ0 > 14.5 / n
    ssim = {c.site: c for c in calibrate(rows, "ssim")}
    assert {site: c.sigma0 for site, c in ssim.items()} == {"site-1": 20.0, "site-2": 10.0, "site-3": 5.0}
    assert ssim["site-1"].accuracy == pytest.approx(0.7) and ssim["site-1"].baseline_accuracy == pytest.approx(0.8)
    assert ssim["site-1"].accuracy_cost == pytest.approx(0.1)
    # rdlv criterion: the mean SSIM of sites 1 and 2 never falls below the 0.1 prior; site-3's does for σ0 > 6.6
    rdlv = {c.site: c for c in calibrate(rows, "rdlv")}
    assert rdlv["site-1"].sigma0 is None and rdlv["site-1"].verdict().startswith("> 30")
    assert rdlv["site-2"].sigma0 is None and rdlv["site-3"].sigma0 == 10.0


def test_calibration_flags_a_site_failing_again_and_never_counts_a_gap_as_a_pass():
    def row(sigma0, round_number, ssim_max, rdlv="-0.5", accuracy="0.7"):
        return {"filter": "gaussian", "sigma0": str(sigma0), "site": "site-1", "round": str(round_number),
                "num_images": "1", "ssim_max": str(ssim_max), "ssim": str(ssim_max), "rdlv": rdlv,
                "test_accuracy": accuracy}

    rows = [row(0, 0, 0.9), row(0, 1, 0.8, accuracy="0.9"),
            row(10, 0, 0.4), row(10, 1, ""),  # gap at 10: not measured, not a pass
            row(20, 0, 0.3), row(20, 1, 0.45),  # first pass
            row(30, 0, 0.6), row(30, 1, 0.2)]  # fails again (noise is random)
    (result,) = calibrate(rows, "ssim")
    assert result.sigma0 == 20.0 and result.failing_above == [30.0] and result.not_measured == [10.0]
    assert result.baseline_accuracy == 0.9
    (gap_fails,) = calibrate([row(10, 0, 0.7), row(10, 1, "")], "ssim")  # a failing round decides despite a gap
    assert gap_fails.sigma0 is None and gap_fails.not_measured == []
    (zero,) = calibrate([row(0, 0, 0.1), row(0, 1, 0.2)], "ssim")
    assert zero.sigma0 == 0.0 and zero.passes_at_zero and zero.accuracy_cost == 0.0


def test_an_rdlv_verdict_says_when_the_noisiest_run_leaks_no_visible_image():
    def row(sigma0, round_number, ssim_max, rdlv):
        return {"filter": "gaussian", "sigma0": str(sigma0), "site": "site-3", "round": str(round_number),
                "num_images": "4", "ssim_max": str(ssim_max), "ssim": str(ssim_max), "rdlv": str(rdlv)}

    # As measured in a sweep: at σ0 = 30 a reconstruction of SSIM 0.05 beats a prior of SSIM ~0.01 to its image.
    unreadable = [row(0, 0, 0.5, 6.5), row(0, 1, 0.4, 21.5), row(30, 0, 0.04, -0.8), row(30, 1, 0.05, 0.58)]
    (result,) = calibrate(unreadable, "rdlv")
    assert result.sigma0 is None and result.best_ssim_at_max_sigma0 == 0.05
    assert result.verdict().startswith("> 30 (no") and "no image is visibly leaked (best SSIM 0.05)" in result.verdict()
    (ssim,) = calibrate(unreadable, "ssim")
    assert ssim.sigma0 == 30.0 and "visibly" not in ssim.verdict()

    visible = [row(0, 0, 0.9, 6.5), row(30, 0, 0.7, 0.9)]  # still visibly leaked: the verdict says no more
    (result,) = calibrate(visible, "rdlv")
    assert result.verdict() == "> 30 (no \u03c30 up to 30 suffices)"


def test_bisection_points_are_the_midpoints_of_every_bracket(tmp_path, base_settings):
    _, outcomes, _ = _sweep(tmp_path, base_settings, [0.0, 10.0, 30.0])
    rows = _rows(outcomes)
    # ssim: site-1 fails at 10 passes at 30 → 20; site-2 fails at 0 passes at 10 → 5; site-3 likewise → 5.
    # rdlv: site-3 fails at 0, passes at 10 → 5; sites 1 and 2 never pass (no bracket).
    assert bisection_points(rows, ["ssim"]) == [5.0, 20.0]
    assert bisection_points(rows, ["rdlv", "ssim"]) == [5.0, 20.0]
    assert bisection_points(rows, ["rdlv"]) == [5.0]
    assert bisection_points(rows, ["ssim"], min_gap=15.0) == [20.0]


def test_calibrate_by_bisection_runs_the_midpoints_and_refines_the_result(tmp_path, base_settings):
    out, outcomes, _ = _sweep(tmp_path, base_settings, [0.0, 10.0, 30.0])
    runner = FakeRunner()
    meta = _meta(base_settings, [0.0, 10.0, 30.0], calibrate_flag=True, steps=2)
    printed = []
    extra = calibrate_by_bisection(outcomes, base_settings, out, 2, runner=runner, meta=meta,
                                   echo=_collector(printed))
    # step 1: 5 (sites 2 and 3, both criteria) and 20 (site-1, ssim); step 2: site-1 (ssim) passes at 20 → 15;
    # site-2 (ssim) fails at 5 → 7.5; site-3 (ssim) passes at 5 → 2.5; site-3 (rdlv) fails at 5 → 7.5.
    assert [o.spec.sigma0 for o in extra] == [5.0, 20.0, 2.5, 7.5, 15.0]
    assert all(o.spec.origin == "bisection" for o in extra) and meta.bisection_runs == [5.0, 20.0, 2.5, 7.5, 15.0]
    assert "calibrate: step 1/2: 2 extra run(s) at \u03c30 = 5, 20" in "".join(printed)
    rows = _rows(outcomes + extra)
    # the true thresholds are 14.5, 7.26 and 3.63 (ssim) and 6.6 (site-3, rdlv)
    assert {c.site: c.sigma0 for c in calibrate(rows, "ssim")} == {"site-1": 15.0, "site-2": 7.5, "site-3": 5.0}
    assert {c.site: c.sigma0 for c in calibrate(rows, "rdlv")}["site-3"] == 7.5
    rows = _read_csv(out / "sweep.csv")[1]
    assert {r["origin"] for r in rows if r["sigma0"] == "7.5"} == {"bisection"}


# ---------------------------------------------------------------- the no-ground-truth score


def test_rank_correlation_counts_only_rows_with_both_values_and_says_when_undefined():
    rows = [{"leak_score": str(x), "rdlv": str(2 * x + 1)} for x in (0.1, 0.4, 0.2, 0.9)]
    rows += [{"leak_score": "", "rdlv": "3"}, {"leak_score": "0.5", "rdlv": "nan"}]
    result = rank_correlation(rows, "leak_score", "rdlv")
    assert result.n == 4 and result.rho == pytest.approx(1.0)
    inverse = rank_correlation([{"a": x, "b": -x} for x in (1, 2, 3, 5)], "a", "b")
    assert inverse.rho == pytest.approx(-1.0) and "n = 4" in inverse.text()
    assert rank_correlation(rows[:2], "leak_score", "rdlv").rho is None
    constant = rank_correlation([{"a": 1, "b": x} for x in (1, 2, 3)], "a", "b")
    assert constant.rho is None and "constant" in constant.text()


# ---------------------------------------------------------------- the report


def test_report_is_self_contained_private_and_links_every_run(tmp_path, base_settings):
    out, outcomes, _ = _sweep(tmp_path, base_settings, [0.0, 10.0, 30.0], filters=("gaussian", "svt"))
    paths = write_outputs(out, outcomes, _meta(base_settings, [0.0, 10.0, 30.0], ("gaussian", "svt")))
    report = out / "sweep_report.html"
    assert paths["report"] == report
    assert (out / "privacy_utility.png").is_file() and (out / "ssim_vs_sigma0.png").is_file()
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    html = report.read_text()
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2
    assert not re.findall(r'src="(?!data:)', html)  # every image embedded
    links = re.findall(r'href="([^"#][^"]*)"', html)
    assert sorted(link for link in links if link.endswith("report.html")) == sorted(
        f"runs/{label}/gradinv_demo/server/simulate_job/gradinv/report.html"
        for label in ("gaussian_sigma0_0", "gaussian_sigma0_10", "gaussian_sigma0_30", "svt"))
    assert all((out / link).is_file() for link in links)
    for text in ("synthetic flat prior", "Criterion rdlv", "Criterion ssim", "no image visibly leaked",
                 "&gt; 30 (no \u03c30 up to 30 suffices)", "Spearman", "n = ", "SVTPrivacy", "Calibrated noise",
                 "lr 0.001, 1 epoch(s), batch all images, seed 0", "preset auto (fast for bn_cnn), overrides none",
                 "the attack did not converge in 2 update(s) at the calibrated \u03c30"):
        assert text in html or text in html.replace("&#x27;", "'"), text


def test_report_survives_a_sweep_without_gaussian_runs_or_successes(tmp_path, base_settings):
    out, outcomes, _ = _sweep(tmp_path, base_settings, [0.0], filters=("percentile",),
                              runner=FakeRunner(fail_labels={"percentile"}))
    paths = write_outputs(out, outcomes, _meta(base_settings, [0.0], ("percentile",)))
    html = paths["report"].read_text()
    assert "Failed runs" in html and "undefined" in html and "plot (RDLV)" not in paths


# ---------------------------------------------------------------- the command


def test_job_settings_come_from_a_json_file_or_an_exported_job_folder(tmp_path):
    job = tmp_path / "exported"
    job.mkdir()
    (job / "gradinv_job.json").write_text(json.dumps({"images_per_site": [1, 2], "resolution": 32, "num_rounds": 1}))
    settings = load_job_settings(job)
    assert list(settings.images_per_site) == [1, 2] and settings.resolution == 32
    (tmp_path / "bad.json").write_text(json.dumps({"resolutoin": 32}))
    with pytest.raises(GradinvError, match="bad.json: invalid job settings: unknown field\\(s\\) 'resolutoin'"):
        load_job_settings(tmp_path / "bad.json")
    (tmp_path / "flat.json").write_text(json.dumps({"lr": 0.01}))  # a filter / training setting at the top
    with pytest.raises(GradinvError, match="'lr' belongs under 'training'"):
        load_job_settings(tmp_path / "flat.json")
    (tmp_path / "typo.json").write_text(json.dumps({"filter": {"mode": "gat"}}))
    with pytest.raises(GradinvError, match="filter: .*mode must be one of"):
        load_job_settings(tmp_path / "typo.json")
    with pytest.raises(GradinvError, match="no gradinv_job.json"):
        load_job_settings(tmp_path)


def test_sweep_settings_force_ground_truth_and_apply_rounds_and_iterations(base_settings):
    base = dataclasses.replace(base_settings, audit=False,
                               filter={"attack_overrides": {"lr": 0.05}, "report": False, "mode": "audit"})
    settings = sweep_base_settings(base, rounds=3, iterations=120)
    assert settings.audit and settings.num_rounds == 3 and settings.filter.report
    assert settings.filter.mode == "audit"  # the job's other filter settings are kept
    assert settings.filter.attack_overrides == {"lr": 0.05, "iterations": 120, "restarts": 1}  # one run per update
    assert sweep_base_settings(base, None, None).filter.attack_overrides == {"lr": 0.05, "restarts": 1}
    base = dataclasses.replace(base, filter={"attack_overrides": {"iterations": 77, "restarts": 2}})
    assert sweep_base_settings(base, None, None).filter.attack_overrides == {"iterations": 77, "restarts": 2}
    assert sweep_base_settings(base, None, 0).filter.attack_overrides == {"restarts": 2}  # the preset's count
    with pytest.raises(GradinvError):
        sweep_base_settings(base, rounds=0, iterations=None)


@pytest.mark.parametrize("argv, message", [
    (["--sigma0", "0,x"], "--sigma0 takes comma-separated numbers"),
    (["--filters", "gaussian,laplace"], "unknown filter laplace"),
    (["--filters", "svt", "--calibrate"], "--calibrate needs the gaussian filter"),
    (["--rounds", "0"], "--rounds must be >= 1"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["sweep", "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradinv sweep: error:") and message in err and "\n" not in err


# ---------------------------------------------------------------- one real sweep


@pytest.mark.e2e
def test_a_small_real_sweep_writes_the_csv_plots_and_report(tmp_path, capsys):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "sweep_e2e", "images_per_site": [1, 2], "num_rounds": 1, "resolution": 32,
                               "filter": {"attack_overrides": {"iterations_per_image_cap": 1}, "save_images": False}}))
    out = tmp_path / "sweep"
    started = time.monotonic()
    code = main(["sweep", "--job", str(job), "--sigma0", "0,30", "--iterations", "50", "--out", str(out)])
    elapsed = time.monotonic() - started
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "run 1/2: gaussian \u03c30=0 \u2026 done in" in printed and "run 2/2: gaussian \u03c30=30" in printed
    columns, rows = _read_csv(out / "sweep.csv")
    assert set(SWEEP_COLUMNS) <= set(columns)
    assert len(rows) == 2 * 2 * 1
    assert {(r["sigma0"], r["site"], r["round"]) for r in rows} == {
        (s, site, "0") for s in ("0", "30") for site in ("site-1", "site-2")}
    for row in rows:
        assert row["filter"] == "gaussian" and row["num_images"] in ("1", "2")
        for column in ("ssim", "lpips", "test_accuracy", "leak_score", "ssim_max", "prior_ssim"):
            assert row[column] != "", (column, row)
        # RDLV is undefined (empty, never made up) where SSIM(prior, original) <= 0, which happens at 32 px
        assert (row["rdlv"] != "") == (float(row["prior_ssim"]) > 0), row
        assert row["test_accuracy_round"] == "1"
        assert (out / row["run_dir"] / "gradinv" / "report.html").is_file()
    html = (out / "sweep_report.html").read_text()
    assert stat.S_IMODE((out / "sweep_report.html").stat().st_mode) == 0o600
    assert "<script" not in html.lower() and "Calibrated noise" in html and "Spearman" in html
    assert (out / "privacy_utility.png").stat().st_size > 0 and (out / "ssim_vs_sigma0.png").stat().st_size > 0
    print(f"real sweep of 2 runs took {elapsed:.0f} s")
