"""``GradInversionAggregatorFilter``: the server-side task-result filter that inverts every client update.

Add it as a server input filter for the ``train`` task (``tasks=["train"]`` is required in NVFlare 2.9):

    recipe.add_server_input_filter(GradInversionAggregatorFilter(), tasks=["train"])

For each client result it checks the update, reconstructs the client's images from it (replaying the
client's local training, :mod:`gradinv.attack`), scores the leakage, writes artifacts under
``<run_dir>/gradinv/`` and then lets FedAvg proceed, or blocks the update. It never raises out of
``process`` (an exception there aborts the whole FL job) and never modifies the arrays it receives.
"""

from __future__ import annotations

import hashlib
import json
import queue
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
from gradinv.attack import get_preset, resolve_device
from gradinv.errors import AttackInputError, GradinvError
from gradinv.fl.artifacts import safe_path_part
from gradinv.fl.auditor import META_TEST_ACCURACY, LeakageAuditor, UpdateToAudit

MODES = ("gate", "audit")
_ROUNDS_KEPT = 2  # late results of the previous round may still arrive while the next one starts


class GradInversionAggregatorFilter(DXOFilter):
    """Invert each client's weight update before FedAvg uses it; measure, record, and optionally block.

    Args:
        model: registry name of the network the clients train (see :mod:`gradinv.models`).
        resolution: image height = width the clients train at.
        num_classes: classifier outputs.
        preset: attack preset (``fast`` for CPUs, ``gpu`` / ``paper`` for the paper's scale).
        attack_overrides: per-key overrides of the preset, e.g. ``{"iterations": 300}``.
        mode: ``gate`` (attack before FedAvg proceeds, within ``time_budget_s`` per update; leaking updates
            can be blocked) or ``audit`` (copy and return at once; attack in a background worker drained at
            the end of the run; the aggregate is bit-identical to a run without the filter).
        block_threshold: in ``gate`` mode, block an update whose policy metric exceeds this; None never blocks.
        block_metric: ``auto`` (``rdlv_max`` when ground truth is configured, else ``leak_score``),
            ``rdlv_max``, ``ssim_max``, ``visibly_leaked_fraction`` or ``leak_score``.
        time_budget_s: per-update wall-clock budget of the attack in ``gate`` mode.
        fail_closed: block updates that cannot be checked (malformed, or the attack failed); by default
            they pass unchanged (fail open) and the failure is logged and recorded.
        audit_datalists: folder of ``<site>.json`` datalists (or a JSON file ``{site: path}``) giving the
            filter read access to the clients' images for ground-truth metrics (SSIM, PSNR, LPIPS, RDLV).
            For simulations and red-team POC runs only; without it only attacker-side metrics are reported.
        prior: image the attack starts from and RDLV is relative to: ``"sample"`` (the bundled public set's
            mean), a path to an image, or ``"none"`` (flat grey start, no RDLV).
        save_images: write reconstruction PNGs and arrays (files are 0600 in any case).
        out_subdir: folder under the job's run dir for the artifacts.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        start_round / frequency: attack rounds ``r >= start_round`` with ``(r - start_round) % frequency == 0``.
        seed: seeds the attack.
        num_threads: torch CPU threads for the attack (None leaves the process default).
        report: build ``report.html`` at the end of the run.
        progress: show a progress bar per attack (in the server's console).
    """

    def __init__(
        self,
        model: str = "bn_cnn",
        resolution: int = 64,
        num_classes: int = 2,
        preset: str = "fast",
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
    ):
        super().__init__(supported_data_kinds=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS],
                         data_kinds_to_filter=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS])
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if frequency < 1 or start_round < 0:
            raise ValueError("frequency must be >= 1 and start_round >= 0")
        self.attack_config = get_preset(preset, attack_overrides)  # validates the preset and overrides now
        # Constructor arguments are kept under their own names: NVFlare's job API exports them from there.
        self.model, self.resolution, self.num_classes = model, resolution, num_classes
        self.preset, self.attack_overrides, self.mode = preset, attack_overrides, mode
        self.block_threshold, self.block_metric = block_threshold, block_metric
        self.time_budget_s, self.fail_closed = time_budget_s, fail_closed
        self.audit_datalists, self.prior = audit_datalists, prior
        self.save_images, self.out_subdir, self.device = save_images, out_subdir, device
        self.start_round, self.frequency, self.seed = start_round, frequency, seed
        self.num_threads, self.report, self.progress = num_threads, report, progress

        self._auditor: LeakageAuditor | None = None
        self._base_by_round: dict[int, dict[str, np.ndarray]] = {}
        self._test_accuracy: dict[int, dict[str, float]] = {}
        # (round, site, fingerprint of the update) -> decision: a client whose submission timed out while the
        # filter held the server re-sends the same update; it gets the same decision without a second attack.
        self._decided: dict[tuple[int, str, str], str] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None

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
        if round_num is None or round_num in self._base_by_round:
            return
        weights = from_shareable(task).data or {}
        with self._lock:
            self._base_by_round[int(round_num)] = {name: _to_numpy(value) for name, value in weights.items()}
            for old in sorted(self._base_by_round)[:-_ROUNDS_KEPT]:
                del self._base_by_round[old]
        self.log_info(fl_ctx, f"gradinv: captured the global model of round {round_num} ({len(weights)} entries)")

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
                self.log_warning(fl_ctx, f"gradinv: result from {site} is an empty update, nothing to check; passed through")
                return shareable
            return super().process(shareable, fl_ctx)
        except Exception as exc:  # noqa: BLE001 - fail open (or closed), never abort the job
            self.log_exception(fl_ctx, f"gradinv: filter failed on the result from {site}: {exc}")
            return _blocked_shareable(shareable) if self.fail_closed else shareable

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        site = self._site(shareable, fl_ctx)
        round_num = shareable.get_cookie(AppConstants.CONTRIBUTION_ROUND, shareable.get_header(AppConstants.CURRENT_ROUND))
        started = time.monotonic()
        if round_num is None:
            return self._invalid(fl_ctx, -1, site, dxo, "the result carries no round number", started)
        round_num = int(round_num)
        self._record_test_accuracy(round_num, site, dxo.meta)
        if round_num < self.start_round or (round_num - self.start_round) % self.frequency:
            return None
        with self._lock:
            base = self._base_by_round.get(round_num)
        if base is None:
            return self._invalid(fl_ctx, round_num, site, dxo,
                                 f"no global model was captured for round {round_num} (known rounds: "
                                 f"{sorted(self._base_by_round)}); cannot tell what the client changed", started)
        try:
            update = self._copy_update(fl_ctx, round_num, site, base, dxo)
        except AttackInputError as exc:
            return self._invalid(fl_ctx, round_num, site, dxo, str(exc), started)

        key = (round_num, site, _fingerprint(update.diff))
        if key in self._decided:
            decision = self._decided[key]
            self.log_info(fl_ctx, f"gradinv: round {round_num} {site}: the same update again (a re-sent submission); "
                                  f"applying its earlier decision '{decision}' without a second attack")
            return _blocked_dxo(dxo) if decision == "block" else None
        auditor = self._get_auditor(fl_ctx)
        if self.mode == "audit":
            self._decided[key] = "pass"
            self._enqueue(update, fl_ctx)
            return None
        try:
            outcome = auditor.audit(update, time_budget_s=self.time_budget_s)
        except AttackInputError as exc:
            return self._invalid(fl_ctx, round_num, site, dxo, str(exc), started)
        except Exception as exc:  # noqa: BLE001
            self.log_exception(fl_ctx, f"gradinv: round {round_num} {site}: attack failed: {exc}")
            decision = "block" if self.fail_closed else "pass"
            auditor.record_failure(round_num, site, "error", decision, f"attack failed: {exc}", dxo.meta,
                                   time.monotonic() - started)
            return _blocked_dxo(dxo) if decision == "block" else None
        self._decided[key] = outcome.decision
        self._log_outcome(fl_ctx, outcome.row)
        self._write_tensorboard(outcome.row)
        if outcome.decision == "block":
            self.log_warning(fl_ctx, f"gradinv: round {round_num} {site}: update BLOCKED ({outcome.reason}); "
                                     "it contributes nothing to this round's aggregate")
            return _blocked_dxo(dxo)
        return None

    # --- helpers -----------------------------------------------------------------------------------------------
    def _copy_update(self, fl_ctx: FLContext, round_num: int, site: str, base: Mapping[str, np.ndarray],
                     dxo: DXO) -> UpdateToAudit:
        data = {name: _to_numpy(value) for name, value in dxo.data.items()}
        if dxo.data_kind == DataKind.WEIGHTS:
            self.log_info(fl_ctx, f"gradinv: round {round_num} {site}: received full WEIGHTS, attacking weights - global")
            # Full weights are global + diff; the attack needs the diff.
            unknown = sorted(set(data) - set(base))
            if unknown:
                raise AttackInputError(f"the WEIGHTS update has entries the global model lacks: {unknown[:4]}")
            data = {name: value.astype(np.float64) - base[name].astype(np.float64) for name, value in data.items()}
        return UpdateToAudit(round_num, site, base, data, _plain_meta(dxo.meta))

    def _invalid(self, fl_ctx: FLContext, round_num: int, site: str, dxo: DXO, reason: str, started: float) -> DXO | None:
        decision = "block" if self.fail_closed else "pass"
        self.log_error(fl_ctx, f"gradinv: round {round_num} {site}: invalid update: {reason}; "
                               f"{'BLOCKED (fail_closed)' if decision == 'block' else 'passed through unchecked'}")
        try:
            self._get_auditor(fl_ctx).record_failure(round_num, site, "invalid", decision, reason, dxo.meta,
                                                     time.monotonic() - started)
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
                engine = fl_ctx.get_engine()
                run_dir = Path(engine.get_workspace().get_run_dir(fl_ctx.get_job_id()))
                out_dir = run_dir / safe_path_part(self.out_subdir, "gradinv")
                if self.num_threads:
                    import torch

                    torch.set_num_threads(int(self.num_threads))
                prior, prior_description = _load_prior(self.prior, self.resolution)
                self._auditor = LeakageAuditor(
                    out_dir, self.model, self.resolution, self.num_classes, self.attack_config, self.preset,
                    prior=prior, audit_datalists=_audit_datalists(self.audit_datalists),
                    block_threshold=self.block_threshold, block_metric=self.block_metric,
                    save_images=self.save_images, device=self.device, seed=self.seed, progress=self.progress,
                )
                self._auditor.writer.write_settings({
                    "gradinv_version": __version__, "filter": self._arguments(), "prior": prior_description,
                    "attack": self.attack_config.to_dict(), "mode": self.mode, "preset": self.preset,
                    "device": str(resolve_device(self.device)),
                    "ground_truth": bool(self.audit_datalists),
                })
                self.log_info(fl_ctx, f"gradinv: writing leakage artifacts to {out_dir}")
            return self._auditor

    def _arguments(self) -> dict[str, Any]:
        names = ("model", "resolution", "num_classes", "preset", "attack_overrides", "mode", "block_threshold",
                 "block_metric", "time_budget_s", "fail_closed", "audit_datalists", "prior", "save_images",
                 "out_subdir", "device", "start_round", "frequency", "seed", "num_threads", "report")
        return {name: getattr(self, name) for name in names}

    def _enqueue(self, update: UpdateToAudit, fl_ctx: FLContext) -> None:
        with self._lock:
            if self._queue is None:
                self._queue = queue.Queue()
                self._worker = threading.Thread(target=self._audit_worker, args=(fl_ctx,), name="gradinv-audit", daemon=True)
                self._worker.start()
        self._queue.put(update)
        self.log_info(fl_ctx, f"gradinv: round {update.round_num} {update.site}: queued for a background attack "
                              f"({self._queue.qsize()} waiting)")

    def _audit_worker(self, fl_ctx: FLContext) -> None:
        while True:
            update = self._queue.get()
            try:
                if update is None:
                    return
                started = time.monotonic()
                try:
                    outcome = self._auditor.audit(update)
                    self._log_outcome(fl_ctx, outcome.row)
                    self._write_tensorboard(outcome.row)
                except Exception as exc:  # noqa: BLE001 - one bad update must not stop the worker
                    status = "invalid" if isinstance(exc, AttackInputError) else "error"
                    self.log_error(fl_ctx, f"gradinv: round {update.round_num} {update.site}: {status}: {exc}")
                    self._auditor.record_failure(update.round_num, update.site, status, "pass", str(exc),
                                                 update.meta, time.monotonic() - started)
            finally:
                self._queue.task_done()

    def _finish_run(self, fl_ctx: FLContext) -> None:
        if self._queue is not None:
            self.log_info(fl_ctx, f"gradinv: end of run, draining {self._queue.qsize()} queued attack(s)")
            self._queue.put(None)
            self._worker.join()
        if self._auditor is None:
            return
        from gradinv.report import close_tensorboard_writers

        close_tensorboard_writers()
        self._write_global_metrics(fl_ctx)
        if self.report:
            from gradinv.report import build_report

            path = build_report(self._auditor.writer.out_dir)
            self.log_info(fl_ctx, f"gradinv: leakage report written to {path}")

    def _record_test_accuracy(self, round_num: int, site: str, meta: Mapping[str, Any] | None) -> None:
        value = (meta or {}).get(META_TEST_ACCURACY)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            with self._lock:
                self._test_accuracy.setdefault(round_num, {})[site] = float(value)

    def _write_global_metrics(self, fl_ctx: FLContext) -> None:
        rows = [{"round": r, "test_accuracy": float(np.mean(list(sites.values())))}
                for r, sites in sorted(self._test_accuracy.items())]
        final = self._final_test_accuracy(fl_ctx)
        if final is not None:
            rows.append(final)
        if rows:
            self._auditor.writer.write_global_metrics(rows)

    def _final_test_accuracy(self, fl_ctx: FLContext) -> dict[str, Any] | None:
        """Accuracy of the model FedAvg ends with, when audit datalists give a test split."""
        learnable = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        datalists = _audit_datalists(self.audit_datalists)
        if not learnable or not datalists:
            return None
        from gradinv.fl.evaluation import test_accuracy_of_state

        weights = learnable.get("weights") if isinstance(learnable, Mapping) else None
        if not weights:
            return None
        accuracy = test_accuracy_of_state(self.model, self.resolution, self.num_classes, weights, next(iter(datalists.values())))
        if accuracy is None:
            return None
        last_round = max(self._test_accuracy, default=-1)
        self.log_info(fl_ctx, f"gradinv: final global model test accuracy {accuracy:.3f}")
        return {"round": last_round + 1, "test_accuracy": accuracy}

    def _log_outcome(self, fl_ctx: FLContext, row: Mapping[str, Any]) -> None:
        shown = ", ".join(f"{key}={_fmt(row.get(key))}" for key in
                          ("status", "decision", "ssim", "rdlv_max", "lpips", "leak_score", "update_distance", "seconds"))
        self.log_info(fl_ctx, f"gradinv: round {row['round']} {row['site']} ({row.get('num_images')} images): {shown}")

    def _write_tensorboard(self, row: Mapping[str, Any]) -> None:
        from gradinv.report import write_tensorboard_scalars

        metrics = {key: value for key, value in row.items() if isinstance(value, (int, float)) and not isinstance(value, bool)
                   and key not in ("round",)}
        write_tensorboard_scalars(self._auditor.writer.out_dir / "tensorboard", row["round"], row["site"], metrics)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


def _fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


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


def _load_prior(prior: str | None, resolution: int) -> tuple[np.ndarray | None, str]:
    if not prior or str(prior).lower() == "none":
        return None, "none (flat grey start; RDLV not computed)"
    from gradinv.data import load_image, prior_path

    path = prior_path() if prior == "sample" else Path(prior)
    try:
        return load_image(path, resolution), f"{'bundled sample public-set mean' if prior == 'sample' else 'image'}: {path}"
    except GradinvError as exc:
        raise GradinvError(f"the prior image {path} cannot be used: {exc}") from exc


def _audit_datalists(setting: str | None) -> dict[str, Path]:
    """``{site: datalist}`` from a folder of ``<site>.json`` files or a JSON mapping file."""
    if not setting:
        return {}
    path = Path(setting)
    if path.is_dir():
        return {p.stem: p for p in sorted(path.glob("*.json"))}
    if path.is_file():
        mapping = json.loads(path.read_text())
        return {str(site): Path(p) for site, p in mapping.items()}
    raise GradinvError(f"audit_datalists {setting!r} is neither a folder of <site>.json datalists nor a JSON file")
