"""``audit_policy="every_kth_round"``: the other rounds' updates get one ``skipped`` row each, and are not attacked."""

from __future__ import annotations

import csv

import pytest
from nvflare.apis.event_type import EventType

from .fl_helpers import FakeServerEngine, client_result, global_model, result_context, sample_images, send_round
from .test_filter import make_filter


def test_every_kth_round_attacks_rounds_0_k_2k_and_skips_the_others_with_one_row_each(tmp_path):
    engine, model = FakeServerEngine(tmp_path), global_model()
    flt = make_filter(mode="audit", audit_policy="every_kth_round", audit_round_interval=2, audit_workers=0,
                      audit_max_pending=1)
    for round_num in range(3):
        send_round(engine, flt, model, round_num=round_num)
        for number, site in enumerate(("site-1", "site-2")):
            images = sample_images(2, seed=10 * round_num + number)
            flt.process(client_result(model, *images, round_num=round_num), result_context(engine, site))
            if round_num == 1 and site == "site-1":  # re-sent (its submission timed out): still one row
                flt.process(client_result(model, *images, round_num=round_num), result_context(engine, site))
    assert sorted(flt._base_by_round) == [0, 2]  # no global model kept for a round left out
    out_dir = tmp_path / "job-1" / "gradinv"
    flt.handle_event(EventType.END_RUN, engine.new_context())
    with open(out_dir / "metrics.csv") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: (row["round"], row["site"]))
    assert [(row["round"], row["site"], row["status"]) for row in rows] == [
        ("0", "site-1", "ok"), ("0", "site-2", "ok"),
        ("1", "site-1", "skipped"), ("1", "site-2", "skipped"),
        ("2", "site-1", "ok"), ("2", "site-2", "ok"),
    ]
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert all("audit_policy=every_kth_round, every 2 rounds" in row["reason"] for row in skipped)
    assert all(row["decision"] == "pass" for row in skipped)
    assert list((out_dir / "pending").glob("round_*")) == []  # nothing left behind, nothing of round 1 spilled


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"audit_policy": "every_kth_round", "audit_round_interval": 0}, "audit_round_interval must be an integer"),
        ({"audit_round_interval": 2.5}, "audit_round_interval must be an integer >= 1, got 2.5"),
        ({"audit_round_interval": 3}, r"audit_round_interval=3 applies only with audit_policy='every_kth_round' "
                                      r"\(got 'all'\)"),
        ({"audit_policy": "latest_per_site", "audit_round_interval": 2}, "got 'latest_per_site'"),
    ],
)
def test_the_round_interval_is_checked_at_construction(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_filter(mode="audit", **arguments)

