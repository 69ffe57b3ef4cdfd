"""``GradInversionAggregatorFilter``: the server-side task-result filter that inverts every client update.

Add it as a server input filter for the ``train`` task (``tasks=["train"]`` is required in NVFlare 2.9):

    recipe.add_server_input_filter(GradInversionAggregatorFilter(), tasks=["train"])

For each client result it checks the update, reconstructs the client's images from it (replaying the
client's local training, :mod:`gradinv.attack`), scores the leakage, writes artifacts under
``<run_dir>/gradinv/`` and then lets FedAvg proceed, or blocks the update. It never raises out of
``process`` (an exception there aborts the whole FL job) and never modifies the arrays it receives.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType

from gradinv import __version__
from gradinv.arrays import to_numpy
from gradinv.attack import AUTO_PRESET, resolve_device
from gradinv.errors import AttackInputError, GradinvError
from gradinv.fl.artifacts import safe_path_part
from gradinv.fl.auditor import LeakageAuditor, UpdateToAudit, datalists_by_site
from gradinv.fl.job_model import job_model
from gradinv.fl.meta import META_TEST_ACCURACY
from gradinv.fl.scheduler import BackgroundAudits, DecisionMemory, Queued
from gradinv.fl.settings import AuditSettings
from gradinv.fl.spill import RoundSpiller, attack_spilled_update, pending_dir
from gradinv.fl.worker_pool import AttackProcesses, default_worker_count
from gradinv.models.spec import ModelSpec, build_from_spec, describe_spec

_SETTING_NAMES = frozenset(field.name for field in dataclasses.fields(AuditSettings))
_ROUNDS_KEPT = 2  # late results of the previous round may still arrive while the next one starts


class GradInversionAggregatorFilter(DXOFilter):
    """Invert each client's weight update before FedAvg uses it; measure, record, and optionally block.

    Every argument is a field of :class:`~gradinv.fl.settings.AuditSettings` (documented there), validated here, at
    construction. With no argument the filter attacks the job's own model with what each client's meta says
    (:func:`gradinv.fl.training_meta`).
    """

    def __init__(
        self,
        model: ModelSpec | None = None,
        input_shape: tuple[int, int, int] | None = None,
        normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        num_classes: int | None = None,
        client_training: dict | None = None,
        preset: str = AUTO_PRESET,
        attack_overrides: dict | None = None,
        mode: str = "gate",
        block_threshold: float | None = None,
        block_metric: str = "auto",
        time_budget_s: float = 300.0,
        fail_closed: bool = False,
        audit_datalists: str | None = None,
        prior: str = "sample",
        save_images: bool = True,
        out_subdir: str = "gradinv",
        device: str = "auto",
        start_round: int = 0,
        frequency: int = 1,
        seed: int = 0,
        num_threads: int | None = None,
        report: bool = True,
        progress: bool = True,
        audit_max_pending: int = 2,
        audit_policy: str = "all",
        audit_round_interval: int = 1,
        drain_timeout_s: float = 600.0,
        keep_updates: bool = False,
        audit_workers: int | None = None,
    ):
        super().__init__(
            supported_data_kinds=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS],
            data_kinds_to_filter=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS],
        )
        arguments = {name: value for name, value in locals().items() if name in _SETTING_NAMES}
        self.settings = AuditSettings(**arguments)  # raises ConfigurationError (a ValueError) naming every problem
        # Kept under their own names, as given: NVFlare's job API exports constructor arguments from there.
        for name, value in arguments.items():
            setattr(self, name, value)

        self._auditor: LeakageAuditor | None = None
        self._base_by_round: dict[int, Mapping[str, np.ndarray]] = {}
        self._test_accuracy: dict[int, dict[str, float]] = {}
        self._decisions = DecisionMemory()
        self._background: BackgroundAudits[UpdateToAudit] | None = None
        self._processes: AttackProcesses | None = None
        self._spiller: RoundSpiller | None = None
        self._lock = threading.Lock()

    # --- events ----------------------------------------------------------------------------------------------
    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        try:
            if event_type == AppEventType.BEFORE_TRAIN_TASK:
                self._capture_global_model(fl_ctx)
            elif event_type == EventType.START_RUN:
                self._get_auditor(fl_ctx)
            elif event_type == EventType.END_RUN:
                self._finish_run(fl_ctx)
        except Exception as exc:  # noqa: BLE001 - an exception here must not disturb the run
            self.log_exception(fl_ctx, f"gradinv: handling {event_type} failed: {exc}")

    def _capture_global_model(self, fl_ctx: FLContext) -> None:
        task = fl_ctx.get_prop(AppConstants.TRAIN_SHAREABLE)
        if task is None:
            return
        round_num = task.get_header(AppConstants.CURRENT_ROUND)
        if round_num is None:
            return
        round_num = int(round_num)
        if round_num in self._base_by_round or not self._attacks_round(round_num) or self._round_left_out(round_num):
            return
        weights = from_shareable(task).data or {}
        base = self._keep_global_model(fl_ctx, round_num, weights)
        with self._lock:
            self._base_by_round[round_num] = base
            for old in sorted(self._base_by_round)[:-_ROUNDS_KEPT]:
                del self._base_by_round[old]
            live_rounds = set(self._base_by_round)
        if self._spiller is not None:  # the spilled global models of rounds over and done with
            self._spiller.discard_unused(live_rounds)
        self.log_info(fl_ctx, f"gradinv: captured the global model of round {round_num} ({len(weights)} entries)")

    def _keep_global_model(self, fl_ctx: FLContext, round_num: int, weights: Mapping[str, Any]) -> Mapping[str, Any]:
        """The filter's own copy of a round's global model: on disk only when attack processes read every update from
        there (the server then holds no model copy between rounds), else in memory."""
        if self._attack_processes_wanted():
            try:
                return self._round_spiller(fl_ctx).capture(
                    round_num, {name: _as_array(value, copy=False) for name, value in weights.items()}
                )
            except OSError as exc:
                self.log_warning(fl_ctx, f"gradinv: could not write the global model of round {round_num} to the "
                                 f"run dir ({exc}); keeping it in memory (free disk space)")
        return {name: _as_array(value) for name, value in weights.items()}

    # --- the filter --------------------------------------------------------------------------------------------
    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        site = self._site(shareable, fl_ctx)
        try:
            return_code = shareable.get_return_code()
            if return_code != ReturnCode.OK:
                self.log_info(fl_ctx, f"gradinv: result from {site} is an error reply ({return_code}); passed through")
                return shareable
            try:
                dxo = from_shareable(shareable)
            except Exception:  # noqa: BLE001 - whatever it is, it is not a DXO
                self.log_warning(fl_ctx, f"gradinv: result from {site} is not a DXO; passed through unchecked")
                return shareable
            if not dxo.data:
                self.log_warning(
                    fl_ctx, f"gradinv: result from {site} is an empty update, nothing to check; passed through"
                )
                return shareable
            return super().process(shareable, fl_ctx)
        except Exception as exc:  # noqa: BLE001 - fail open (or closed), never abort the job
            self.log_exception(fl_ctx, f"gradinv: filter failed on the result from {site}: {exc}")
            return _blocked_shareable(shareable) if self.settings.fail_closed else shareable

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        site = self._site(shareable, fl_ctx)
        round_num = shareable.get_cookie(
            AppConstants.CONTRIBUTION_ROUND, shareable.get_header(AppConstants.CURRENT_ROUND)
        )
        started = time.monotonic()
        if round_num is None:
            return self._invalid(fl_ctx, -1, site, dxo, "the result carries no round number", started)
        round_num = int(round_num)
        self._record_test_accuracy(round_num, site, dxo.meta)
        if not self._attacks_round(round_num):
            return None
        if self._round_left_out(round_num):
            self._record_skipped(fl_ctx, round_num, site, dxo.meta)
            return None
        with self._lock:
            base = self._base_by_round.get(round_num)
        if base is None:
            return self._invalid(
                fl_ctx,
                round_num,
                site,
                dxo,
                f"no global model was captured for round {round_num} (known rounds: "
                f"{sorted(self._base_by_round)}); cannot tell what the client changed",
                started,
            )
        try:
            # Audit mode only reads the received arrays before this returns (to spill them, or to copy the few it
            # keeps in memory): no copy of its own for each update.
            update = self._copy_update(fl_ctx, round_num, site, base, dxo, copy=self.settings.mode != "audit")
        except AttackInputError as exc:
            return self._invalid(fl_ctx, round_num, site, dxo, str(exc), started)

        key = self._decisions.key(round_num, site, update.diff)
        decision = self._decisions.get(key)
        if decision is not None:
            self.log_info(
                fl_ctx,
                f"gradinv: round {round_num} {site}: the same update again (a re-sent submission); "
                f"applying its earlier decision '{decision}' without a second attack",
            )
            return _blocked_dxo(dxo) if decision == "block" else None
        auditor = self._get_auditor(fl_ctx)
        if self.settings.mode == "audit":
            try:
                self._enqueue(update, fl_ctx, started)
            except AttackInputError as exc:
                return self._invalid(fl_ctx, round_num, site, dxo, str(exc), started)
            self._decisions.remember(key, "pass")
            return None
        try:
            outcome = auditor.audit(update, time_budget_s=self.settings.time_budget_s)
        except AttackInputError as exc:
            return self._invalid(fl_ctx, round_num, site, dxo, str(exc), started)
        except Exception as exc:  # noqa: BLE001
            self.log_exception(fl_ctx, f"gradinv: round {round_num} {site}: attack failed: {exc}")
            decision = "block" if self.settings.fail_closed else "pass"
            auditor.record_failure(
                round_num, site, "error", decision, f"attack failed: {exc}", dxo.meta, time.monotonic() - started
            )
            return _blocked_dxo(dxo) if decision == "block" else None
        self._decisions.remember(key, outcome.decision)
        self._log_outcome(fl_ctx, outcome.row)
        self._write_tensorboard(outcome.row)
        if outcome.decision == "block":
            self.log_warning(
                fl_ctx,
                f"gradinv: round {round_num} {site}: update BLOCKED ({outcome.reason}); "
                "it contributes nothing to this round's aggregate",
            )
            return _blocked_dxo(dxo)
        return None

    # --- helpers -----------------------------------------------------------------------------------------------
    def _attacks_round(self, round_num: int) -> bool:
        """Whether ``start_round`` and ``frequency`` select this round (the others' updates pass unread)."""
        start, frequency = self.settings.start_round, self.settings.frequency
        return round_num >= start and (round_num - start) % frequency == 0

    def _round_left_out(self, round_num: int) -> bool:
        """Whether audit mode's ``every_kth_round`` policy leaves this round out (its updates get a ``skipped`` row)."""
        settings = self.settings
        return (settings.mode == "audit" and settings.audit_policy == "every_kth_round"
                and round_num % settings.audit_round_interval != 0)

    def _record_skipped(self, fl_ctx: FLContext, round_num: int, site: str, meta: Mapping[str, Any] | None) -> None:
        """The one ``skipped`` row of a site's update in a round left out. Nothing of the update is read (no copy, no
        fingerprint, no offloaded tensor loaded): a re-sent update of that round and site gets no second row."""
        key = (round_num, site, "every_kth_round")
        if self._decisions.get(key) is not None:
            return
        self._decisions.remember(key, "pass")
        interval = self.settings.audit_round_interval
        reason = f"round {round_num} is not audited (audit_policy=every_kth_round, every {interval} rounds)"
        self.log_info(fl_ctx, f"gradinv: round {round_num} {site}: skipped: {reason}")
        self._get_auditor(fl_ctx).record_failure(round_num, site, "skipped", "pass", reason, _plain_meta(meta))

    def _copy_update(
        self, fl_ctx: FLContext, round_num: int, site: str, base: Mapping[str, np.ndarray], dxo: DXO, copy: bool = True
    ) -> UpdateToAudit:
        """The update as numpy arrays: copies of the received ones, or with ``copy=False`` views of them where they
        are numpy or CPU tensors already (see :func:`_as_array`)."""
        data = {name: _as_array(value, copy) for name, value in dxo.data.items()}
        if dxo.data_kind == DataKind.WEIGHTS:
            self.log_info(
                fl_ctx, f"gradinv: round {round_num} {site}: received full WEIGHTS, attacking weights - global"
            )
            # Full weights are global + diff; the attack needs the diff.
            unknown = sorted(set(data) - set(base))
            if unknown:
                raise AttackInputError(f"the WEIGHTS update has entries the global model lacks: {unknown[:4]}")
            data = {name: value.astype(np.float64) - base[name].astype(np.float64) for name, value in data.items()}
        return UpdateToAudit(round_num, site, base, data, _plain_meta(dxo.meta))

    def _invalid(
        self, fl_ctx: FLContext, round_num: int, site: str, dxo: DXO, reason: str, started: float
    ) -> DXO | None:
        decision = "block" if self.settings.fail_closed else "pass"
        self.log_error(
            fl_ctx,
            f"gradinv: round {round_num} {site}: invalid update: {reason}; "
            f"{'BLOCKED (fail_closed)' if decision == 'block' else 'passed through unchecked'}",
        )
        try:
            self._get_auditor(fl_ctx).record_failure(
                round_num, site, "invalid", decision, reason, dxo.meta, time.monotonic() - started
            )
        except Exception as exc:  # noqa: BLE001
            self.log_exception(fl_ctx, f"gradinv: could not record the invalid update: {exc}")
        return _blocked_dxo(dxo) if decision == "block" else None

    def _site(self, shareable: Shareable, fl_ctx: FLContext) -> str:
        from nvflare.apis.fl_constant import ReservedKey

        name = None
        peer = fl_ctx.get_peer_context()
        if peer is not None:
            name = peer.get_identity_name()
        if not name:
            name = shareable.get_peer_prop(ReservedKey.IDENTITY_NAME, None)
        return safe_path_part(name or "unknown-site")

    def _get_auditor(self, fl_ctx: FLContext) -> LeakageAuditor:
        with self._lock:
            if self._auditor is None:
                settings = self.settings
                engine = fl_ctx.get_engine()
                run_dir = Path(engine.get_workspace().get_run_dir(fl_ctx.get_job_id()))
                out_dir = run_dir / safe_path_part(settings.out_subdir, "gradinv")
                if settings.num_threads:
                    import torch

                    torch.set_num_threads(int(settings.num_threads))
                model_pending = settings.model is None
                if model_pending:
                    # Resolved at the first update: by then the persistor has built the job's model.
                    model = functools.partial(job_model, engine)
                else:
                    model = build_from_spec(
                        settings.model, num_classes=settings.num_classes, input_shape=settings.input_shape
                    )
                self._auditor = LeakageAuditor(
                    out_dir, model, settings, audit_datalists=datalists_by_site(settings.audit_datalists)
                )
                preset_pending = model_pending and self._auditor.preset_is_auto
                self._auditor.writer.write_settings(
                    {
                        "gradinv_version": __version__,
                        "filter": _json_safe(settings.to_dict()),
                        "model": describe_spec(settings.model),
                        "prior": self._auditor.prior_description,
                        # With preset "auto" and the job's own model, the preset is known at the first update
                        # (every row names the one used).
                        "attack": None if preset_pending else self._auditor.config.to_dict(),
                        "mode": settings.mode,
                        "preset": self._auditor.preset,
                        "device": str(resolve_device(settings.device)),
                        "ground_truth": bool(settings.audit_datalists),
                    }
                )
                self.log_info(
                    fl_ctx,
                    f"gradinv: attacking {describe_spec(settings.model)}; writing leakage artifacts to {out_dir}",
                )
            return self._auditor

    def _enqueue(self, update: UpdateToAudit, fl_ctx: FLContext, started: float) -> None:
        """Queue ``update`` for a background attack; ``started``: when the filter got it (the log says how long it
        held FedAvg's result)."""
        spiller = self._round_spiller(fl_ctx)
        with self._lock:
            if self._background is None:
                settings = self.settings
                out_dir = self._auditor.writer.out_dir
                workers = self._audit_worker_count()
                attack = functools.partial(self._attack_in_background, fl_ctx)
                if workers:  # the processes read every update from disk, written by the queue's spiller thread
                    # The job's own model goes to the processes without staying in this one (the auditor here
                    # never attacks).
                    try:
                        model = job_model(fl_ctx.get_engine()) if settings.model is None else self._auditor.model
                    except GradinvError as exc:  # no model to attack: this update is invalid, the next may not be
                        raise AttackInputError(str(exc)) from exc
                    self._processes = AttackProcesses(workers, out_dir, model, settings, self._auditor)
                    attack = self._processes.attack
                self._background = BackgroundAudits(
                    attack,
                    functools.partial(self._background_crash, fl_ctx),
                    spiller,
                    functools.partial(self._account, fl_ctx),
                    max_in_memory=settings.audit_max_pending,
                    policy=settings.audit_policy,
                    workers=max(1, workers),
                    own=_owned_update,
                    spilled_only=bool(workers),
                )
                if workers:
                    self.log_info(fl_ctx, f"gradinv: {workers} attack process(es) beside the server process")
        waiting = self._background.submit(update.round_num, update.site, update)
        self.log_info(
            fl_ctx,
            f"gradinv: round {update.round_num} {update.site}: queued for a background attack after "
            f"{time.monotonic() - started:.3f} s in the filter ({waiting} waiting, {self._background.in_memory()} in "
            "memory)",
        )

    def _audit_worker_count(self) -> int:
        workers = self.settings.audit_workers
        return default_worker_count() if workers is None else workers

    def _attack_processes_wanted(self) -> bool:
        return self.settings.mode == "audit" and self._audit_worker_count() > 0

    def _round_spiller(self, fl_ctx: FLContext) -> RoundSpiller:
        """Audit mode's spiller, shared by the global models it captures and the queue's updates."""
        auditor = self._get_auditor(fl_ctx)
        with self._lock:
            if self._spiller is None:
                self._spiller = RoundSpiller(pending_dir(auditor.writer.out_dir))
            return self._spiller

    def _attack_in_background(self, fl_ctx: FLContext, item: Queued[UpdateToAudit]) -> None:
        attack_spilled_update(self._auditor, item, self.settings, log_error=lambda text: self.log_error(fl_ctx, text),
                              on_row=lambda row: self._on_background_row(fl_ctx, row))

    def _on_background_row(self, fl_ctx: FLContext, row: Mapping[str, Any]) -> None:
        self._log_outcome(fl_ctx, row)
        self._write_tensorboard(row)

    def _account(self, fl_ctx: FLContext, item: Queued[UpdateToAudit], status: str, reason: str) -> None:
        """The row of an update audit mode does not attack (skipped by the policy, or left at the drain deadline)."""
        self.log_warning(fl_ctx, f"gradinv: round {item.round_num} {item.site}: {status}: {reason}")
        meta = item.job.meta if item.job is not None else None
        self._auditor.record_failure(item.round_num, item.site, status, "pass", reason, meta)

    def _background_crash(self, fl_ctx: FLContext, item: Queued[UpdateToAudit], exc: BaseException) -> None:
        self.log_error(fl_ctx, f"gradinv: round {item.round_num} {item.site}: could not be recorded: {exc}")

    def _finish_run(self, fl_ctx: FLContext) -> None:
        if self._background is not None:
            timeout = self.settings.drain_timeout_s
            self.log_info(
                fl_ctx,
                f"gradinv: end of run, draining {self._background.waiting()} queued attack(s) for at most {timeout} s",
            )
            try:
                left = self._background.drain(timeout)
            finally:
                if self._processes is not None:
                    self._processes.close()
                self._spiller.discard_unused()
            if left:
                self.log_warning(
                    fl_ctx,
                    f"gradinv: {len(left)} update(s) not attacked by the drain deadline; they stay spilled under "
                    f"{pending_dir(self._auditor.writer.out_dir)}: run `gradinv audit RUN_DIR` to attack them",
                )
        if self._auditor is None:
            return
        from gradinv.report import close_tensorboard_writers

        close_tensorboard_writers()
        self._write_global_metrics(fl_ctx)
        if self.settings.report:
            from gradinv.report import build_report

            path = build_report(self._auditor.writer.out_dir)
            self.log_info(fl_ctx, f"gradinv: leakage report written to {path}")

    def _record_test_accuracy(self, round_num: int, site: str, meta: Mapping[str, Any] | None) -> None:
        value = (meta or {}).get(META_TEST_ACCURACY)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            with self._lock:
                self._test_accuracy.setdefault(round_num, {})[site] = float(value)

    def _write_global_metrics(self, fl_ctx: FLContext) -> None:
        rows = [
            {"round": r, "test_accuracy": float(np.mean(list(sites.values())))}
            for r, sites in sorted(self._test_accuracy.items())
        ]
        final = self._final_test_accuracy(fl_ctx)
        if final is not None:
            rows.append(final)
        if rows:
            self._auditor.writer.write_global_metrics(rows)

    def _final_test_accuracy(self, fl_ctx: FLContext) -> dict[str, Any] | None:
        """Accuracy of the model FedAvg ends with, when audit datalists give a test split."""
        learnable = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        datalists = datalists_by_site(self.settings.audit_datalists)
        weights = learnable.get("weights") if isinstance(learnable, Mapping) else None
        if not weights or not datalists:
            return None
        accuracy = self._auditor.test_accuracy(weights, next(iter(datalists.values())))
        if accuracy is None:
            return None
        last_round = max(self._test_accuracy, default=-1)
        self.log_info(fl_ctx, f"gradinv: final global model test accuracy {accuracy:.3f}")
        return {"round": last_round + 1, "test_accuracy": accuracy}

    def _log_outcome(self, fl_ctx: FLContext, row: Mapping[str, Any]) -> None:
        shown = ", ".join(
            f"{key}={_fmt(row.get(key))}"
            for key in ("status", "decision", "ssim", "rdlv_max", "lpips", "leak_score", "update_distance", "converged",
                        "seconds")
        )
        self.log_info(fl_ctx, f"gradinv: round {row['round']} {row['site']} ({row.get('num_images')} images): {shown}")

    def _write_tensorboard(self, row: Mapping[str, Any]) -> None:
        from gradinv.report import write_tensorboard_scalars

        metrics = {
            key: value
            for key, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("round",)
        }
        write_tensorboard_scalars(self._auditor.writer.out_dir / "tensorboard", row["round"], row["site"], metrics)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _as_array(value: Any, copy: bool = True) -> np.ndarray:
    """One received tensor as a numpy array of its own (``copy``), or else a view of it where it allows one.

    NVFlare's disk-offloaded tensors (``enable_tensor_disk_offload``) arrive as lazy references, read from disk here,
    once per attacked update (the shareable keeps its references).
    """
    materialize = getattr(value, "materialize", None)
    if callable(materialize):
        return to_numpy(materialize())  # already a fresh tensor: no second copy
    return to_numpy(value, copy=copy)


def _owned_update(update: UpdateToAudit) -> UpdateToAudit:
    """``update`` with a diff of its own, for audit mode's queue to keep in memory (the global state is the filter's
    own copy already)."""
    return dataclasses.replace(update, diff={name: np.array(value, copy=True) for name, value in update.diff.items()})


def _plain_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return json.loads(json.dumps(dict(meta or {}), default=str))


def _blocked_dxo(dxo: DXO) -> DXO:
    """An empty update of the same kind: FedAvg skips it, so the client contributes nothing this round."""
    meta = dict(dxo.meta or {})
    meta["gradinv_blocked"] = True
    return DXO(data_kind=dxo.data_kind, data={}, meta=meta)


def _blocked_shareable(shareable: Shareable) -> Shareable:
    try:
        return _blocked_dxo(from_shareable(shareable)).update_shareable(shareable)
    except Exception:  # noqa: BLE001 - not a DXO: nothing FedAvg could use either
        return shareable


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
