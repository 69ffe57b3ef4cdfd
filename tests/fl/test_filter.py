"""GradInversionAggregatorFilter with a real FLContext / Workspace: pass, block, and the bad-input matrix.

Whatever arrives, ``process`` returns (no exception reaches NVFlare), logs a clear line, never changes the
arrays it was given, and records the update in ``metrics.csv``.
"""

import csv
import json
import logging
import stat

import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.shareable import Shareable, make_reply

from gradinv.attack.scoring import attack_converged
from gradinv.fl import GradInversionAggregatorFilter
from gradinv.fl.meta import META_NUM_IMAGES, META_RECIPE

from .fl_helpers import (
    RESOLUTION,
    FakeServerEngine,
    arrays_equal,
    client_result,
    data_of,
    global_model,
    result_context,
    sample_images,
    send_round,
)


def make_filter(**overrides):
    settings = dict(model="bn_cnn", input_shape=(1, RESOLUTION, RESOLUTION), attack_overrides={"iterations": 5},
                    prior="none", report=False, progress=False)
    settings.update(overrides)
    return GradInversionAggregatorFilter(**settings)


@pytest.fixture
def server(tmp_path):
    engine = FakeServerEngine(tmp_path)
    model = global_model()
    return engine, model, tmp_path / "job-1" / "gradinv"


def rows(out_dir):
    with open(out_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_valid_update_passes_unchanged_and_is_recorded(server, caplog):
    engine, model, out_dir = server
    flt = make_filter()
    send_round(engine, flt, model)
    result = client_result(model, *sample_images(1))
    sent = {k: v.copy() for k, v in data_of(result).items()}

    with caplog.at_level(logging.INFO):
        out = flt.process(result, result_context(engine))

    assert arrays_equal(data_of(out), sent)
    (row,) = rows(out_dir)
    assert (row["round"], row["site"], row["num_images"], row["status"], row["decision"]) == (
        "0", "site-1", "1", "ok", "pass")
    assert row["ssim"] == "" and row["rdlv"] == ""  # no ground truth configured: never invented
    assert float(row["update_distance"]) >= 0 and row["leak_score"] != ""
    columns = list(row)
    assert columns.index("converged") == columns.index("update_distance") + 1
    assert row["converged"].lower() == str(attack_converged(float(row["update_distance"]))).lower()
    folder = out_dir / "round_000" / "site-1"
    for name in ("metrics.json", "reconstruction.png", "reconstruction.npz"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    assert (out_dir / "settings.json").exists()
    assert "gradinv: round 0 site-1 (1 images): status=ok, decision=pass" in caplog.text


@pytest.mark.parametrize("iterations, converged", [(5, "false"), (300, "true")])
def test_the_converged_column_says_whether_the_attack_reproduced_the_update(server, iterations, converged):
    # Measured at 16 px, 1 image: update distance 0.65 after 5 iterations, 0.003 after 300.
    engine, model, out_dir = server
    flt = make_filter(attack_overrides={"iterations": iterations})
    send_round(engine, flt, model)
    flt.process(client_result(model, *sample_images(1)), result_context(engine))
    (row,) = rows(out_dir)
    assert row["status"] == "ok" and row["converged"].lower() == converged
    recorded = json.loads((out_dir / "round_000" / "site-1" / "metrics.json").read_text())
    assert recorded["converged"] is (converged == "true")


def test_image_saving_can_be_turned_off(server):
    engine, model, out_dir = server
    flt = make_filter(save_images=False)
    send_round(engine, flt, model)
    flt.process(client_result(model, *sample_images(1)), result_context(engine))
    assert sorted(p.name for p in (out_dir / "round_000" / "site-1").iterdir()) == ["metrics.json"]


def test_update_over_the_threshold_is_blocked(server, caplog):
    engine, model, out_dir = server
    flt = make_filter(block_threshold=0.0, block_metric="leak_score")
    send_round(engine, flt, model)
    result = client_result(model, *sample_images(1))
    with caplog.at_level(logging.INFO):
        out = flt.process(result, result_context(engine))
    assert data_of(out) == {}
    assert rows(out_dir)[0]["decision"] == "block"
    assert "update BLOCKED (leak_score=" in caplog.text


def _corrupt(result, change):
    from nvflare.apis.dxo import from_shareable

    dxo = from_shareable(result)
    data = dict(dxo.data)
    change(data, dxo.meta)
    return DXO(dxo.data_kind, data=data, meta=dxo.meta).update_shareable(result)


BAD_UPDATES = {
    "nan": (lambda d, m: d.__setitem__("classifier.bias", np.array([np.nan, 0.0])), "contains NaN or Inf"),
    "inf": (lambda d, m: d.__setitem__("features.0.weight", d["features.0.weight"] * np.inf), "contains NaN or Inf"),
    "missing key": (lambda d, m: d.pop("classifier.weight"), "missing 1 keys [classifier.weight]"),
    "extra key": (lambda d, m: d.__setitem__("evil.weight", np.zeros(3)), "unexpected 1 keys [evil.weight]"),
    "shape": (lambda d, m: d.__setitem__("classifier.bias", np.zeros(5)), "has shape (5,), the model expects (2,)"),
    "meta missing": (lambda d, m: m.clear(), "the update's meta lacks"),
    "recipe disagrees with steps": (lambda d, m: (m[META_RECIPE].__setitem__("epochs", 3),
                                                  m.__setitem__("NUM_STEPS_CURRENT_ROUND", 3)),
                                    "the recipe implies 3 local steps"),
    "meta disagrees with its step count": (lambda d, m: m[META_RECIPE].__setitem__("epochs", 3), "make 3 step(s)"),
    "bad image count": (lambda d, m: m.__setitem__(META_NUM_IMAGES, 0), "must be a positive integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_bad_updates_pass_or_block_by_policy_with_a_clear_log_line(server, caplog, case, fail_closed):
    engine, model, out_dir = server
    flt = make_filter(fail_closed=fail_closed)
    send_round(engine, flt, model)
    change, message = BAD_UPDATES[case]
    result = _corrupt(client_result(model, *sample_images(1)), change)
    sent = {k: np.array(v, copy=True) for k, v in data_of(result).items()}

    with caplog.at_level(logging.INFO):
        out = flt.process(result, result_context(engine))

    assert message in caplog.text and "invalid update" in caplog.text
    (row,) = rows(out_dir)
    assert row["status"] == "invalid" and message in row["reason"]
    assert row["converged"] == "" and row["update_distance"] == ""  # no attack ran: no verdict
    if fail_closed:
        assert data_of(out) == {} and row["decision"] == "block"
    else:
        assert arrays_equal(data_of(out), sent) and row["decision"] == "pass"


def test_update_for_an_unknown_round_passes_unchecked(server, caplog):
    engine, model, out_dir = server
    flt = make_filter()
    send_round(engine, flt, model, round_num=0)
    result = client_result(model, *sample_images(1), round_num=3)
    with caplog.at_level(logging.INFO):
        out = flt.process(result, result_context(engine))
    assert data_of(out)
    assert "no global model was captured for round 3" in caplog.text
    assert rows(out_dir)[0]["status"] == "invalid"


def test_only_the_rounds_start_round_and_frequency_select_are_kept_and_attacked(server):
    engine, model, out_dir = server
    flt = make_filter(start_round=1, frequency=2)
    for round_num in range(5):
        send_round(engine, flt, model, round_num=round_num)
        result = client_result(model, *sample_images(1), round_num=round_num)
        sent = {k: v.copy() for k, v in data_of(result).items()}
        assert arrays_equal(data_of(flt.process(result, result_context(engine))), sent)
    # No global model is kept for a round that is not attacked (the filter keeps the last two it attacks).
    assert sorted(flt._base_by_round) == [1, 3]
    assert sorted(row["round"] for row in rows(out_dir)) == ["1", "3"]


def test_full_weights_are_attacked_as_weights_minus_global(server):
    engine, model, out_dir = server
    flt = make_filter()
    send_round(engine, flt, model)
    result = client_result(model, *sample_images(1), kind=DataKind.WEIGHTS)
    out = flt.process(result, result_context(engine))
    assert data_of(out) and rows(out_dir)[0]["status"] == "ok"


def test_hostile_site_name_stays_inside_the_artifact_folder(server):
    engine, model, out_dir = server
    flt = make_filter()
    send_round(engine, flt, model)
    flt.process(client_result(model, *sample_images(1)), result_context(engine, site="../../x"))
    workspace_root = out_dir.parent.parent
    written = [p for p in workspace_root.rglob("*") if p.is_file()]
    assert written and all(out_dir in p.parents for p in written)
    assert rows(out_dir)[0]["site"] == "_.._x"
    assert (out_dir / "round_000" / "_.._x" / "metrics.json").exists()


@pytest.mark.parametrize(
    "make_result",
    [lambda: Shareable(), lambda: make_reply(ReturnCode.EXECUTION_EXCEPTION)],
    ids=["not-a-dxo", "error-reply"],
)
def test_non_dxo_and_error_replies_come_back_as_the_same_object(server, caplog, make_result):
    engine, model, _ = server
    flt = make_filter()
    result = make_result()
    with caplog.at_level(logging.INFO):
        assert flt.process(result, result_context(engine)) is result
    assert "passed through" in caplog.text


def test_empty_update_passes(server, caplog):
    engine, model, _ = server
    flt = make_filter()
    send_round(engine, flt, model)
    result = DXO(DataKind.WEIGHT_DIFF, data={}).to_shareable()
    with caplog.at_level(logging.INFO):
        out = flt.process(result, result_context(engine))
    assert data_of(out) == {}
    assert "empty update" in caplog.text


def test_attack_that_raises_fails_open(server, caplog, monkeypatch):
    engine, model, out_dir = server
    flt = make_filter()
    send_round(engine, flt, model)
    auditor = flt._get_auditor(engine.new_context())
    monkeypatch.setattr(auditor, "audit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    result = client_result(model, *sample_images(1))
    with caplog.at_level(logging.INFO):
        out = flt.process(result, result_context(engine))
    assert data_of(out)
    assert "attack failed: out of memory" in caplog.text
    assert rows(out_dir)[0]["status"] == "error"


def test_attack_over_its_time_budget_stops_and_is_recorded(server):
    engine, model, out_dir = server
    flt = make_filter(attack_overrides={"iterations": 10**6}, time_budget_s=0.5)
    send_round(engine, flt, model)
    out = flt.process(client_result(model, *sample_images(1)), result_context(engine))
    assert data_of(out)
    (row,) = rows(out_dir)
    assert row["status"] == "timeout" and row["decision"] == "pass" and 0 < int(row["iterations"]) < 10**6


def test_audit_mode_returns_at_once_and_drains_at_end_of_run(server):
    engine, model, out_dir = server
    flt = make_filter(mode="audit", report=True, audit_workers=0)  # the drain itself; processes: test_audit_processes
    send_round(engine, flt, model)
    result = client_result(model, *sample_images(2))
    sent = {k: v.copy() for k, v in data_of(result).items()}
    out = flt.process(result, result_context(engine, "site-2"))
    assert arrays_equal(data_of(out), sent)
    flt.handle_event(EventType.END_RUN, engine.new_context())
    assert rows(out_dir)[0]["site"] == "site-2" and rows(out_dir)[0]["status"] == "ok"
    assert (out_dir / "report.html").exists()


def test_invalid_configuration_is_rejected_at_construction():
    with pytest.raises(ValueError, match="mode must be one of"):
        GradInversionAggregatorFilter(mode="later")
    with pytest.raises(ValueError, match="unknown attack preset"):
        GradInversionAggregatorFilter(preset="slowest")


def test_a_re_sent_update_gets_the_same_decision_without_a_second_attack(server, caplog):
    engine, model, out_dir = server
    flt = make_filter(block_threshold=0.0, block_metric="leak_score")
    send_round(engine, flt, model)
    images, labels = sample_images(1)
    first = flt.process(client_result(model, images, labels), result_context(engine))
    with caplog.at_level(logging.INFO):
        again = flt.process(client_result(model, images, labels), result_context(engine))
    assert data_of(first) == {} and data_of(again) == {}
    assert "the same update again" in caplog.text
    assert len(rows(out_dir)) == 1
