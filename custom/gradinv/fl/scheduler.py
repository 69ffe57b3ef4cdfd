"""When updates are attacked: audit mode's background worker, and one decision per submitted update.

Both are plain Python (no NVFlare): the filter decides *what* to do with an update, this module *when*.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import numpy as np

Job = TypeVar("Job")


class BackgroundAudits(Generic[Job]):
    """A queue of copied updates attacked one at a time on a daemon thread (audit mode), drained at the end of a run.

    ``attack`` must not raise: the caller records failures itself; anything that escapes is passed to
    ``on_crash`` so that one bad update never stops the worker.
    """

    def __init__(self, attack: Callable[[Job], None], on_crash: Callable[[Job, BaseException], None]):
        self._attack, self._on_crash = attack, on_crash
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Job) -> int:
        """Queue ``job``; returns how many are waiting."""
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="gradinv-audit", daemon=True)
                self._worker.start()
        self._queue.put(job)
        return self._queue.qsize()

    def waiting(self) -> int:
        return self._queue.qsize()

    def drain(self) -> None:
        """Attack everything queued, then stop the worker."""
        with self._lock:
            worker = self._worker
            self._worker = None
        if worker is not None:
            self._queue.put(None)
            worker.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                try:
                    self._attack(job)
                except Exception as exc:  # noqa: BLE001 - one bad update must not stop the worker
                    self._on_crash(job, exc)
            finally:
                self._queue.task_done()


class DecisionMemory:
    """The decision taken on each (round, site, update content).

    A client whose submission timed out while the filter held the server re-sends the same update; it gets the
    same decision without a second attack.
    """

    def __init__(self) -> None:
        self._decided: dict[tuple[int, str, str], str] = {}

    @staticmethod
    def key(round_num: int, site: str, arrays: Mapping[str, np.ndarray]) -> tuple[int, str, str]:
        return round_num, site, fingerprint(arrays)

    def get(self, key: tuple[int, str, str]) -> str | None:
        return self._decided.get(key)

    def remember(self, key: tuple[int, str, str], decision: str) -> None:
        self._decided[key] = decision


def fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the names and bytes of ``arrays`` (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()
