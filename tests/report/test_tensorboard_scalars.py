"""TensorBoard scalars written by the filter, read back as TensorBoard reads them."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradinv.report import close_tensorboard_writers, write_tensorboard_scalars


def test_scalars_are_tagged_by_site_and_stepped_by_round(tmp_path: Path) -> None:
    log_dir = tmp_path / "gradinv" / "tensorboard"
    try:
        assert write_tensorboard_scalars(log_dir, 0, "site-1", {"ssim": 0.4, "rdlv": None, "status": "ok",
                                                                  "iterations": 300}) == 2
        write_tensorboard_scalars(log_dir, 1, "site-1", {"ssim": 0.55, "rdlv": 0.8, "iterations": 300})
        write_tensorboard_scalars(log_dir, 0, "site-2", {"ssim": None, "leak_score": float("nan")})
        # flushed after every call: readable while the writer is still open
        events = EventAccumulator(str(log_dir))
        events.Reload()
        assert set(events.Tags()["scalars"]) == {"gradinv/site-1/ssim", "gradinv/site-1/rdlv",
                                                 "gradinv/site-1/iterations"}
        ssim = [(e.step, round(e.value, 6)) for e in events.Scalars("gradinv/site-1/ssim")]
        assert ssim == [(0, 0.4), (1, 0.55)]
        assert [(e.step, round(e.value, 6)) for e in events.Scalars("gradinv/site-1/rdlv")] == [(1, 0.8)]
    finally:
        close_tensorboard_writers()
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # one event file per process, not per update
