"""The server side's settings, declared once: what the filter is configured with and the auditor runs on.

:class:`AuditSettings` is frozen and validated when it is made, so a configuration mistake (an unknown
``block_metric``, a model class that cannot be imported, a malformed ``input_shape``) fails where the job is
built, not silently at ``START_RUN``. The filter keeps one flat constructor argument per field (NVFlare's job API
exports constructor arguments by name), and a test keeps the two lists equal.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from gradinv.attack import AUTO_PRESET, AttackConfig, check_preset, get_preset, resolve_preset
from gradinv.errors import ConfigurationError, GradinvError
from gradinv.fl.scheduler import AUDIT_POLICIES
from gradinv.models.normalization import check_normalization
from gradinv.models.spec import ModelSpec, build_from_spec

MODES = ("gate", "audit")
BLOCK_METRICS = ("auto", "rdlv_max", "ssim_max", "visibly_leaked_fraction", "leak_score")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
MIN_IMAGE_SIDE = 4


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """Everything the server-side filter is configured with.

    Args:
        model: the network the clients train. ``None`` (default): the job's own global model, i.e. the ``nn.Module``
            the job's persistor holds (what ``FedAvgRecipe(model=...)`` was given). Or a registry name
            (:mod:`gradinv.models`), or an NVFlare class spec ``{"path": "pkg.module.Class", "args": {...}}``.
        input_shape: (C, H, W) of one image as the client feeds it, C = 1 or 3. ``None``: from the client's meta
            (:func:`gradinv.fl.training_meta`), else from ``client_training``, else the model's own
            ``input_shape`` attribute.
        normalize: ``(mean, std)`` per channel that the client's transform applied; the attack optimises images in
            [0, 1] pixel space and feeds the model ``(x - mean) / std``. ``None``: from the client's meta, else none.
        num_classes: classifier outputs; ``None`` asks the model (one forward of the input shape).
        client_training: what the server declares about clients whose script cannot change (the paper's
            assumption that the server set the local hyper-parameters): the fields of
            :func:`gradinv.fl.training_meta`'s result as a dict; the client's meta, when present, wins.
        preset: attack preset. ``auto`` (default): chosen by the model's structure when the first update arrives
            (``fast`` for a flatten head, ``gap`` for a global-average-pool head such as MONAI's ResNets and
            DenseNets; :func:`gradinv.attack.presets.preset_for_model`); ``fast``, ``thorough``, ``gap``, or
            ``gpu`` / ``paper`` for the paper's scale on a GPU.
        attack_overrides: per-key overrides of the preset, e.g. ``{"iterations": 300}``.
        mode: ``gate`` (attack before FedAvg proceeds, within ``time_budget_s`` per update; leaking updates can be
            blocked) or ``audit`` (copy and return at once; attack in a background worker drained at the end of the
            run; the aggregate is bit-identical to a run without the filter).
        block_threshold: in ``gate`` mode, block an update whose policy metric exceeds this; None never blocks.
        block_metric: ``auto`` (``rdlv_max`` with ground truth, else ``leak_score``), ``rdlv_max``, ``ssim_max``,
            ``visibly_leaked_fraction`` or ``leak_score``.
        time_budget_s: per-update wall-clock budget of the attack.
        fail_closed: block updates that cannot be checked (malformed, or the attack failed); by default they pass
            unchanged (fail open) and the failure is logged and recorded.
        audit_datalists: folder of ``<site>.json`` datalists (or a JSON file ``{site: path}``) giving the filter
            read access to the clients' images for ground-truth metrics (SSIM, PSNR, LPIPS, RDLV). For simulations
            and red-team runs only; without it only attacker-side metrics are reported.
        prior: what the attack starts from and RDLV is relative to: ``"sample"`` (the bundled public set's mean),
            ``"sample-classes"`` (the mean of each of its classes, for the sample task's two-class models), a
            folder of public images (class subfolders: each slot starts from the mean of its recovered label's
            class, the honest prior of an attacker with public data of the federation's modality), an image
            path, or ``"none"`` (flat grey start, no RDLV). See :func:`gradinv.data.load_prior`.
        save_images: write reconstruction PNGs and arrays (files are 0600 in any case).
        out_subdir: folder under the job's run dir for the artifacts.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        start_round / frequency: attack rounds ``r >= start_round`` with ``(r - start_round) % frequency == 0``.
        seed: seeds the attack.
        num_threads: torch CPU threads for the attack (None leaves the process default).
        report: build ``report.html`` at the end of the run.
        progress: show a progress bar per attack (in the server's console).
        audit_max_pending: in ``audit`` mode, how many updates waiting for (or under) attack are held in memory; the
            rest are spilled to ``<out_subdir>/pending/`` (0700 folder, 0600 files), so the server's memory stays
            bounded by this many model copies however slow the attack is. Waiting updates are written there by a
            thread of their own (FedAvg's path only copies them) unless the bound is reached.
        audit_policy: ``all`` (every update is attacked, spilled when memory is full), ``latest_per_site`` (a
            site's newer update replaces its older one still waiting; the older one gets a ``skipped`` row) or
            ``every_kth_round`` (only the updates of rounds 0, k, 2k, ... with k = ``audit_round_interval`` are
            attacked; the others get a ``skipped`` row, and cost neither memory nor disk).
        audit_round_interval: k of ``audit_policy="every_kth_round"`` (must stay 1 with the other policies).
        drain_timeout_s: at the end of the run, how long the queue is drained; what is left gets a ``not_attacked``
            row and stays spilled for ``gradinv audit RUN_DIR``.
        keep_updates: keep spilled updates after their attack (by default they are deleted once attacked).
        audit_workers: in ``audit`` mode, attack processes beside the server's job process; each update is spilled
            and read by path. ``None`` (default): one process per GPU, one on a CPU-only server. ``0``: one
            background thread in the server process instead, for tests and small models (the attack's memory
            then adds to the server's).
    """

    model: ModelSpec | None = None
    input_shape: tuple[int, int, int] | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    num_classes: int | None = None
    client_training: Mapping[str, Any] | None = None
    preset: str = AUTO_PRESET
    attack_overrides: Mapping[str, Any] | None = None
    mode: str = "gate"
    block_threshold: float | None = None
    block_metric: str = "auto"
    time_budget_s: float = 300.0
    fail_closed: bool = False
    audit_datalists: str | None = None
    prior: str = "sample"
    save_images: bool = True
    out_subdir: str = "gradinv"
    device: str = "auto"
    start_round: int = 0
    frequency: int = 1
    seed: int = 0
    num_threads: int | None = None
    report: bool = True
    progress: bool = True
    audit_max_pending: int = 2
    audit_policy: str = "all"
    audit_round_interval: int = 1
    drain_timeout_s: float = 600.0
    keep_updates: bool = False
    audit_workers: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        shape = self.input_shape
        if shape is not None:
            if (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_is_int(v) for v in shape)
                    and shape[0] in (1, 3) and min(shape[1:]) >= MIN_IMAGE_SIDE):
                object.__setattr__(self, "input_shape", tuple(int(v) for v in shape))
            else:
                problems.append(f"input_shape must be (C, H, W) with C = 1 or 3 and H, W >= {MIN_IMAGE_SIDE}, "
                                f"got {shape!r}")
        try:
            channels = self.input_shape[0] if self.input_shape and not problems else None
            object.__setattr__(self, "normalize", check_normalization(self.normalize, channels))
        except GradinvError as exc:
            problems.append(str(exc))
        if self.num_classes is not None and not (_is_int(self.num_classes) and self.num_classes >= 1):
            problems.append(f"num_classes must be a positive integer or None, got {self.num_classes!r}")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.block_metric not in BLOCK_METRICS:
            problems.append(f"block_metric must be one of {BLOCK_METRICS}, got {self.block_metric!r}")
        if self.block_threshold is not None and not _is_finite_number(self.block_threshold):
            problems.append(f"block_threshold must be a number or None, got {self.block_threshold!r}")
        if not (_is_finite_number(self.time_budget_s) and self.time_budget_s > 0):
            problems.append(f"time_budget_s must be a positive number of seconds, got {self.time_budget_s!r}")
        if not (isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device)):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not (_is_int(self.start_round) and self.start_round >= 0):
            problems.append(f"start_round must be an integer >= 0, got {self.start_round!r}")
        if not (_is_int(self.frequency) and self.frequency >= 1):
            problems.append(f"frequency must be an integer >= 1, got {self.frequency!r}")
        if not _is_int(self.seed):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if self.num_threads is not None and not (_is_int(self.num_threads) and self.num_threads >= 1):
            problems.append(f"num_threads must be a positive integer or None, got {self.num_threads!r}")
        if not (isinstance(self.prior, str) and self.prior):
            problems.append(f"prior must be 'sample', 'sample-classes', 'none' or a path, got {self.prior!r}")
        if not (isinstance(self.out_subdir, str) and self.out_subdir):
            problems.append(f"out_subdir must be a non-empty folder name, got {self.out_subdir!r}")
        if self.audit_datalists is not None and not (isinstance(self.audit_datalists, str) and self.audit_datalists):
            problems.append(f"audit_datalists must be a path or None, got {self.audit_datalists!r}")
        if not (_is_int(self.audit_max_pending) and self.audit_max_pending >= 1):
            problems.append(f"audit_max_pending must be an integer >= 1, got {self.audit_max_pending!r}")
        if self.audit_workers is not None and not (_is_int(self.audit_workers) and self.audit_workers >= 0):
            problems.append(f"audit_workers must be an integer >= 0 or None, got {self.audit_workers!r}")
        if self.audit_policy not in AUDIT_POLICIES:
            problems.append(f"audit_policy must be one of {AUDIT_POLICIES}, got {self.audit_policy!r}")
        if not (_is_int(self.audit_round_interval) and self.audit_round_interval >= 1):
            problems.append(f"audit_round_interval must be an integer >= 1, got {self.audit_round_interval!r}")
        elif self.audit_round_interval != 1 and self.audit_policy != "every_kth_round":
            problems.append(f"audit_round_interval={self.audit_round_interval} applies only with "
                            f"audit_policy='every_kth_round' (got {self.audit_policy!r}): set that policy, or drop it")
        if not (_is_finite_number(self.drain_timeout_s) and self.drain_timeout_s >= 0):
            problems.append(f"drain_timeout_s must be a number of seconds >= 0, got {self.drain_timeout_s!r}")
        for name in ("fail_closed", "save_images", "report", "progress", "keep_updates"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        try:
            check_preset(self.preset, self.attack_overrides)
        except GradinvError as exc:
            problems.append(str(exc))
        if self.model is not None:
            try:  # imports and builds the user's class now, so that a typo fails where the job is built
                build_from_spec(self.model, num_classes=self.num_classes, input_shape=self.input_shape)
            except GradinvError as exc:
                problems.append(str(exc))
        if self.client_training is not None:
            from gradinv.fl.meta import knowledge_from_declaration

            try:
                knowledge_from_declaration(self.client_training)
            except GradinvError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigurationError("invalid gradinv filter settings: " + "; ".join(problems))

    def attack_config(self, model: Any) -> AttackConfig:
        """The preset (``auto`` resolved for ``model``) with its overrides (validated)."""
        return get_preset(resolve_preset(self.preset, model), dict(self.attack_overrides or {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
