"""Client updates kept on disk while they wait for an attack (audit mode): as private as the reconstructions.

A spilled update is one ``.npz`` file (mode 0600) in ``<run_dir>/<out_subdir>/pending/`` (mode 0700): the global
model under ``global/<name>``, the diff under ``diff/<name>`` and the round, site and client meta as JSON under
``__update__``. numpy's own format keeps every dtype and bit (the filter's copies are numpy already: bfloat16
tensors arrive as float32, which holds them exactly), so an update read back is the update that was written.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gradinv.attack.invert import AttackStopped
from gradinv.errors import AttackInputError, DataError
from gradinv.fl.artifacts import safe_path_part
from gradinv.fl.auditor import LeakageAuditor, UpdateToAudit
from gradinv.fl.scheduler import Queued
from gradinv.fl.settings import AuditSettings
from gradinv.private_files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

PENDING_DIR = "pending"
SPILL_SUFFIX = ".npz"
_META_KEY = "__update__"
_GLOBAL, _DIFF = "global/", "diff/"


def pending_dir(out_dir: str | os.PathLike) -> Path:
    """The folder of spilled updates under a run's gradinv folder, created 0700."""
    folder = Path(out_dir) / PENDING_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(folder, PRIVATE_DIR_MODE)
    return folder


def spill_update(update: UpdateToAudit, folder: str | os.PathLike) -> Path:
    """Write ``update`` to a new 0600 file in ``folder``; returns its path (raises ``OSError`` on a full disk).

    The arrays are streamed into the file in chunks of at most 16 MiB (numpy's own), never gathered in memory: a
    spill costs the server no second copy of the update. Written under a temporary name, renamed when complete.
    """
    arrays = {_GLOBAL + name: value for name, value in update.global_state.items()}
    arrays.update({_DIFF + name: value for name, value in update.diff.items()})
    header = {"round": update.round_num, "site": update.site, "meta": update.meta}
    arrays[_META_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    name = f"round_{update.round_num:05d}_{safe_path_part(update.site)}_{uuid.uuid4().hex[:12]}{SPILL_SUFFIX}"
    path = Path(folder) / name
    # mkstemp creates the file 0600; the leading dot keeps a half-written one out of spilled_updates().
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        os.chmod(temporary, PRIVATE_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_update(path: str | os.PathLike) -> UpdateToAudit:
    """Read back an update :func:`spill_update` wrote."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(archive[_META_KEY].tobytes().decode())
            global_state = {key[len(_GLOBAL):]: archive[key] for key in archive.files if key.startswith(_GLOBAL)}
            diff = {key[len(_DIFF):]: archive[key] for key in archive.files if key.startswith(_DIFF)}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a readable spilled update ({exc}); it was cut short or is not gradinv's; "
                        "delete it") from exc
    return UpdateToAudit(int(header["round"]), str(header["site"]), global_state, diff, dict(header["meta"]))


def spilled_updates(out_dir: str | os.PathLike) -> list[Path]:
    """The spilled updates of a run's gradinv folder, oldest round first."""
    folder = Path(out_dir) / PENDING_DIR
    return sorted(folder.glob(f"round_*{SPILL_SUFFIX}")) if folder.is_dir() else []


def attack_spilled_update(
    auditor: LeakageAuditor,
    item: Queued[UpdateToAudit],
    settings: AuditSettings,
    log_error: Callable[[str], None],
    on_row: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Attack one queued update (in memory, or read back from its spill file) and write its one ``metrics.csv`` row.

    Shared by audit mode's worker and ``gradinv audit RUN_DIR``, so a later attack writes the row the job would have.
    A spill file is deleted once its update has a row, unless ``settings.keep_updates``. Raises only
    :class:`AttackStopped` (inside :func:`~gradinv.attack.invert.stop_attacks_when`), with no row written and the
    spill file kept.
    """
    started = time.monotonic()
    update = item.job
    try:
        if update is None:
            update = load_update(item.path)
        row = auditor.audit(update, time_budget_s=settings.time_budget_s).row
        on_row(row)
    except AttackStopped:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded as the update's row; the caller goes on
        status = "invalid" if isinstance(exc, AttackInputError) else "error"
        log_error(f"gradinv: round {item.round_num} {item.site}: {status}: {exc}")
        meta = update.meta if update is not None else None
        row = auditor.record_failure(
            item.round_num, item.site, status, "pass", str(exc), meta, time.monotonic() - started
        )
    if item.path is not None and not settings.keep_updates:
        item.path.unlink(missing_ok=True)
    return row
