"""Audit mode's attack processes: rows written by the processes, and a killed process costs one ``error`` row."""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import stat
import threading
import time

import numpy as np
from nvflare.apis.dxo import DataKind
from nvflare.apis.event_type import EventType

from gradinv.fl import filter as filter_module
from gradinv.fl import worker_pool
from gradinv.fl.scheduler import Queued
from gradinv.fl.spill import RoundSpiller, SpilledGlobal, load_update, pending_dir
from gradinv.fl.worker_pool import AttackProcesses, default_worker_count

from .fl_helpers import (
    FakeServerEngine,
    arrays_equal,
    client_result,
    data_of,
    global_model,
    result_context,
    sample_images,
    send_round,
)
from .test_audit_queue import SITES, _run_audit_job
from .test_filter import make_filter


def _rows(out_dir):
    with open(out_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_two_attack_processes_write_one_row_per_update_and_a_killed_one_costs_an_error_row(tmp_path):
    flt, engine, out_dir, _ = _run_audit_job(tmp_path, False, audit_workers=2, num_threads=1)
    flt.handle_event(EventType.END_RUN, engine.new_context())
    rows = _rows(out_dir)
    assert sorted((row["site"], row["status"]) for row in rows) == [(site, "ok") for site in SITES[:3]]
    assert list((out_dir / "pending").iterdir()) == []

    # A process that dies under an update: that update gets an error row naming its kept file, the pool goes on.
    auditor = flt._auditor
    slow = dataclasses.replace(flt.settings, attack_overrides={"iterations": 10**6})
    pool = AttackProcesses(1, out_dir, auditor.model, slow, auditor)
    spilled = RoundSpiller(pending_dir(out_dir))(_an_update(flt))
    attacking = threading.Thread(target=pool.attack, args=(Queued(7, "site-9", path=spilled),))
    attacking.start()
    while not pool._started:
        time.sleep(0.05)
    pool._started[0][0].kill()
    attacking.join(60)
    pool.close()
    last = _rows(out_dir)[-1]
    assert (last["round"], last["site"], last["status"]) == ("7", "site-9", "error")
    assert "attack process died" in last["reason"] and spilled.name in last["reason"] and spilled.exists()


def _an_update(flt):
    from gradinv.fl.auditor import UpdateToAudit

    base = dict(next(iter(flt._base_by_round.values())))
    return UpdateToAudit(7, "site-9", base, {name: value * 0 for name, value in base.items()}, {})


def test_an_attack_process_unpickles_a_model_of_torchvision_classes_and_runs_below_the_server(tmp_path):
    # torchvision imports only behind gradinv's shim beside a CPU torch; a process that unpickled the paper's
    # ResNet-18 first died before its first update. An unreadable update tells the two apart: a live process
    # writes that update's row itself.
    from gradinv.fl.auditor import LeakageAuditor
    from gradinv.fl.settings import AuditSettings
    from gradinv.models import build_model

    settings = AuditSettings(model="resnet18", input_shape=(1, 16, 16), prior="none", progress=False, num_threads=1)
    model = build_model("resnet18", resolution=16)
    auditor = LeakageAuditor(tmp_path, model, settings)
    broken = pending_dir(tmp_path) / "round_00000_site-1_000000000000.npz"
    broken.write_bytes(b"not an npz")
    pool = AttackProcesses(1, tmp_path, model, settings, auditor)
    try:
        pool.attack(Queued(0, "site-1", path=broken))
        process = pool._started[0][0]
        # FedAvg's threads get the cores first: the attack process is niced below the server's own priority.
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(19, own + worker_pool._NICENESS)
    finally:
        pool.close()
    (row,) = _rows(tmp_path)
    assert row["status"] == "error" and "is not a readable spilled update" in row["reason"]


def test_attack_processes_without_a_model_to_send_make_the_update_invalid_not_lost(tmp_path):
    class NoModelEngine(FakeServerEngine):
        def get_component(self, component_id):
            return None

    engine, model = NoModelEngine(tmp_path), global_model()
    flt = make_filter(mode="audit", model=None, audit_workers=1)  # the job's own model, but this job has none
    send_round(engine, flt, model)
    flt.process(client_result(model, *sample_images(2)), result_context(engine, "site-1"))
    flt.handle_event(EventType.END_RUN, engine.new_context())
    (row,) = _rows(tmp_path / "job-1" / "gradinv")
    assert (row["site"], row["status"]) == ("site-1", "invalid") and "no model persistor" in row["reason"]


def test_audit_workers_none_means_one_process_per_gpu_and_one_without_gpus(tmp_path, monkeypatch):
    for gpus, expected in ((0, 1), (1, 1), (3, 3)):
        monkeypatch.setattr(worker_pool, "gpu_count", lambda gpus=gpus: gpus)
        assert default_worker_count() == expected

    started = []

    class Recorded(AttackProcesses):
        def __init__(self, count, *args):
            started.append(count)
            super().__init__(count, *args)

    monkeypatch.setattr(worker_pool, "gpu_count", lambda: 0)
    monkeypatch.setattr(filter_module, "AttackProcesses", Recorded)
    engine, model = FakeServerEngine(tmp_path), global_model()
    flt = make_filter(mode="audit")  # audit_workers=None: on this CPU-only "server", one process, not the thread
    send_round(engine, flt, model)
    flt.process(client_result(model, *sample_images(2)), result_context(engine, "site-1"))
    flt.handle_event(EventType.END_RUN, engine.new_context())
    assert started == [1]
    (row,) = _rows(tmp_path / "job-1" / "gradinv")
    assert (row["site"], row["status"]) == ("site-1", "ok")


class _RecordingProcesses:
    """Stands in for the attack processes: reads each update from disk as a process would, and records it."""

    seen: list = []

    def __init__(self, count, out_dir, model, settings, auditor):
        type(self).seen = []

    def attack(self, item):
        self.seen.append(load_update(item.path))

    def close(self):
        pass


def test_with_attack_processes_the_global_model_is_kept_on_disk_only_and_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(filter_module, "AttackProcesses", _RecordingProcesses)
    engine, model = FakeServerEngine(tmp_path), global_model()
    flt = make_filter(mode="audit", audit_workers=1)
    flt.handle_event(EventType.START_RUN, engine.new_context())
    sent = send_round(engine, flt, model)
    kept = flt._base_by_round[0]
    assert isinstance(kept, SpilledGlobal) and stat.S_IMODE(kept.path.stat().st_mode) == 0o600
    assert arrays_equal(kept, sent)

    # Full weights are diffed against the global model read back from its file.
    result = client_result(model, *sample_images(2), kind=DataKind.WEIGHTS)
    trained = data_of(result)
    flt.process(result, result_context(engine, "site-1"))
    flt.handle_event(EventType.END_RUN, engine.new_context())
    (update,) = _RecordingProcesses.seen
    assert arrays_equal(update.global_state, sent)
    expected = {name: trained[name].astype(np.float64) - sent[name].astype(np.float64) for name in trained}
    assert arrays_equal(update.diff, expected)


def test_a_full_disk_when_the_global_model_is_captured_keeps_it_in_memory(tmp_path, monkeypatch):
    def full_disk(self, round_num, global_state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filter_module, "AttackProcesses", _RecordingProcesses)
    monkeypatch.setattr(RoundSpiller, "capture", full_disk)
    engine, model = FakeServerEngine(tmp_path), global_model()
    flt = make_filter(mode="audit", audit_workers=1)
    flt.handle_event(EventType.START_RUN, engine.new_context())
    sent = send_round(engine, flt, model)
    assert isinstance(flt._base_by_round[0], dict) and arrays_equal(flt._base_by_round[0], sent)
    flt.process(client_result(model, *sample_images(2)), result_context(engine, "site-1"))
    flt.handle_event(EventType.END_RUN, engine.new_context())
    (update,) = _RecordingProcesses.seen  # the update and its global model were spilled when the disk allowed
    assert arrays_equal(update.global_state, sent)
