"""Attack processes beside the server's job process (audit mode with ``audit_workers >= 1``).

The attack is CPU/GPU bound, so threads of the server process add no capacity; each worker is a ``spawn``-ed process
that reads spilled updates by path (no tensor crosses a pipe), attacks them with the run's settings and writes their
artifacts and ``metrics.csv`` row itself, through the same code as the in-process worker. Each process gets its share
of the CPU cores (oversubscribed torch threads slowed attacks 25x on a shared machine) or its own GPU, and runs at a
lower CPU priority (nice +10) than the server, whose rounds it must not slow. A worker that dies (killed, out of
memory) costs its update an ``error`` row; the next update starts a fresh process. At the drain deadline the process
under way is told to stop (it stops at its attack's next step, writing nothing) and is killed when it does not answer
within ``_STOP_WAIT_S``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import multiprocessing
import os
import pickle
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from torch import nn

from gradinv.artifact_layout import METRICS_COLUMNS, METRICS_CSV
from gradinv.attack.invert import AttackStopped, stop_attacks_when, stop_requested
from gradinv.compat import import_torchvision
from gradinv.fl.auditor import LeakageAuditor, UpdateToAudit, datalists_by_site
from gradinv.fl.scheduler import Queued
from gradinv.fl.settings import AuditSettings
from gradinv.fl.spill import attack_spilled_update, pending_dir
from gradinv.private_files import write_private_text

_log = logging.getLogger(__name__)
_STOP = None  # to a process: exit
_CANCEL = "cancel"  # to a process: stop the attack under way
_STOPPED = "stopped"  # from a process: the attack was stopped, no row written
_STOP_WAIT_S = 10.0
_POLL_S = 0.5  # how soon a stop request (the drain deadline) reaches the process under way
_START_ALLOWANCE_S = 120.0  # importing torch and building the model in a fresh process, on a loaded machine
_NICENESS = 10  # added to the server's: FedAvg's threads get the cores first when both want them


def gpu_count() -> int:
    """The CUDA devices this process can use (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_worker_count() -> int:
    """What ``audit_workers=None`` means: one attack process per GPU, and one on a CPU-only server.

    Never the server's own thread by default: the attack's own memory then stays out of the server process (in it,
    a ResNet-18 attack added about 20 model copies to the server's peak in the soak benchmark).
    """
    return max(1, gpu_count())


class AttackProcesses:
    """``count`` attack processes; :meth:`attack` is called by one :class:`BackgroundAudits` thread per process."""

    def __init__(self, count: int, out_dir: Path, model: nn.Module, settings: AuditSettings, auditor: LeakageAuditor):
        self._count, self._out_dir, self._settings = count, Path(out_dir), settings
        # The processes load the model from a file: the server process keeps no reference to it, and starting a
        # process costs no in-memory pickle of it.
        self._model_file = _save_model(model, pending_dir(self._out_dir))
        self._auditor = auditor  # the server-side one: writes the rows of updates whose process died
        self._context = multiprocessing.get_context("spawn")
        self._local = threading.local()
        self._started: list[tuple[Any, Connection]] = []
        self._lock = threading.Lock()
        self._next_slot = 0
        _start_metrics_csv(self._out_dir)

    def attack(self, item: Queued[UpdateToAudit]) -> None:
        """Have this thread's process attack the spilled update ``item``; record an ``error`` row if it dies.

        Raises :class:`AttackStopped` when :func:`stop_requested` (the drain deadline) ends the attack first.
        """
        worker = getattr(self._local, "worker", None)
        if worker is None or not worker[0].is_alive():
            worker = self._local.worker = self._start()
        process, connection = worker
        # The attack stops itself at its time budget; a process far past it is stuck (a hung GPU driver).
        limit_s = 2 * self._settings.time_budget_s + _START_ALLOWANCE_S
        try:
            connection.send((str(item.path), item.round_num, item.site))
            give_up = time.monotonic() + limit_s
            while not connection.poll(_POLL_S):
                if stop_requested():
                    self._cancel(process, connection, item)
                    return
                if time.monotonic() > give_up:
                    process.kill()
                    raise TimeoutError(f"no result {limit_s:.0f} s after the update was sent; the process was killed")
            connection.recv()  # the row; the worker wrote it already
        except (EOFError, OSError, TimeoutError) as exc:
            process.join(_STOP_WAIT_S)
            reason = (f"the attack process died (exit code {process.exitcode}: {exc or 'killed'}); the update "
                      f"stays at {item.path.name} for `gradinv audit RUN_DIR`")
            _log.error("gradinv: round %s %s: %s", item.round_num, item.site, reason)
            self._auditor.record_failure(item.round_num, item.site, "error", "pass", reason)
            self._local.worker = None

    def _cancel(self, process: Any, connection: Connection, item: Queued[UpdateToAudit]) -> None:
        """Stop the attack under way in ``process``; returns normally only if it finished first (its row is written).

        The process stops at its attack's next step and writes nothing. One that does not answer in time (still
        importing torch or compiling the step, or stuck) is killed: it was not writing, since a finished attack
        answers with its row at once.
        """
        answered = False
        try:
            connection.send(_CANCEL)
            if connection.poll(_STOP_WAIT_S):
                if connection.recv() != _STOPPED:
                    return
                answered = True
        except (EOFError, OSError):
            pass
        if not answered:
            process.kill()
            process.join(_STOP_WAIT_S)
            self._local.worker = None
        raise AttackStopped(f"round {item.round_num} {item.site}: its attack process was "
                            f"{'stopped' if answered else 'killed'} at the drain deadline")

    def close(self) -> None:
        """Stop every process (after the queue drained); a process that does not stop in time is killed."""
        with self._lock:
            started, self._started = self._started, []
        for process, connection in started:
            try:
                connection.send(_STOP)
            except OSError:
                pass
            process.join(_STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
        self._model_file.unlink(missing_ok=True)

    def _start(self) -> tuple[Any, Connection]:
        with self._lock:
            slot, self._next_slot = self._next_slot, self._next_slot + 1
        settings = self._settings
        if settings.device == "auto":
            gpus = gpu_count()
            settings = dataclasses.replace(settings, device=f"cuda:{slot % gpus}" if gpus else "cpu")
        threads = settings.num_threads or max(1, (os.cpu_count() or 1) // self._count)
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child, self._out_dir, self._model_file, settings, threads),
            name=f"gradinv-attack-{slot}",
            daemon=True,  # never outlives the server's job process
        )
        process.start()
        child.close()
        with self._lock:
            self._started.append((process, parent))
        return process, parent


def _serve(connection: Connection, out_dir: Path, model_file: Path, settings: AuditSettings, threads: int) -> None:
    """A worker process: attack the spilled updates named on ``connection`` until told to stop."""
    import torch

    if hasattr(os, "nice"):
        os.nice(_NICENESS)

    torch.set_num_threads(threads)
    if importlib.util.find_spec("torchvision") is not None:
        # A model of torchvision's classes (the paper's ResNet-18) imports torchvision as it is unpickled, which
        # fails beside a CPU build of torch unless gradinv.compat prepares it first.
        import_torchvision()
    with open(model_file, "rb") as handle:
        model: nn.Module = pickle.load(handle)
    auditor = LeakageAuditor(out_dir, model, settings, audit_datalists=datalists_by_site(settings.audit_datalists))
    while True:
        try:
            request = connection.recv()
        except EOFError:  # the server process went away
            return
        if request is _STOP:
            return
        if request == _CANCEL:  # it arrived after the attack it was meant for had finished
            continue
        path, round_num, site = request
        item = Queued(round_num, site, path=Path(path))
        try:
            # Any message waiting while attacking is the parent's cancel (it sends nothing else meanwhile).
            with stop_attacks_when(connection.poll):
                row = attack_spilled_update(auditor, item, settings, _log.error, lambda row: None)
        except AttackStopped:
            connection.send(_STOPPED)
            continue
        connection.send({key: row.get(key) for key in ("round", "site", "status")})


def _save_model(model: nn.Module, folder: Path) -> Path:
    """Pickle ``model`` into a new 0600 file in ``folder``, streamed (no in-memory pickle of it)."""
    descriptor, path = tempfile.mkstemp(prefix=".attack_model.", suffix=".pkl", dir=folder)
    with os.fdopen(descriptor, "wb") as handle:
        pickle.dump(model, handle)
    return Path(path)


def _start_metrics_csv(out_dir: Path) -> None:
    """Write metrics.csv's header before several processes append rows, so that none of them writes a second one."""
    path = out_dir / METRICS_CSV
    if not path.exists():
        write_private_text(path, ",".join(METRICS_COLUMNS) + "\r\n")  # what csv.writer writes for the header
