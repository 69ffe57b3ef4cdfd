"""Audit mode at scale: the pending-queue bound, spilling, the drain deadline, and ``gradinv audit RUN_DIR``."""

from __future__ import annotations

import csv
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from nvflare.apis.event_type import EventType

from gradinv.cli import main as gradinv_main
from gradinv.fl.auditor import UpdateToAudit
from gradinv.fl.scheduler import BackgroundAudits
from gradinv.fl.spill import RoundSpiller, load_update, pending_dir, spilled_updates

from .fl_helpers import FakeServerEngine, client_result, global_model, result_context, sample_images, send_round
from .test_filter import make_filter

SITES = [f"site-{i}" for i in range(1, 6)]


class _Recorder:
    """Callbacks of a BackgroundAudits whose attacks block until released."""

    def __init__(self, tmp_path: Path, fail_spill: bool = False):
        self.release = threading.Event()
        self.attacked: list[tuple[int, str, bool]] = []
        self.accounted: list[tuple[int, str, str, str]] = []
        self.folder, self.fail_spill = tmp_path, fail_spill
        self.queue = None
        self.peak_in_memory = 0

    def attack(self, item):
        self.peak_in_memory = max(self.peak_in_memory, self.queue.in_memory())
        self.release.wait(10)
        self.attacked.append((item.round_num, item.site, item.path is not None))

    def spill(self, job):
        if self.fail_spill:
            raise OSError(28, "No space left on device")
        path = self.folder / f"{job}.spilled"
        path.write_text(job)
        return path

    def account(self, item, status, reason):
        self.accounted.append((item.round_num, item.site, status, reason))


def _queue(recorder, **kwargs):
    recorder.queue = BackgroundAudits(recorder.attack, lambda item, exc: None, recorder.spill, recorder.account,
                                      **kwargs)
    return recorder.queue


def _wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_in_memory_updates_never_exceed_the_bound_and_all_are_attacked(tmp_path):
    recorder = _Recorder(tmp_path)
    queue = _queue(recorder, max_in_memory=2)
    for number in range(7):
        queue.submit(number // 5, SITES[number % 5], f"update-{number}")
        assert queue.in_memory() <= 2
    # Only the update under attack stays in memory: the spiller thread writes the waiting ones.
    _wait_for(lambda: queue.in_memory() == 1)
    assert len(list(tmp_path.glob("*.spilled"))) == 6
    recorder.release.set()
    assert queue.drain(timeout_s=30) == []
    assert len(recorder.attacked) == 7 and recorder.accounted == []
    assert sum(spilled for *_, spilled in recorder.attacked) == 6
    assert recorder.peak_in_memory <= 2 and queue.in_memory() == 0


def test_drain_deadline_accounts_for_what_is_left_as_not_attacked(tmp_path):
    recorder = _Recorder(tmp_path)
    queue = _queue(recorder, max_in_memory=3)
    for number in range(5):
        queue.submit(0, SITES[number], f"update-{number}")
    threading.Timer(0.3, recorder.release.set).start()  # the attack under way at the deadline finishes
    left = queue.drain(timeout_s=0.05)
    assert len(left) == 4 and len(recorder.attacked) == 1
    assert [status for *_, status, _ in recorder.accounted] == ["not_attacked"] * 4
    assert all("drain_timeout_s=0.05" in reason for *_, reason in recorder.accounted)
    assert len(list(tmp_path.glob("*.spilled"))) == 4  # the in-memory ones were spilled to be attacked later
    assert queue.in_memory() == 0
    with pytest.raises(RuntimeError, match="draining"):
        queue.submit(1, "site-1", "late")


def test_latest_per_site_skips_a_sites_older_waiting_update(tmp_path):
    recorder = _Recorder(tmp_path)
    queue = _queue(recorder, max_in_memory=2, policy="latest_per_site")
    queue.submit(0, "site-1", "a0")  # taken by the worker at once
    queue.submit(0, "site-2", "b0")
    queue.submit(1, "site-2", "b1")
    recorder.release.set()
    queue.drain(timeout_s=30)
    assert recorder.accounted == [(0, "site-2", "skipped", recorder.accounted[0][3])]
    assert "superseded by the round 1 update of site-2" in recorder.accounted[0][3]
    assert sorted((r, s) for r, s, _ in recorder.attacked) == [(0, "site-1"), (1, "site-2")]


def test_a_full_disk_accounts_for_the_update_instead_of_losing_it(tmp_path):
    recorder = _Recorder(tmp_path, fail_spill=True)
    queue = _queue(recorder, max_in_memory=1)
    queue.submit(0, "site-1", "a")
    queue.submit(0, "site-2", "b")
    recorder.release.set()
    queue.drain(timeout_s=30)
    assert [(s, status) for _, s, status, _ in recorder.accounted] == [("site-2", "not_attacked")]
    assert "No space left on device" in recorder.accounted[0][3]
    assert len(recorder.attacked) == 1


def test_a_spilled_update_round_trips_bit_exactly_in_private_files_sharing_its_rounds_global_model(tmp_path):
    rng = np.random.default_rng(0)
    update = UpdateToAudit(
        4,
        "site-3",
        {"conv.weight": rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "bn.num_batches": np.array(7, np.int64)},
        {"conv.weight": rng.normal(size=(3, 2, 3, 3)).astype(np.float64), "half": np.float16([np.nan, -0.0, 1e-7])},
        {"num_images": 2, "recipe": {"lr": 0.01}},
    )
    spiller = RoundSpiller(pending_dir(tmp_path))
    path = spiller(update)
    assert spiller(update) != path and len(list(path.parent.glob("global_*"))) == 1  # one global model per round
    assert all(stat.S_IMODE(spilled.stat().st_mode) == 0o600 for spilled in path.parent.iterdir())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    back = load_update(path)
    assert (back.round_num, back.site, back.meta) == (4, "site-3", update.meta)
    for original, restored in ((update.global_state, back.global_state), (update.diff, back.diff)):
        assert sorted(original) == sorted(restored)
        for name in original:
            assert restored[name].dtype == original[name].dtype and restored[name].shape == original[name].shape
            assert restored[name].tobytes() == original[name].tobytes()

    # A round's global model goes once no spilled update names it, unless the round may still get updates.
    for spilled in spilled_updates(tmp_path):
        spilled.unlink()
    spiller.discard_unused(live_rounds={4})
    assert len(list(path.parent.iterdir())) == 1
    spiller.discard_unused()
    assert list(path.parent.iterdir()) == []


def test_a_late_update_of_a_round_whose_captured_global_model_was_discarded_is_spilled_with_it(tmp_path):
    rng = np.random.default_rng(1)
    sent = {"conv.weight": rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "bn.num_batches": np.array(3, np.int64)}
    spiller = RoundSpiller(pending_dir(tmp_path))
    kept = spiller.capture(5, sent)  # what the filter holds of round 5's global model: its file, open
    assert sorted(kept) == sorted(sent) and all(kept[name].tobytes() == sent[name].tobytes() for name in sent)
    spiller.discard_unused(live_rounds={6, 7})  # round 5 is over and no update named its file
    assert not kept.path.exists()

    late = UpdateToAudit(5, "site-2", kept, {"conv.weight": rng.normal(size=(3, 2, 3, 3))}, {})
    back = load_update(spiller(late))  # its global model is written again from the open file
    assert all(back.global_state[name].tobytes() == sent[name].tobytes() for name in sent)
    assert back.diff["conv.weight"].tobytes() == late.diff["conv.weight"].tobytes()


def _rows(out_dir):
    with open(out_dir / "metrics.csv") as handle:
        return sorted(csv.DictReader(handle), key=lambda row: (row["round"], row["site"]))


def _run_audit_job(tmp_path, hold_attacks: bool, **settings):
    """One round, three sites, audit mode (in-process unless ``audit_workers`` is given: ``hold_attacks`` holds the
    attack in this process); returns the gradinv folder and the blocked attack's release."""
    engine = FakeServerEngine(tmp_path)
    model = global_model()
    flt = make_filter(mode="audit", **{"audit_max_pending": 1, "audit_workers": 0, **settings})
    send_round(engine, flt, model)
    release = threading.Event()
    if hold_attacks:
        auditor = flt._get_auditor(engine.new_context())
        attack = auditor.audit

        def held(update, **kwargs):
            release.wait(10)
            return attack(update, **kwargs)

        auditor.audit = held
    for number, site in enumerate(SITES[:3]):
        flt.process(client_result(model, *sample_images(2, seed=number)), result_context(engine, site))
    out_dir = tmp_path / "job-1" / "gradinv"
    return flt, engine, out_dir, release


def test_spilled_files_are_private_and_deleted_once_attacked_unless_kept(tmp_path):
    for keep in (False, True):
        flt, engine, out_dir, release = _run_audit_job(tmp_path / str(keep), True, keep_updates=keep)
        assert len(spilled_updates(out_dir)) == 2  # the first update is under attack in memory, the bound holds one
        spilled = list((out_dir / "pending").iterdir())
        assert len(spilled) == 3 and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in spilled)
        release.set()
        flt.handle_event(EventType.END_RUN, engine.new_context())
        assert [row["status"] for row in _rows(out_dir)] == ["ok"] * 3
        assert len(list((out_dir / "pending").iterdir())) == (3 if keep else 0)  # the updates and their global


def test_gradinv_audit_attacks_what_the_drain_deadline_left_as_the_job_would_have(tmp_path, capsys):
    flt, engine, in_job, _ = _run_audit_job(tmp_path / "in-job", False)
    flt.handle_event(EventType.END_RUN, engine.new_context())

    flt, engine, later, release = _run_audit_job(tmp_path / "later", True, report=True, drain_timeout_s=0.0)
    threading.Timer(0.2, release.set).start()  # the attack under way at the deadline is stopped at its first step
    flt.handle_event(EventType.END_RUN, engine.new_context())
    statuses = sorted(row["status"] for row in _rows(later))
    assert statuses == ["not_attacked"] * 3
    assert len(spilled_updates(later)) == 3

    assert gradinv_main(["audit", str(later)]) == 0
    assert "report.html" in capsys.readouterr().out
    varying = ("seconds",)
    expected = [{k: v for k, v in row.items() if k not in varying} for row in _rows(in_job)]
    assert [{k: v for k, v in row.items() if k not in varying} for row in _rows(later)] == expected
    assert list((later / "pending").iterdir()) == []
    assert (later / "report.html").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"audit_max_pending": 0}, "audit_max_pending must be an integer >= 1"),
        ({"audit_policy": "newest"}, "audit_policy must be one of"),
        ({"drain_timeout_s": -1}, "drain_timeout_s must be a number of seconds >= 0"),
        ({"keep_updates": "yes"}, "keep_updates must be true or false"),
    ],
)
def test_audit_scale_settings_are_checked_at_construction(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_filter(**arguments)


def test_a_superseded_spilled_update_is_deleted_so_that_gradinv_audit_cannot_attack_it_again(tmp_path):
    recorder = _Recorder(tmp_path)
    queue = _queue(recorder, max_in_memory=1, policy="latest_per_site")
    queue.submit(0, "site-1", "a0")  # under attack (held), the one update in memory
    queue.submit(0, "site-2", "b0")  # spilled at once: the bound is reached
    assert (tmp_path / "b0.spilled").exists()
    queue.submit(1, "site-2", "b1")
    assert [(site, status) for _, site, status, _ in recorder.accounted] == [("site-2", "skipped")]
    assert not (tmp_path / "b0.spilled").exists()  # its row is the skipped one
    recorder.release.set()
    assert queue.drain(timeout_s=30) == []
    assert sorted((r, s) for r, s, _ in recorder.attacked) == [(0, "site-1"), (1, "site-2")]
