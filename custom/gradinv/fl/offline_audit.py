"""Attacking a run's spilled updates after the job (``gradinv audit RUN_DIR``), with the settings the filter had."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from gradinv.artifact_layout import METRICS_COLUMNS, METRICS_CSV, SETTINGS_JSON
from gradinv.errors import DataError
from gradinv.fl.auditor import LeakageAuditor, datalists_by_site
from gradinv.fl.scheduler import Queued
from gradinv.fl.settings import AuditSettings
from gradinv.fl.spill import PENDING_DIR, attack_spilled_update, discard_unused_globals, load_update, spilled_updates
from gradinv.models.spec import build_from_spec
from gradinv.private_files import write_private_bytes

_log = logging.getLogger(__name__)


def audit_spilled_run(
    run_dir: str | os.PathLike, device: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Attack every spilled update of a run; returns their rows (also written to its ``metrics.csv``).

    Each update's ``not_attacked`` (or dead-process ``error``) row is replaced by the row its attack writes, so the
    run keeps exactly one row per update. Raises :class:`DataError` when the folder holds no gradinv run or its
    settings cannot be used.
    """
    from gradinv.report.artifacts import find_gradinv_dir

    out_dir = find_gradinv_dir(run_dir)
    settings = _run_settings(out_dir, device, model)
    built = build_from_spec(settings.model, num_classes=settings.num_classes, input_shape=settings.input_shape)
    auditor = LeakageAuditor(out_dir, built, settings, audit_datalists=datalists_by_site(settings.audit_datalists))
    rows = []
    for path in spilled_updates(out_dir):
        update = load_update(path)
        _drop_unattacked_row(out_dir, path.name)
        item = Queued(update.round_num, update.site, update, path)
        rows.append(attack_spilled_update(auditor, item, settings, _log.error, lambda row: None))
    discard_unused_globals(out_dir / PENDING_DIR)
    return rows


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


def _drop_unattacked_row(out_dir: Path, spill_name: str) -> None:
    """Remove the row that names ``spill_name`` (``not_attacked`` at the drain deadline, ``error`` when an attack
    process died) from metrics.csv: the attack about to run writes the update's row."""
    path = out_dir / METRICS_CSV
    if not path.exists():
        return
    with open(path, newline="") as handle:
        kept = [row for row in csv.DictReader(handle)
                if not (row.get("status") in ("not_attacked", "error") and spill_name in (row.get("reason") or ""))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept)
    write_private_bytes(path, buffer.getvalue().encode())
