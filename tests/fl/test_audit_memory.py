"""What audit mode holds per update in the server process: nothing for a spilled one (it is written from the
received arrays), one copy of its own for each of at most ``audit_max_pending`` held in memory."""

from __future__ import annotations

import threading

import numpy as np
from nvflare.apis.event_type import EventType

import gradinv.fl.spill as spill_module

from .fl_helpers import (
    FakeServerEngine,
    client_result,
    data_of,
    global_model,
    result_context,
    sample_images,
    send_round,
)
from .test_filter import make_filter


def _shares_memory(first, second) -> bool:
    return any(np.shares_memory(first[name], np.asarray(second[name])) for name in first)


def test_a_spilled_update_is_written_from_the_received_arrays_and_a_held_one_is_a_copy(tmp_path, monkeypatch):
    spilled_diffs = []

    def spy(update, global_file):
        spilled_diffs.append(update.diff)
        return spill_update(update, global_file)

    spill_update = spill_module.spill_update
    monkeypatch.setattr(spill_module, "spill_update", spy)
    engine, model = FakeServerEngine(tmp_path), global_model()
    flt = make_filter(mode="audit", audit_max_pending=1, audit_workers=0)
    send_round(engine, flt, model)
    auditor = flt._get_auditor(engine.new_context())
    release, attacked = threading.Event(), []
    attack = auditor.audit

    def held(update, **kwargs):
        attacked.append(update.diff)
        release.wait(10)
        return attack(update, **kwargs)

    auditor.audit = held
    results = [client_result(model, *sample_images(2, seed=number)) for number in range(3)]
    for number, result in enumerate(results):
        flt.process(result, result_context(engine, f"site-{number + 1}"))
    received = [data_of(result) for result in results]
    release.set()
    flt.handle_event(EventType.END_RUN, engine.new_context())

    assert len(attacked) == 3 and len(spilled_diffs) == 2  # the first was held in memory, the bound is one
    assert not _shares_memory(attacked[0], received[0])  # held: the queue's own copy
    assert all(_shares_memory(diff, data) for diff, data in zip(spilled_diffs, received[1:]))  # spilled: no copy
