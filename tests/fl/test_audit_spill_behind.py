"""Audit mode's spiller thread: updates are written to disk off FedAvg's path, within the in-memory bound, and none
is lost when a write fails or the run ends while one is being written."""

from __future__ import annotations

import csv
import threading

import pytest
from nvflare.apis.event_type import EventType

import gradinv.fl.spill as spill_module
from gradinv.fl.scheduler import BackgroundAudits

from .fl_helpers import (
    FakeServerEngine,
    client_result,
    data_of,
    global_model,
    result_context,
    sample_images,
    send_round,
)
from .test_audit_queue import SITES, _Recorder, _wait_for
from .test_filter import make_filter

_NO_SPACE = OSError(28, "No space left on device")


class _SpillerRecorder(_Recorder):
    """A recorder whose writes by the spiller thread wait for ``spill_gate`` (or fail, with ``fail_spill``)."""

    def __init__(self, tmp_path, fail_spill=False):
        super().__init__(tmp_path)
        self.spill_gate = threading.Event()
        self.fail_in_spiller = fail_spill
        self.writers: dict[str, str] = {}

    def spill(self, job):
        spiller = threading.current_thread().name == "gradinv-spill"
        if spiller:
            self.spill_gate.wait(10)
            if self.fail_in_spiller:
                raise _NO_SPACE
        self.writers[job] = "spiller" if spiller else "caller"
        return super().spill(job)


def _queue(recorder, **kwargs):
    recorder.queue = BackgroundAudits(recorder.attack, lambda item, exc: None, recorder.spill, recorder.account,
                                      **kwargs)
    return recorder.queue


def test_updates_wait_in_memory_within_the_bound_for_the_spiller_and_are_all_attacked_from_disk(tmp_path):
    recorder = _SpillerRecorder(tmp_path)
    queue = _queue(recorder, max_in_memory=2, spilled_only=True)
    for number in range(6):
        queue.submit(0, SITES[number % 5], f"update-{number}")
        assert queue.in_memory() <= 2
    # The first two wait in memory for the (held) spiller; the bound full, the caller wrote the other four itself.
    assert queue.in_memory() == 2
    assert sorted(recorder.writers) == [f"update-{n}" for n in range(2, 6)]
    recorder.spill_gate.set()
    _wait_for(lambda: queue.in_memory() == 0)
    assert recorder.writers["update-0"] == recorder.writers["update-1"] == "spiller"
    recorder.release.set()
    assert queue.drain(timeout_s=30) == []
    assert len(recorder.attacked) == 6 and all(spilled for *_, spilled in recorder.attacked)
    assert recorder.accounted == [] and recorder.peak_in_memory <= 2


def test_a_full_disk_for_the_spiller_costs_each_update_one_not_attacked_row_and_nothing_else(tmp_path):
    recorder = _SpillerRecorder(tmp_path, fail_spill=True)
    recorder.spill_gate.set()
    queue = _queue(recorder, max_in_memory=2, spilled_only=True)
    queue.submit(0, "site-1", "a")
    queue.submit(0, "site-2", "b")
    _wait_for(lambda: len(recorder.accounted) == 2)
    recorder.release.set()
    assert queue.drain(timeout_s=30) == []
    assert sorted((site, status) for _, site, status, _ in recorder.accounted) == [
        ("site-1", "not_attacked"), ("site-2", "not_attacked")]
    assert all("could not be written for an attack process" in reason and "No space left on device" in reason
               for *_, reason in recorder.accounted)
    assert recorder.attacked == [] and queue.in_memory() == 0


def test_an_update_the_spiller_cannot_write_is_attacked_from_memory_by_an_in_process_worker(tmp_path):
    recorder = _SpillerRecorder(tmp_path, fail_spill=True)
    recorder.spill_gate.set()
    queue = _queue(recorder, max_in_memory=2)
    queue.submit(0, "site-1", "a")  # under attack (held)
    _wait_for(lambda: recorder.peak_in_memory == 1)
    queue.submit(0, "site-2", "b")  # waits: the spiller's write fails, it stays in memory
    recorder.release.set()
    assert queue.drain(timeout_s=30) == []
    assert sorted(recorder.attacked) == [(0, "site-1", False), (0, "site-2", False)] and recorder.accounted == []
    assert queue.in_memory() == 0


def test_the_drain_deadline_keeps_the_update_being_spilled_and_the_ones_waiting_in_memory(tmp_path):
    recorder = _SpillerRecorder(tmp_path)
    queue = _queue(recorder, max_in_memory=2, spilled_only=True)
    queue.submit(0, "site-1", "a")  # being written by the held spiller
    queue.submit(0, "site-2", "b")  # waiting in memory
    threading.Timer(0.3, recorder.spill_gate.set).start()
    left = queue.drain(timeout_s=0.05)
    assert sorted(item.site for item in left) == ["site-1", "site-2"] and recorder.attacked == []
    assert sorted((site, status) for _, site, status, _ in recorder.accounted) == [
        ("site-1", "not_attacked"), ("site-2", "not_attacked")]
    assert all("kept at" in reason for *_, reason in recorder.accounted)
    assert sorted(path.name for path in tmp_path.glob("*.spilled")) == ["a.spilled", "b.spilled"]
    assert queue.in_memory() == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_a_full_disk_in_the_job_writes_one_row_per_update_and_the_job_goes_on(tmp_path, monkeypatch, workers):
    def full_disk(update, global_file):
        raise _NO_SPACE

    monkeypatch.setattr(spill_module, "spill_update", full_disk)
    engine, model = FakeServerEngine(tmp_path), global_model()
    flt = make_filter(mode="audit", audit_max_pending=1, audit_workers=workers, num_threads=1)
    send_round(engine, flt, model)
    for number, site in enumerate(SITES[:3]):
        result = client_result(model, *sample_images(2, seed=number))
        sent = data_of(result)
        assert data_of(flt.process(result, result_context(engine, site))).keys() == sent.keys()  # passed on
    flt.handle_event(EventType.END_RUN, engine.new_context())
    out_dir = tmp_path / "job-1" / "gradinv"
    with open(out_dir / "metrics.csv") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["site"])
    assert [row["site"] for row in rows] == SITES[:3]  # one row each
    failed = [row for row in rows if row["status"] == "not_attacked"]
    assert failed and all("No space left on device" in row["reason"] for row in failed)
    if workers:  # the attack processes read updates from disk only: none could be attacked
        assert len(failed) == 3
    else:  # the in-process thread attacks the ones it took from memory
        assert {row["status"] for row in rows} <= {"ok", "not_attacked"}
    assert list((out_dir / "pending").glob("round_*")) == []
