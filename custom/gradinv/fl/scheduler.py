"""When updates are attacked: audit mode's background worker, and one decision per submitted update.

Both are plain Python (no NVFlare): the filter decides *what* to do with an update, this module *when*.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import functools
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


@dataclasses.dataclass(eq=False)  # compared by identity: the queue finds its own items, not equal-looking ones
class Queued(Generic[Job]):
    """One update waiting for its attack: in memory (``job``) or spilled to disk (``path``), never both."""

    round_num: int
    site: str
    job: Job | None = None
    path: Path | None = None


class BackgroundAudits(Generic[Job]):
    """Audit mode's queue: at most ``max_in_memory`` updates held in memory, the rest spilled, attacked by ``workers``.

    Memory stays bounded however slow the attack is: an update is kept in memory (``own`` makes the copy the queue
    keeps) while fewer than ``max_in_memory`` are (queued or under attack), else it goes to disk through ``spill``
    at once and the queue holds only its path. A submitted job may borrow its caller's memory: ``spill`` writes it
    as it is. Writing to disk is what a caller on FedAvg's path would wait for, so a spiller thread writes the queued
    in-memory updates that no worker takes now (with ``spilled_only``, every one: the attacks then read updates from
    disk only, e.g. attack processes), which frees their memory for the next ones. An update that cannot be written
    there stays in memory for an in-process attack, or, with ``spilled_only``, is accounted as ``not_attacked``.
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
        spilled_only: bool = False,
    ):
        if policy not in AUDIT_POLICIES:
            raise ValueError(f"audit policy must be one of {AUDIT_POLICIES}, got {policy!r}")
        self._attack, self._on_crash, self._spill, self._account = attack, on_crash, spill, account
        self._max_in_memory, self._policy, self._own = max_in_memory, policy, own
        self._spilled_only = spilled_only
        self._queue: collections.deque[Queued[Job]] = collections.deque()
        self._in_memory = 0  # queued in memory + under attack in memory
        self._busy = 0  # attacks under way
        self._being_spilled: set[Queued[Job]] = set()  # by the spiller thread, still queued
        self._unspillable: set[Queued[Job]] = set()  # its write failed: attacked from memory (not spilled_only)
        self._stopping = False
        self._deadline_passed = threading.Event()  # attacks under way stop at once (see stop_attacks_when)
        self._interrupted: list[Queued[Job]] = []  # stopped by the deadline, still counted in memory until left
        self._changed = threading.Condition()
        self._worker_count = workers
        self._threads: list[threading.Thread] = []

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
            if old.path is not None:  # its row is written: `gradinv audit` must not attack it later
                old.path.unlink(missing_ok=True)
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
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._run, name=f"gradinv-audit-{number}", daemon=True)
                    for number in range(self._worker_count)
                ]
                self._threads.append(threading.Thread(target=self._spill_behind, name="gradinv-spill", daemon=True))
                for thread in self._threads:
                    thread.start()
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
        one attack step (or one stopped attack process, or the spill under way) after ``timeout_s``. Left items still
        in memory are spilled, so that ``gradinv audit`` can attack them later; each is accounted as ``not_attacked``.
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
            self._changed.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join()
        with self._changed:  # only now: the spiller thread may have settled an item of the queue since the deadline
            left = list(self._queue)
            self._queue.clear()
            interrupted, self._interrupted = self._interrupted, []
        why = f"drain_timeout_s={timeout_s} reached at the end of the run"
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

    def _ready(self) -> Queued[Job] | None:
        """The oldest queued item a worker can attack now (lock held)."""
        for item in self._queue:
            if item not in self._being_spilled and (item.path is not None or not self._spilled_only):
                return item
        return None

    def _to_spill(self) -> Queued[Job] | None:
        """The queued in-memory item the spiller thread should write now, if any (lock held): with ``spilled_only``
        the oldest (the workers wait for it), else the newest, and only while every worker is busy."""
        if not self._spilled_only and self._busy < self._worker_count:
            return None
        candidates = [item for item in self._queue if item.job is not None and item not in self._unspillable]
        if not candidates:
            return None
        return candidates[0] if self._spilled_only else candidates[-1]

    def _spill_behind(self) -> None:
        while True:
            with self._changed:
                while not self._stopping and (item := self._to_spill()) is None:
                    self._changed.wait()
                if self._stopping:
                    return
                self._being_spilled.add(item)
            failure = None
            try:
                path = self._spill(item.job)
            except OSError as exc:
                failure = exc
            with self._changed:
                self._being_spilled.discard(item)
                queued = item in self._queue
                if failure is None and queued:
                    item.job, item.path = None, path
                    self._in_memory -= 1
                elif failure is None:  # superseded (latest_per_site) while it was written
                    path.unlink(missing_ok=True)
                elif queued and self._spilled_only:  # no attack could read it
                    self._queue.remove(item)
                    self._in_memory -= 1
                elif queued:
                    self._unspillable.add(item)
                self._changed.notify_all()
            if failure is None:
                return_freed_memory()
            elif queued and self._spilled_only:
                self._account(item, "not_attacked", f"it could not be written for an attack process ({failure}); "
                              "free disk space in the run dir")

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopping and (item := self._ready()) is None:
                    self._changed.wait()
                if self._stopping:
                    return
                self._queue.remove(item)
                self._unspillable.discard(item)
                self._busy += 1
                self._changed.notify_all()  # the spiller may now write a waiting one
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


def return_freed_memory() -> None:
    """Give the memory of freed updates back to the operating system where the C library allows it (glibc).

    glibc keeps freed blocks in the arenas of the threads that freed them, so a server process's resident size grew by
    the updates it had held and spilled long after (+6 model copies in the soak benchmark's 20 rounds, +1.6 with this).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


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
