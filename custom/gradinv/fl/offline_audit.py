"""Attacking a run's spilled updates after the job (``gradinv audit RUN_DIR``), with the settings the filter had."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from gradinv.artifact_layout import METRICS_COLUMNS, METRICS_CSV, SETTINGS_JSON
from gradinv.errors import DataError
from gradinv.fl.auditor import LeakageAuditor, datalists_by_site
from gradinv.fl.scheduler import BackgroundAudits, Queued
from gradinv.fl.settings import AuditSettings
from gradinv.fl.spill import (
    PENDING_DIR,
    attack_spilled_update,
    discard_unused_globals,
    spilled_round_and_site,
    spilled_updates,
)
from gradinv.fl.worker_pool import AttackProcesses
from gradinv.models.spec import build_from_spec
from gradinv.private_files import write_private_bytes

_log = logging.getLogger(__name__)


def audit_spilled_run(
    run_dir: str | os.PathLike, device: str | None = None, model: str | None = None, workers: int = 1
) -> list[dict[str, str]]:
    """Attack every spilled update of a run; returns their ``metrics.csv`` rows, in the order of the spilled files.

    Each update's ``not_attacked`` (or dead-process ``error``) row is replaced by the row its attack writes, so the
    run keeps exactly one row per update. With ``workers`` > 1 the updates are attacked by that many attack processes
    (the filter's :class:`~gradinv.fl.worker_pool.AttackProcesses`), and their rows are put back in the order one
    worker writes them: the run's rows and report do not depend on ``workers``. Raises :class:`DataError` when the
    folder holds no gradinv run, its settings cannot be used, or a spilled file is unreadable (before any attack).
    """
    from gradinv.report.artifacts import find_gradinv_dir

    if not (isinstance(workers, int) and workers >= 1):
        raise DataError(f"workers must be an integer >= 1, got {workers!r}")
    out_dir = find_gradinv_dir(run_dir)
    settings = _run_settings(out_dir, device, model)
    built = build_from_spec(settings.model, num_classes=settings.num_classes, input_shape=settings.input_shape)
    auditor = LeakageAuditor(out_dir, built, settings, audit_datalists=datalists_by_site(settings.audit_datalists))
    items = [Queued(*spilled_round_and_site(path), path=path) for path in spilled_updates(out_dir)]
    _rewrite_rows(out_dir, lambda rows: [row for row in rows if not _names_a_spill(row, items)])
    if workers == 1:
        for item in items:
            attack_spilled_update(auditor, item, settings, _log.error, lambda row: None)
    else:
        _attack_in_processes(items, workers, out_dir, built, settings, auditor)
    discard_unused_globals(out_dir / PENDING_DIR)
    order = {(str(item.round_num), item.site): number for number, item in enumerate(items)}
    rows = _rewrite_rows(out_dir, lambda rows: sorted(rows, key=lambda row: order.get(_key(row), -1)))
    return [row for row in rows if _key(row) in order]


def _attack_in_processes(
    items: list[Queued], workers: int, out_dir: Path, model: nn.Module, settings: AuditSettings, auditor: LeakageAuditor
) -> None:
    """Attack the spilled ``items`` in ``workers`` attack processes, through audit mode's own queue."""
    processes = AttackProcesses(workers, out_dir, model, settings, auditor)

    def crashed(item: Queued, exc: BaseException) -> None:
        _log.error("gradinv: round %s %s: could not be recorded: %s", item.round_num, item.site, exc)

    def never_spilled(job: Any) -> Path:
        raise AssertionError("gradinv audit queues spilled updates only")

    def never_accounted(item: Queued, status: str, reason: str) -> None:
        raise AssertionError(f"gradinv audit drains without a deadline; {status}: {reason}")

    queue = BackgroundAudits(processes.attack, crashed, never_spilled, never_accounted, max_in_memory=0,
                             workers=workers)
    try:
        for item in items:
            queue.submit_spilled(item.round_num, item.site, item.path)
        queue.drain()
    finally:
        processes.close()


def _key(row: dict[str, str]) -> tuple[str, str]:
    return row.get("round", ""), row.get("site", "")


def _run_settings(out_dir: Path, device: str | None, model: str | None) -> AuditSettings:
    try:
        recorded = dict(json.loads((out_dir / SETTINGS_JSON).read_text())["filter"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{out_dir / SETTINGS_JSON} has no filter settings ({exc}); is RUN_DIR a gradinv run?") from exc
    if model is not None:
        recorded["model"] = json.loads(model) if model.lstrip().startswith("{") else model
    if recorded.get("model") is None:
        raise DataError("the run attacked the job's own model, which settings.json cannot name: pass --model "
                        "(a registry name or a JSON class spec of the clients' model)")
    if device is not None:
        recorded["device"] = device
    known = {field.name for field in dataclasses.fields(AuditSettings)}
    return AuditSettings(**{name: value for name, value in recorded.items() if name in known})


def _names_a_spill(row: dict[str, str], items: list[Queued]) -> bool:
    """Whether ``row`` is the ``not_attacked`` (drain deadline) or ``error`` (dead attack process) row of one of the
    spilled ``items``: the attack about to run writes that update's row."""
    reason = row.get("reason") or ""
    return row.get("status") in ("not_attacked", "error") and any(item.path.name in reason for item in items)


def _rewrite_rows(
    out_dir: Path, change: Callable[[list[dict[str, str]]], list[dict[str, str]]]
) -> list[dict[str, str]]:
    """Replace metrics.csv's rows by ``change(rows)``; returns the new rows."""
    path = out_dir / METRICS_CSV
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = change(list(csv.DictReader(handle)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_private_bytes(path, buffer.getvalue().encode())
    return rows
