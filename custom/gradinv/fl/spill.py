"""Client updates kept on disk while they wait for an attack (audit mode): as private as the reconstructions.

Spilled updates are ``.npz`` files (mode 0600) in ``<run_dir>/<out_subdir>/pending/`` (mode 0700). A round's global
model is written once, to ``global_<round>_<id>.npz`` (under ``global/<name>``), and shared by the round's updates:
each ``round_<round>_<site>_<id>.npz`` holds its diff under ``diff/<name>`` and, as JSON under ``__update__``, the
round, site, client meta and the name of its global model's file. numpy's own format keeps every dtype and bit (the
filter's arrays are numpy already: bfloat16 tensors arrive as float32, which holds them exactly), so an update read
back is the update that was written.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gradinv.attack.invert import AttackStopped
from gradinv.errors import AttackInputError, DataError
from gradinv.fl.artifacts import safe_path_part
from gradinv.fl.auditor import LeakageAuditor, UpdateToAudit
from gradinv.fl.scheduler import Queued
from gradinv.fl.settings import AuditSettings
from gradinv.private_files import PRIVATE_DIR_MODE, write_private

PENDING_DIR = "pending"
SPILL_SUFFIX = ".npz"
_META_KEY = "__update__"
_GLOBAL, _DIFF = "global/", "diff/"
_GLOBAL_FILE_PREFIX = "global_"


def pending_dir(out_dir: str | os.PathLike) -> Path:
    """The folder of spilled updates under a run's gradinv folder, created 0700."""
    folder = Path(out_dir) / PENDING_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(folder, PRIVATE_DIR_MODE)
    return folder


class RoundSpiller:
    """Spills updates into ``folder``, each round's global model once (the round's first spilled update writes it).

    Thread-safe: the filter spills from FedAvg's result threads and its queue's workers.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._globals: dict[int, Path] = {}

    def capture(self, round_num: int, global_state: Mapping[str, np.ndarray]) -> SpilledGlobal:
        """Write a round's global model now, for the round's spilled updates to name; returns it as read from disk.

        What the filter holds of a round's global model when every update is attacked from disk (attack processes):
        the server keeps no copy of it in memory. Raises ``OSError`` (a full disk); nothing is then registered.
        """
        with self._lock:
            path = spill_global(round_num, global_state, self.folder)
            self._globals[round_num] = path
            return SpilledGlobal(path)

    def __call__(self, update: UpdateToAudit) -> Path:
        """Write ``update``; returns its path (raises ``OSError`` on a full disk)."""
        with self._lock:  # held while writing: discard_unused must not delete a global an update is about to name
            path = self._globals.get(update.round_num)
            if path is None or not path.exists():
                path = self._globals[update.round_num] = spill_global(
                    update.round_num, update.global_state, self.folder
                )
            return spill_update(update, path)

    def discard_unused(self, live_rounds: Collection[int] = ()) -> None:
        """Delete the global models of rounds not in ``live_rounds`` (those that may still get updates) that no
        spilled update names any more."""
        with self._lock:
            discard_unused_globals(self.folder, live_rounds)
            self._globals = {round_num: path for round_num, path in self._globals.items() if path.exists()}


class SpilledGlobal(Mapping[str, np.ndarray]):
    """A global model file from :func:`spill_global`, read one array at a time.

    The file is opened once and stays open while anything refers to it (numpy closes it when the object goes): if the
    round's file is deleted as unused while a late update of that round is still on its way, that update's spill
    writes it again from the open file. Thread-safe.
    """

    def __init__(self, path: Path):
        self.path = path
        self._archive = np.load(path, allow_pickle=False)
        self._names = {key[len(_GLOBAL):]: key for key in self._archive.files if key.startswith(_GLOBAL)}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> np.ndarray:
        with self._lock:
            return self._archive[self._names[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def spill_global(round_num: int, global_state: Mapping[str, np.ndarray], folder: str | os.PathLike) -> Path:
    """Write a round's global model to a new 0600 file in ``folder``, for :func:`spill_update` to name."""
    name = f"{_GLOBAL_FILE_PREFIX}{round_num:05d}_{uuid.uuid4().hex[:12]}{SPILL_SUFFIX}"
    return _write_npz(Path(folder) / name, {_GLOBAL + key: value for key, value in global_state.items()})


def spill_update(update: UpdateToAudit, global_file: Path) -> Path:
    """Write ``update``'s diff and meta to a new 0600 file beside ``global_file`` (its global model, from
    :func:`spill_global`); returns its path (raises ``OSError`` on a full disk)."""
    arrays = {_DIFF + name: value for name, value in update.diff.items()}
    header = {"round": update.round_num, "site": update.site, "meta": update.meta, "global": global_file.name}
    arrays[_META_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    name = f"round_{update.round_num:05d}_{safe_path_part(update.site)}_{uuid.uuid4().hex[:12]}{SPILL_SUFFIX}"
    return _write_npz(global_file.parent / name, arrays)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Stream ``arrays`` into ``path`` (mode 0600) in chunks of at most 16 MiB (numpy's own), never gathered in memory:
    a spill costs the server no second copy. The half-written file's leading dot keeps it out of spilled_updates()."""
    return write_private(path, lambda handle: np.savez(handle, allow_pickle=False, **arrays))


def load_update(path: str | os.PathLike) -> UpdateToAudit:
    """Read back an update :func:`spill_update` wrote, with its global model."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(archive[_META_KEY].tobytes().decode())
            diff = {key[len(_DIFF):]: archive[key] for key in archive.files if key.startswith(_DIFF)}
        with np.load(path.parent / header["global"], allow_pickle=False) as archive:
            global_state = {key[len(_GLOBAL):]: archive[key] for key in archive.files if key.startswith(_GLOBAL)}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a readable spilled update ({exc}); it, or the global model file it names, "
                        "was cut short, deleted or is not gradinv's; delete it") from exc
    return UpdateToAudit(int(header["round"]), str(header["site"]), global_state, diff, dict(header["meta"]))


def spilled_round_and_site(path: str | os.PathLike) -> tuple[int, str]:
    """The round and site of a spilled update, read from its header alone (not its arrays)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(archive[_META_KEY].tobytes().decode())
        return int(header["round"]), str(header["site"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a readable spilled update ({exc}); it was cut short or is not gradinv's; "
                        "delete it") from exc


def spilled_updates(out_dir: str | os.PathLike) -> list[Path]:
    """The spilled updates of a run's gradinv folder, oldest round first."""
    folder = Path(out_dir) / PENDING_DIR
    return sorted(folder.glob(f"round_*{SPILL_SUFFIX}")) if folder.is_dir() else []


def discard_unused_globals(folder: str | os.PathLike, live_rounds: Collection[int] = ()) -> None:
    """Delete the spilled global models of rounds not in ``live_rounds`` for which no spilled update is left."""
    for path in Path(folder).glob(f"{_GLOBAL_FILE_PREFIX}*{SPILL_SUFFIX}"):
        round_num = int(path.name[len(_GLOBAL_FILE_PREFIX):].split("_")[0])
        if round_num not in live_rounds and not any(Path(folder).glob(f"round_{round_num:05d}_*{SPILL_SUFFIX}")):
            path.unlink(missing_ok=True)


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
