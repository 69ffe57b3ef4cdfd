"""One client update in, one leakage verdict out: attack, score, write artifacts, decide.

:class:`LeakageAuditor` is the framework-free heart of the NVFlare filter: it takes plain arrays (the global
state dict sent for the round, the client's state-dict diff, the update's meta) and returns the metrics row
and the pass/block decision. The filter only converts DXOs, keeps per-round state and schedules the work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradinv.attack import AUTO_PRESET, AttackConfig, attack_update, resolve_device, resolve_preset
from gradinv.attack.scoring import attack_converged, leak_score
from gradinv.errors import AttackInputError, DataError, GradinvError
from gradinv.fl import meta as meta_protocol
from gradinv.fl.artifacts import ArtifactWriter
from gradinv.fl.settings import AuditSettings
from gradinv.models.normalization import with_input_normalization
from gradinv.models.spec import output_size

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class UpdateToAudit:
    """Private copies of everything the attack needs for one client update.

    ``global_state`` is any mapping of arrays: the round's global model in memory, or read from its spilled file
    (:class:`~gradinv.fl.spill.SpilledGlobal`, when attack processes read every update from disk).
    """

    round_num: int
    site: str
    global_state: Mapping[str, np.ndarray]
    diff: dict[str, np.ndarray]
    meta: dict[str, Any]


@dataclasses.dataclass
class AuditOutcome:
    row: dict[str, Any]
    decision: str
    reason: str


@dataclasses.dataclass(frozen=True)
class _InputView:
    """How the client's model sees its images: shape (C, H, W) and the normalisation in front of it."""

    shape: tuple[int, int, int]
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None


class LeakageAuditor:
    """Attacks client updates and scores them.

    Args:
        out_dir: the run's ``gradinv/`` folder.
        model: the architecture the clients train (its weights are not used: each update's global state is), or a
            function that finds it (called at the first update; its :class:`GradinvError` makes the update invalid).
        settings: the filter's settings (input shape, normalisation, attack, policy, ...).
        audit_datalists: ``{site: datalist path}`` giving read access to the clients' training images, for
            ground-truth metrics (simulation and red-team runs only); None in real deployments.
    """

    def __init__(
        self,
        out_dir: str | Path,
        model: nn.Module | Callable[[], nn.Module],
        settings: AuditSettings,
        audit_datalists: Mapping[str, str | Path] | None = None,
    ):
        self.writer = ArtifactWriter(out_dir, save_images=settings.save_images)
        self._model = model
        self.settings = settings
        self._config: AttackConfig | None = None
        self._preset = settings.preset
        self.audit_datalists = dict(audit_datalists or {})
        self.declared = (
            None
            if settings.client_training is None
            else meta_protocol.knowledge_from_declaration(settings.client_training)
        )
        self.prior_description = _describe_prior(settings.prior)
        self._priors: dict[tuple[int, int, int], np.ndarray | None] = {}
        self._num_classes: dict[_InputView, int] = {}
        self._last_view: _InputView | None = None

    @property
    def model(self) -> nn.Module:
        if not isinstance(self._model, nn.Module):
            try:
                self._model = self._model()
            except GradinvError as exc:
                raise AttackInputError(str(exc)) from exc
        return self._model

    @property
    def config(self) -> AttackConfig:
        """The attack's settings: the preset with its overrides; ``auto`` is resolved for the model when first
        needed (the job's own model is known only from its first update)."""
        if self._config is None:
            model = self.model if self.preset_is_auto else None
            self._config, self._preset = self.settings.attack_config(model), resolve_preset(self.settings.preset, model)
        return self._config

    @property
    def preset_is_auto(self) -> bool:
        return self.settings.preset == AUTO_PRESET

    @property
    def preset(self) -> str:
        """The preset's name for the rows: ``auto`` until it is resolved (see :attr:`config`)."""
        return self._preset

    def audit(self, update: UpdateToAudit, time_budget_s: float | None = None) -> AuditOutcome:
        """Attack one update and record it. Raises :class:`AttackInputError` for malformed inputs
        (the caller decides pass or block and records the row with :meth:`record_failure`)."""
        started = time.monotonic()
        knowledge = self.client_knowledge(update.site, update.meta)
        recipe, num_images = knowledge.recipe, knowledge.num_images
        view = self._input_view(knowledge)
        model = with_input_normalization(self.model, view.normalize)
        num_classes = self._classes(model, view)
        prior = self._prior(view.shape)
        config = self.config if time_budget_s is None else self.config.replace(time_budget_s=time_budget_s)
        result = attack_update(
            model,
            update.global_state,
            update.diff,
            recipe,
            num_images,
            config,
            prior=None if prior is None else torch.from_numpy(prior),
            num_classes=num_classes,
            round_num=update.round_num,
            device=self.settings.device,
            seed=self.settings.seed + update.round_num,
            progress=self.settings.progress,
            description=f"gradinv round {update.round_num} {update.site}",
            input_shape=view.shape,
        )
        self._last_view = view
        reconstructions = result.images.numpy()
        # A per-class prior differs per slot: what RDLV compares each slot with, and what the artifacts keep.
        slot_priors = None if result.priors is None else result.priors.numpy()
        row: dict[str, Any] = {
            "round": update.round_num,
            "site": update.site,
            "num_images": num_images,
            "num_steps": recipe.num_steps(num_images),
            "status": "timeout" if result.stopped == "time_budget" else "ok",
            "replay": knowledge.replay,
            "update_distance": result.update_distance,
            "converged": attack_converged(result.update_distance),
            "bn_residual": result.bn_residual,
            "leak_score": leak_score(
                result.update_distance, result.bn_residual, recipe.effective_batch_size(num_images)
            ),
            "iterations": result.iterations,
            "device": str(resolve_device(self.settings.device)),
            "preset": self.preset,
        }
        details: dict[str, Any] = {
            "recipe": recipe.to_meta(),
            "input_shape": list(view.shape),
            "normalize": None if view.normalize is None else [list(part) for part in view.normalize],
            "knowledge_source": knowledge.source,
            "replay_approximations": recipe.replay_approximations(num_images),
            "attack": result.diagnostics(),
            "recovered_labels": result.recovered_labels,
            "label_probabilities": result.label_probabilities.tolist(),
        }
        originals = None
        ground_truth = self._ground_truth(update.site, num_images, view.shape)
        if ground_truth is not None:
            originals, true_labels = ground_truth
            scores = _evaluate(originals, reconstructions, slot_priors, true_labels, result.recovered_labels)
            row.update(
                {
                    key: scores.get(key)
                    for key in (
                        "ssim",
                        "psnr",
                        "lpips",
                        "rdlv",
                        "rdlv_max",
                        "prior_ssim",
                        "ssim_max",
                        "visibly_leaked_fraction",
                        "label_accuracy",
                    )
                }
            )
            details.update(
                true_labels=true_labels,
                per_image=scores.get("per_image"),
                ground_truth=scores,
            )
            if scores.get("assignment"):
                reconstructions = reconstructions[scores["assignment"]]
                slot_priors = None if slot_priors is None else slot_priors[scores["assignment"]]
        decision, reason = self.decide(row)
        row.update(decision=decision, reason=reason, seconds=round(time.monotonic() - started, 3))
        self.writer.write_site_round(
            update.round_num, update.site, {**row, **details}, reconstructions, originals,
            slot_priors if prior is not None and prior.ndim == 4 else prior,
        )
        self.writer.append_metrics_row(row)
        return AuditOutcome(row, decision, reason)

    def record_failure(
        self,
        round_num: int,
        site: str,
        status: str,
        decision: str,
        reason: str,
        meta: Mapping[str, Any] | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """Write the row of an update that could not be attacked (invalid input, error)."""
        row = {
            "round": round_num,
            "site": site,
            "status": status,
            "decision": decision,
            "reason": reason,
            "seconds": seconds,
            "preset": self.preset,
        }
        num_images = (meta or {}).get(meta_protocol.META_NUM_IMAGES)
        if isinstance(num_images, (int, np.integer)) and not isinstance(num_images, bool):
            row["num_images"] = int(num_images)
        self.writer.write_site_round(round_num, site, row)
        self.writer.append_metrics_row(row)
        return row

    def decide(self, row: Mapping[str, Any]) -> tuple[str, str]:
        """``("block", why)`` when the policy metric exceeds the threshold, else ``("pass", why)``."""
        threshold = self.settings.block_threshold
        if threshold is None:
            return "pass", "measure only (no block_threshold)"
        metric = self.settings.block_metric
        if metric == "auto":
            metric = "rdlv_max" if row.get("rdlv_max") is not None else "leak_score"
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "pass", f"{metric} unavailable for this update; nothing to compare with the threshold"
        if value > threshold:
            return "block", f"{metric}={value:.3g} > threshold {threshold:g}"
        return "pass", f"{metric}={value:.3g} <= threshold {threshold:g}"

    def client_knowledge(self, site: str, meta: Mapping[str, Any]) -> meta_protocol.ClientKnowledge:
        """What the server knows of this client's training: its own meta, else the server's declaration."""
        return meta_protocol.resolve_client_knowledge(site, meta, self.declared)

    def test_accuracy(self, weights: Mapping[str, Any], datalist: str | Path) -> float | None:
        """Accuracy of global ``weights`` on ``datalist``'s test split, seen as the last attacked client saw images."""
        from gradinv.fl.evaluation import test_accuracy_of_state

        view = self._last_view
        if view is None:
            return None
        model = with_input_normalization(self.model, view.normalize)
        return test_accuracy_of_state(model, weights, datalist, view.shape)

    # --- what the attack needs, resolved per update ---------------------------------------------------------
    def _input_view(self, knowledge: meta_protocol.ClientKnowledge) -> _InputView:
        configured, reported = self.settings.input_shape, knowledge.input_shape
        if configured is not None and reported is not None and tuple(reported) != tuple(configured):
            raise AttackInputError(
                f"the client reports images of shape {tuple(reported)} (C, H, W) but the filter is "
                f"configured with input_shape={tuple(configured)}; remove one or make them agree"
            )
        shape = reported or configured or getattr(self.model, "input_shape", None)
        if shape is None:
            raise AttackInputError(
                "the shape of the client's images is unknown: call gradinv.fl.training_meta in the "
                "client script, or give the filter input_shape=(C, H, W)"
            )
        configured_norm, reported_norm = self.settings.normalize, knowledge.normalize
        if configured_norm is not None and reported_norm is not None and _differs(configured_norm, reported_norm):
            raise AttackInputError(
                f"the client reports normalize={reported_norm} but the filter is configured with "
                f"normalize={configured_norm}; remove one or make them agree"
            )
        normalize = reported_norm if reported_norm is not None else configured_norm
        if normalize is not None and len(normalize[0]) not in (1, shape[0]):
            raise AttackInputError(
                f"normalize has {len(normalize[0])} values per statistic for images with {shape[0]} channel(s)"
            )
        return _InputView(tuple(int(v) for v in shape), normalize)

    def _classes(self, model: nn.Module, view: _InputView) -> int:
        if self.settings.num_classes is not None:
            return self.settings.num_classes
        if view not in self._num_classes:
            try:
                self._num_classes[view] = output_size(model, view.shape)
            except GradinvError as exc:
                raise AttackInputError(str(exc)) from exc
        return self._num_classes[view]

    def _prior(self, shape: tuple[int, int, int]) -> np.ndarray | None:
        """The prior in [0, 1] for images of ``shape``: one image (C, H, W), one per class (K, C, H, W), or None
        (flat grey start, no RDLV)."""
        if shape not in self._priors:
            self._priors[shape] = _load_prior(self.settings.prior, shape)
        return self._priors[shape]

    def _ground_truth(
        self, site: str, num_images: int, shape: tuple[int, int, int]
    ) -> tuple[np.ndarray, list[int]] | None:
        path = self.audit_datalists.get(site)
        if path is None:
            return None
        from gradinv.data import load_datalist, load_images

        try:
            entries = load_datalist(path, key="training")
            images, labels = load_images(entries, tuple(shape[1:]), channels=shape[0])
        except DataError as exc:
            logger.warning("audit ground truth for %s unavailable: %s", site, exc)
            return None
        if len(entries) != num_images:
            logger.warning("site %s reports %d images but its audit datalist lists %d", site, num_images, len(entries))
        return images.numpy(), labels.tolist()


def _differs(first: Any, second: Any) -> bool:
    return not np.allclose(np.asarray(first[0], float), np.asarray(second[0], float)) or not np.allclose(
        np.asarray(first[1], float), np.asarray(second[1], float)
    )


def _describe_prior(prior: str) -> str:
    if prior.lower() == "none":
        return "none (flat grey start; RDLV not computed)"
    if prior == "sample-classes":
        return "bundled sample public-set mean of each class"
    return "bundled sample public-set mean" if prior == "sample" else f"public images: {prior}"


def _load_prior(prior: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    from gradinv.data import load_prior

    image, _description = load_prior(prior, tuple(shape[1:]), channels=shape[0])
    if image is None or image.ndim in (3, 4):
        return image
    return image[None]


def _evaluate(originals, reconstructions, prior, true_labels, recovered_labels) -> dict[str, Any]:
    from gradinv.metrics import evaluate_reconstruction

    return evaluate_reconstruction(
        originals, reconstructions, prior=prior, true_labels=true_labels, recovered_labels=recovered_labels
    )


def datalists_by_site(setting: str | None) -> dict[str, Path]:
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
