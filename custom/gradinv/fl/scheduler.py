"""When updates are attacked: audit mode's background worker, and one decision per submitted update.

Both are plain Python (no NVFlare): the filter decides *what* to do with an update, this module *when*.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from gradinv.attack.invert import AttackStopped, stop_attacks_when

Job = TypeVar("Job")


# every_kth_round is the filter's: it skips the other rounds' updates before they reach the queue.
AUDIT_POLICIES = ("all", "latest_per_site", "every_kth_round")


@dataclasses.dataclass
class Queued(Generic[Job]):
    """One update waiting for its attack: in memory (``job``) or spilled to disk (``path``), never both."""

    round_num: int
    site: str
    job: Job | None = None
    path: Path | None = None


class BackgroundAudits(Generic[Job]):
    """Audit mode's queue: at most ``max_in_memory`` updates held in memory, the rest spilled, attacked by ``workers``.

    Memory stays bounded however slow the attack is: beyond ``max_in_memory`` copies (queued or under attack) an
    update goes to disk through ``spill`` and the queue holds only its path. A submitted job may borrow its caller's
    memory: ``spill`` writes it as it is, and ``own`` makes the copy the queue keeps when it keeps one in memory.
    With ``policy="latest_per_site"`` a site's newer update replaces its older one still waiting, which is accounted
    for as ``skipped``. Every item ends in exactly one call: ``attack`` (which records the update's row itself and
    must not raise; what escapes goes to ``on_crash``) or ``account(item, status, reason)`` for the updates that are
    not attacked. ``attack`` runs inside :func:`~gradinv.attack.invert.stop_attacks_when`: at the drain deadline it
    should raise :class:`~gradinv.attack.invert.AttackStopped` (an attack in this process does, at its next step)
    without a row, and its update is left like one never started.
    """

    def __init__(
        self,
        attack: Callable[[Queued[Job]], None],
        on_crash: Callable[[Queued[Job], BaseException], None],
        spill: Callable[[Job], Path],
        account: Callable[[Queued[Job], str, str], None],
        max_in_memory: int = 2,
        policy: str = "all",
        workers: int = 1,
        own: Callable[[Job], Job] = lambda job: job,
    ):
        if policy not in AUDIT_POLICIES:
            raise ValueError(f"audit policy must be one of {AUDIT_POLICIES}, got {policy!r}")
        self._attack, self._on_crash, self._spill, self._account = attack, on_crash, spill, account
        self._max_in_memory, self._policy, self._own = max_in_memory, policy, own
        self._queue: collections.deque[Queued[Job]] = collections.deque()
        self._in_memory = 0  # queued in memory + under attack in memory
        self._busy = 0  # attacks under way
        self._stopping = False
        self._deadline_passed = threading.Event()  # attacks under way stop at once (see stop_attacks_when)
        self._interrupted: list[Queued[Job]] = []  # stopped by the deadline, still counted in memory until left
        self._changed = threading.Condition()
        self._worker_count = workers
        self._workers: list[threading.Thread] = []

    def submit(self, round_num: int, site: str, job: Job) -> int:
        """Queue ``job`` (in memory, or spilled when the bound is reached); returns how many are waiting.

        ``job`` is not used after this returns: what the queue keeps is ``own(job)`` or the spilled file.
        """
        superseded: list[Queued[Job]] = []
        item = Queued(round_num, site, job)
        with self._changed:
            if self._stopping:
                raise RuntimeError("the audit queue is draining; no new update can be queued")
            if self._policy == "latest_per_site":
                superseded = [old for old in self._queue if old.site == site]
                for old in superseded:
                    self._queue.remove(old)
                    self._in_memory -= old.job is not None
            spill = self._in_memory >= self._max_in_memory
            if not spill:
                self._in_memory += 1
        for old in superseded:
            reason = f"superseded by the round {round_num} update of {site} (audit_policy=latest_per_site)"
            self._account(old, "skipped", reason)
        if spill:
            try:
                item = Queued(round_num, site, path=self._spill(job))
            except OSError as exc:
                self._account(item, "not_attacked", f"{self._max_in_memory} updates already held in memory and "
                              f"spilling this one failed ({exc}); free disk space in the run dir")
                return self.waiting()
        else:
            item = Queued(round_num, site, self._own(job))
        return self._append(item)

    def submit_spilled(self, round_num: int, site: str, path: Path) -> int:
        """Queue an update that is on disk already (``gradinv audit RUN_DIR``'s); returns how many are waiting."""
        with self._changed:
            if self._stopping:
                raise RuntimeError("the audit queue is draining; no new update can be queued")
        return self._append(Queued(round_num, site, path=path))

    def _append(self, item: Queued[Job]) -> int:
        with self._changed:
            self._queue.append(item)
            if not self._workers:
                self._workers = [
                    threading.Thread(target=self._run, name=f"gradinv-audit-{number}", daemon=True)
                    for number in range(self._worker_count)
                ]
                for worker in self._workers:
                    worker.start()
            self._changed.notify_all()
            return len(self._queue)

    def waiting(self) -> int:
        with self._changed:
            return len(self._queue)

    def in_memory(self) -> int:
        """Updates held in memory now (queued or under attack)."""
        with self._changed:
            return self._in_memory

    def drain(self, timeout_s: float | None = None) -> list[Queued[Job]]:
        """Attack what is queued for at most ``timeout_s``, then stop; returns the items left unattacked.

        At the deadline the attacks under way are stopped (see the class) and the queue is emptied: the drain ends
        one attack step (or one stopped attack process) after ``timeout_s``. Left items still in memory are spilled,
        so that ``gradinv audit`` can attack them later; each is accounted as ``not_attacked``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining)
            self._stopping = True
            self._deadline_passed.set()
            left = list(self._queue)
            self._queue.clear()
            self._changed.notify_all()
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join()
        why = f"drain_timeout_s={timeout_s} reached at the end of the run"
        with self._changed:
            interrupted, self._interrupted = self._interrupted, []
        for item in interrupted:
            self._leave(item, f"{why} while its attack was under way (stopped)")
        for item in left:
            self._leave(item, why)
        return interrupted + left

    def _leave(self, item: Queued[Job], why: str) -> None:
        if item.job is not None:
            try:
                item = Queued(item.round_num, item.site, path=self._spill(item.job))
            except OSError as exc:
                self._settle(Queued(item.round_num, item.site, item.job), "not_attacked", f"{why}; could not be kept "
                             f"on disk ({exc})")
                return
            with self._changed:
                self._in_memory -= 1
        self._account(item, "not_attacked", f"{why}; kept at {item.path.name} for `gradinv audit RUN_DIR`")

    def _settle(self, item: Queued[Job], status: str, reason: str) -> None:
        with self._changed:
            self._in_memory -= item.job is not None
        self._account(item, status, reason)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._busy += 1
            stopped = False
            try:
                with stop_attacks_when(self._deadline_passed.is_set):
                    self._attack(item)
            except AttackStopped:
                stopped = True
            except Exception as exc:  # noqa: BLE001 - one bad update must not stop the worker
                self._on_crash(item, exc)
            finally:
                with self._changed:
                    if stopped:
                        self._interrupted.append(item)
                    else:
                        self._in_memory -= item.job is not None
                    self._busy -= 1
                    self._changed.notify_all()


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
        digest.update(np.ascontiguousarray(arrays[name]).data)  # the array's own memory: no copy
    return digest.hexdigest()
