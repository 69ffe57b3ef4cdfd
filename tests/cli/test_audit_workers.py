"""``gradinv audit RUN_DIR --workers N``: attack processes in parallel, the same rows and report as one worker."""

from __future__ import annotations

import csv
import shutil
import threading

from nvflare.apis.event_type import EventType

from gradinv.cli import main as gradinv_main
from gradinv.fl.spill import spilled_updates

from ..fl.test_audit_queue import _run_audit_job


def _rows(out_dir):
    """metrics.csv's rows in the file's order."""
    with open(out_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _run_left_spilled(tmp_path):
    """An audit-mode run (bn_cnn, one round, three sites) whose drain deadline left every update spilled."""
    flt, engine, out_dir, release = _run_audit_job(tmp_path, True, report=True, drain_timeout_s=0.0, num_threads=1)
    threading.Timer(0.2, release.set).start()  # the attack under way at the deadline is stopped at its first step
    flt.handle_event(EventType.END_RUN, engine.new_context())
    assert [row["status"] for row in _rows(out_dir)] == ["not_attacked"] * 3
    return out_dir


def test_two_workers_write_the_rows_and_report_one_worker_writes(tmp_path, capsys):
    one = _run_left_spilled(tmp_path / "one")
    two = tmp_path / "two" / "gradinv"
    shutil.copytree(one, two)
    assert len(spilled_updates(two)) == 3

    assert gradinv_main(["audit", str(one)]) == 0
    assert gradinv_main(["audit", str(two), "--workers", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == printed[4:7] and all(line.endswith(": ok") for line in printed[:3])

    def unvarying(out_dir):  # the attack's wall time differs from run to run
        return [{k: v for k, v in row.items() if k != "seconds"} for row in _rows(out_dir)]

    assert unvarying(two) == unvarying(one)
    assert [row["status"] for row in _rows(two)] == ["ok"] * 3
    assert list((two / "pending").iterdir()) == [] and (two / "report.html").exists()


def test_a_worker_count_below_one_is_one_error_line(tmp_path, capsys):
    out_dir = _run_left_spilled(tmp_path)
    assert gradinv_main(["audit", str(out_dir), "--workers", "0"]) != 0
    assert capsys.readouterr().err.strip().endswith("error: workers must be an integer >= 1, got 0")
    assert len(spilled_updates(out_dir)) == 3  # nothing was attacked or deleted
