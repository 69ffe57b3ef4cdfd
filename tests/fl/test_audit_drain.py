"""The END_RUN drain ends at ``drain_timeout_s``: the attack under way is stopped (in this process at its next step,
in an attack process by a cancel or a kill) and its update is left spilled with a ``not_attacked`` row."""

from __future__ import annotations

import csv
import threading

import pytest
import torch
from nvflare.apis.event_type import EventType

from gradinv.attack import attack_update, get_preset
from gradinv.attack.invert import AttackStopped, stop_attacks_when, stop_requested
from gradinv.fl.spill import spilled_updates
from gradinv.recipe import TrainingRecipe
from gradinv.simulation import simulate_client

from .fl_helpers import global_model, sample_images
from .test_audit_queue import SITES, _run_audit_job

# Long enough that only the drain deadline can end it (the time budget is far away), short to set up: eager steps.
_ENDLESS = {"attack_overrides": {"iterations": 10**6, "compile": "off"}, "time_budget_s": 30.0}


class _StopAfter:
    """A stop hook that says stop from its ``calls``-th call on, counting every call."""

    def __init__(self, calls: int):
        self.calls, self.seen = calls, 0

    def __call__(self) -> bool:
        self.seen += 1
        return self.seen >= self.calls


def _update():
    torch.manual_seed(0)
    images, labels = sample_images(2, seed=3)
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    update = simulate_client(global_model(), images, labels, recipe)
    return update, recipe


def _attack(update, recipe):
    # 2 images: 8 iterations of one run (4 per image), then the polish (run by search_exchanges) of 12 more.
    config = get_preset("fast", {"iterations": 4, "restarts": 1, "compile": "off"})
    return attack_update(global_model(), update.global_state, update.diff, recipe, 2, config, progress=False, seed=1)


def test_a_stop_hook_that_never_stops_changes_nothing_and_one_that_stops_runs_no_further_step():
    update, recipe = _update()
    plain = _attack(update, recipe)
    never = _StopAfter(10**9)
    with stop_attacks_when(never):
        hooked = _attack(update, recipe)
    assert torch.equal(hooked.images, plain.images) and hooked.loss == plain.loss
    assert never.seen == plain.iterations + 1 == 8 + 12 + 1  # one check per step (the polish scores its start)

    for stop_at in (3, 15):  # in the run's loop, then in the polish
        hook = _StopAfter(stop_at)
        with stop_attacks_when(hook), pytest.raises(AttackStopped, match="stopped before it finished"):
            _attack(update, recipe)
        assert hook.seen == stop_at
    assert not stop_requested()  # outside the block no hook applies


def _rows(out_dir):
    with open(out_dir / "metrics.csv") as handle:
        return sorted(csv.DictReader(handle), key=lambda row: row["site"])


@pytest.mark.parametrize("workers", [0, 1])
def test_the_drain_stops_the_attack_under_way_at_its_deadline_and_keeps_its_update(tmp_path, workers):
    flt, engine, out_dir, _ = _run_audit_job(tmp_path, False, drain_timeout_s=0.5, audit_workers=workers,
                                             num_threads=1, **_ENDLESS)
    flt.handle_event(EventType.END_RUN, engine.new_context())

    rows = _rows(out_dir)
    assert [(row["site"], row["status"]) for row in rows] == [(site, "not_attacked") for site in SITES[:3]]
    stopped = [row for row in rows if "while its attack was under way" in row["reason"]]
    assert len(stopped) == 1 and "drain_timeout_s=0.5" in stopped[0]["reason"]
    kept = [path.name for path in spilled_updates(out_dir)]
    assert len(kept) == 3 and all(any(name in row["reason"] for name in kept) for row in rows)
    assert len(list((out_dir / "pending").glob("global_*"))) == 1  # their round's global model stays with them
    assert flt._background.in_memory() == 0 and not [t for t in threading.enumerate() if "gradinv-audit" in t.name]
