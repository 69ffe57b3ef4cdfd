"""``poc_helper.py export``: the POC job's settings, audit mode included, go through JobSettings (no POC started)."""

import importlib.util
import json
import re

import pytest

from .poc_test_helpers import HELPER


@pytest.fixture(scope="module")
def poc_helper():
    spec = importlib.util.spec_from_file_location("poc_helper", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _server_filter_arguments(job_dir):
    config = json.loads((job_dir / "app" / "config" / "config_fed_server.json").read_text())
    return [component["args"] for entry in config["task_result_filters"] for component in entry["filters"]]


def test_export_in_audit_mode_with_attack_processes(poc_helper, datalists, tmp_path, capsys):
    out = tmp_path / "jobs"
    assert poc_helper.main(["export", "--datalists", str(datalists), "--out", str(out), "--rounds", "3",
                            "--iterations", "40", "--audit-workers", "2"]) == 0
    job_dir = out / "gradinv_poc"
    assert _server_filter_arguments(job_dir) == [{"attack_overrides": {"iterations": 40}, "mode": "audit",
                                                  "audit_datalists": str(datalists), "audit_workers": 2,
                                                  "prior": "sample-classes"}]
    settings = (job_dir / "gradinv_job.json").read_text()
    assert re.search(r'"num_rounds": *3\b', settings)  # poc.sh reads the rounds to check with this pattern
    assert "sites: site-1, site-2; rounds: 3; attack iterations: 40" in capsys.readouterr().out


def test_export_without_audit_workers_keeps_the_gate(poc_helper, datalists, tmp_path):
    out = tmp_path / "jobs"
    assert poc_helper.main(["export", "--datalists", str(datalists), "--out", str(out)]) == 0
    assert _server_filter_arguments(out / "gradinv_poc") == [{"audit_datalists": str(datalists),
                                                             "prior": "sample-classes"}]


def test_a_bad_audit_workers_count_is_one_error_line(poc_helper, datalists, tmp_path, capsys):
    out = tmp_path / "jobs"
    assert poc_helper.main(["export", "--datalists", str(datalists), "--out", str(out), "--audit-workers", "-1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("poc: error: invalid job settings: filter:") and "\n" not in err
    assert "audit_workers must be an integer >= 0" in err
    assert not out.exists()
