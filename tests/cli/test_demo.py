"""``gradinv demo``'s flags build the job's settings: the demo's defaults, the dedicated flags, ``--filter-arg``."""

import re

import pytest

from gradinv.cli import main
from gradinv.fl import job
from gradinv.fl.settings import AuditSettings

DEMO_ATTACK_OVERRIDES = {"iterations_per_image_cap": 1, "restarts": 1, "polish": 0.5}


@pytest.fixture
def exported(monkeypatch, tmp_path):
    """Run ``gradinv demo --export`` with the given flags; returns the JobSettings it would have exported.

    ``export_job`` is replaced, so nothing is written."""
    captured = []

    def fake_export(settings, out_dir):
        captured.append(settings)
        return out_dir

    monkeypatch.setattr(job, "export_job", fake_export)

    def run(*flags: str) -> job.JobSettings:
        assert main(["demo", "--export", str(tmp_path), *flags]) == 0
        return captured.pop()

    return run


def test_the_default_demo_is_the_default_job_with_the_demos_attack_budget(exported):
    settings = exported()
    assert settings == job.JobSettings(filter={"attack_overrides": DEMO_ATTACK_OVERRIDES})


def test_dedicated_flags_and_filter_args_reach_the_filter_settings(exported):
    settings = exported("--rounds", "3", "--images-per-site", "1,2", "--iterations", "50", "--mode", "audit",
                        "--block-threshold", "0.2", "--no-images", "--filter-arg", "fail_closed=true",
                        "--filter-arg", "prior=none", "--filter-arg", "audit_workers=2",
                        "--filter-arg", "drain_timeout_s=30", "--filter-arg", "input_shape=[1, 64, 64]")
    assert settings.num_rounds == 3 and settings.images_per_site == (1, 2)
    assert settings.filter == AuditSettings(
        attack_overrides={**DEMO_ATTACK_OVERRIDES, "iterations": 50}, mode="audit", block_threshold=0.2,
        save_images=False, fail_closed=True, prior="none", audit_workers=2, drain_timeout_s=30,
        input_shape=(1, 64, 64))


def test_a_filter_arg_attack_overrides_replaces_the_demos_own(exported):
    settings = exported("--filter-arg", 'attack_overrides={"iterations": 7}')
    assert settings.filter.attack_overrides == {"iterations": 7}


@pytest.mark.parametrize("flags, message", [
    (["--filter-arg", "fail_closd=true"], "--filter-arg takes KEY=VALUE with KEY one of model, input_shape"),
    (["--filter-arg", "fail_closed"], "--filter-arg takes KEY=VALUE"),
    (["--filter-arg", "mode=gate", "--mode", "audit"], "the filter setting mode is given twice"),
    (["--filter-arg", "prior=none", "--filter-arg", "prior=sample"], "the filter setting prior is given twice"),
    (["--iterations", "5", "--filter-arg", 'attack_overrides={"restarts": 2}'], "attack_overrides is given twice"),
    (["--filter-arg", "audit_workers=-1"], "invalid job settings: filter: .*audit_workers must be an integer >= 0"),
    (["--filter-arg", "fail_closed=yes"], "fail_closed must be true or false, got 'yes'"),
    (["--filter-arg", "audit_datalists=/data"], "filter.audit_datalists is set by the job"),
])
def test_bad_filter_args_are_one_line_and_exit_2(exported, capsys, tmp_path, flags, message):
    assert main(["demo", "--export", str(tmp_path), *flags]) == 2  # nothing exported (see the fixture)
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradinv demo: error:") and "\n" not in err
    assert re.search(message, err), err


def test_the_printed_table_marks_an_attack_that_did_not_converge(tmp_path, capsys):
    from gradinv.artifact_layout import METRICS_COLUMNS
    from gradinv.cli.demo import _print_summary

    metrics = tmp_path / "metrics.csv"
    rows = [{"round": "0", "site": "site-1", "num_images": "1", "ssim": "0.99", "update_distance": "0.0008",
             "converged": "true", "decision": "pass", "seconds": "12"},
            {"round": "0", "site": "site-3", "num_images": "4", "ssim": "0.12", "update_distance": "0.64",
             "converged": "false", "decision": "pass", "seconds": "80"},
            {"round": "0", "site": "site-2", "status": "invalid", "decision": "pass"}]
    lines = [",".join(METRICS_COLUMNS)] + [",".join(row.get(column, "") for column in METRICS_COLUMNS) for row in rows]
    metrics.write_text("\n".join(lines) + "\n")

    _print_summary(metrics)

    lines = capsys.readouterr().out.splitlines()
    site_lines = {line.split()[1]: line for line in lines if re.match(r"\s+0 site-", line)}
    assert site_lines["site-1"].endswith(" converged")
    assert site_lines["site-3"].endswith("NOT converged (d=0.64)")
    assert site_lines["site-2"].endswith(" -")
    assert any("1 attack(s) did not converge" in line and "not evidence that the hospital is safe" in line
               for line in lines)
