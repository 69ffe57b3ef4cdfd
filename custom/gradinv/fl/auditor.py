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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradinv.attack import AttackConfig, attack_update, resolve_device
from gradinv.attack.scoring import leak_score
from gradinv.errors import AttackInputError, DataError
from gradinv.fl.artifacts import ArtifactWriter
from gradinv.models import build_model
from gradinv.recipe import TrainingRecipe

logger = logging.getLogger(__name__)

# Keys of the update's meta that gradinv's client script fills in (the paper's assumption: the server
# knows the local training hyper-parameters and the number of images).
META_RECIPE = "gradinv_recipe"
META_NUM_IMAGES = "gradinv_num_images"
META_MODEL = "gradinv_model"
META_TEST_ACCURACY = "gradinv_global_test_accuracy"

BLOCK_METRICS = ("auto", "rdlv_max", "ssim_max", "visibly_leaked_fraction", "leak_score")


@dataclasses.dataclass
class UpdateToAudit:
    """Private copies of everything the attack needs for one client update."""

    round_num: int
    site: str
    global_state: dict[str, np.ndarray]
    diff: dict[str, np.ndarray]
    meta: dict[str, Any]


@dataclasses.dataclass
class AuditOutcome:
    row: dict[str, Any]
    decision: str
    reason: str


class LeakageAuditor:
    """Attacks client updates and scores them.

    Args:
        out_dir: the run's ``gradinv/`` folder.
        model: registry name of the architecture the clients train; ``resolution`` and ``num_classes`` as there.
        config: the attack's settings.
        preset: the preset's name (recorded with the metrics).
        prior: (H, W) prior image in [0, 1] or None (flat grey start, no RDLV).
        audit_datalists: ``{site: datalist path}`` giving read access to the clients' training images, for
            ground-truth metrics (simulation and red-team runs only); None in real deployments.
        block_threshold: block an update when the policy metric exceeds this; None never blocks.
        block_metric: the policy metric; ``auto`` = ``rdlv_max`` with ground truth, else ``leak_score``.
        save_images: write reconstruction PNGs and arrays.
        device: ``auto`` / ``cpu`` / ``cuda``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        model: str,
        resolution: int,
        num_classes: int,
        config: AttackConfig,
        preset: str,
        prior: np.ndarray | None = None,
        audit_datalists: Mapping[str, str | Path] | None = None,
        block_threshold: float | None = None,
        block_metric: str = "auto",
        save_images: bool = True,
        device: str = "auto",
        seed: int = 0,
        progress: bool = True,
    ):
        if block_metric not in BLOCK_METRICS:
            raise ValueError(f"block_metric must be one of {BLOCK_METRICS}, got {block_metric!r}")
        self.writer = ArtifactWriter(out_dir, save_images=save_images)
        self.model_name, self.resolution, self.num_classes = model, resolution, num_classes
        self.model = build_model(model, num_classes=num_classes, resolution=resolution)
        self.config, self.preset = config, preset
        self.prior = prior
        self.audit_datalists = dict(audit_datalists or {})
        self.block_threshold, self.block_metric = block_threshold, block_metric
        self.device, self.seed, self.progress = device, seed, progress

    def audit(self, update: UpdateToAudit, time_budget_s: float | None = None) -> AuditOutcome:
        """Attack one update and record it. Raises :class:`AttackInputError` for malformed inputs
        (the caller decides pass or block and records the row with :meth:`record_failure`)."""
        started = time.monotonic()
        recipe, num_images = self._knowledge_from_meta(update.meta)
        config = self.config if time_budget_s is None else self.config.replace(time_budget_s=time_budget_s)
        result = attack_update(
            self.model, update.global_state, update.diff, recipe, num_images, config,
            prior=None if self.prior is None else torch.from_numpy(self.prior), num_classes=self.num_classes,
            round_num=update.round_num, device=self.device, seed=self.seed + update.round_num,
            progress=self.progress, description=f"gradinv round {update.round_num} {update.site}",
        )
        reconstructions = result.images[:, 0].numpy()
        row: dict[str, Any] = {
            "round": update.round_num,
            "site": update.site,
            "num_images": num_images,
            "num_steps": recipe.num_steps(num_images),
            "status": "timeout" if result.stopped == "time_budget" else "ok",
            "update_distance": result.update_distance,
            "bn_residual": result.bn_residual,
            "leak_score": leak_score(result.update_distance, result.bn_residual, recipe.effective_batch_size(num_images)),
            "iterations": result.iterations,
            "device": str(resolve_device(self.device)),
            "preset": self.preset,
        }
        details: dict[str, Any] = {
            "recipe": recipe.to_meta(), "attack": result.diagnostics(),
            "recovered_labels": result.recovered_labels, "label_probabilities": result.label_probabilities.tolist(),
        }
        originals = None
        ground_truth = self._ground_truth(update.site, num_images)
        if ground_truth is not None:
            originals, true_labels = ground_truth
            scores = _evaluate(originals, reconstructions, self.prior, true_labels, result.recovered_labels)
            row.update({key: scores.get(key) for key in ("ssim", "psnr", "lpips", "rdlv", "rdlv_max", "ssim_max",
                                                          "visibly_leaked_fraction", "label_accuracy")})
            details.update(true_labels=true_labels, per_image=scores.get("per_image"), prior_ssim=scores.get("prior_ssim"),
                           ground_truth=scores)
            reconstructions = reconstructions[scores["assignment"]] if scores.get("assignment") else reconstructions
        decision, reason = self.decide(row)
        row.update(decision=decision, reason=reason, seconds=round(time.monotonic() - started, 3))
        self.writer.write_site_round(update.round_num, update.site, {**row, **details}, reconstructions, originals, self.prior)
        self.writer.append_metrics_row(row)
        return AuditOutcome(row, decision, reason)

    def record_failure(self, round_num: int, site: str, status: str, decision: str, reason: str,
                       meta: Mapping[str, Any] | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Write the row of an update that could not be attacked (invalid input, error)."""
        row = {"round": round_num, "site": site, "status": status, "decision": decision, "reason": reason,
               "seconds": seconds, "preset": self.preset}
        num_images = (meta or {}).get(META_NUM_IMAGES)
        if isinstance(num_images, (int, np.integer)) and not isinstance(num_images, bool):
            row["num_images"] = int(num_images)
        self.writer.write_site_round(round_num, site, row)
        self.writer.append_metrics_row(row)
        return row

    def decide(self, row: Mapping[str, Any]) -> tuple[str, str]:
        """``("block", why)`` when the policy metric exceeds the threshold, else ``("pass", why)``."""
        if self.block_threshold is None:
            return "pass", "measure only (no block_threshold)"
        metric = self.block_metric
        if metric == "auto":
            metric = "rdlv_max" if row.get("rdlv_max") is not None else "leak_score"
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "pass", f"{metric} unavailable for this update; nothing to compare with the threshold"
        if value > self.block_threshold:
            return "block", f"{metric}={value:.3g} > threshold {self.block_threshold:g}"
        return "pass", f"{metric}={value:.3g} <= threshold {self.block_threshold:g}"

    def _knowledge_from_meta(self, meta: Mapping[str, Any]) -> tuple[TrainingRecipe, int]:
        if META_RECIPE not in meta or META_NUM_IMAGES not in meta:
            missing = [key for key in (META_RECIPE, META_NUM_IMAGES) if key not in meta]
            raise AttackInputError(
                f"the update's meta lacks {missing}: the server cannot replay the client's training without the "
                "recipe and the number of images (is the client running gradinv's training script?)"
            )
        recipe_meta = meta[META_RECIPE]
        if isinstance(recipe_meta, str):
            try:
                recipe_meta = json.loads(recipe_meta)
            except json.JSONDecodeError as exc:
                raise AttackInputError(f"meta {META_RECIPE!r} is not valid JSON: {exc}") from exc
        recipe = TrainingRecipe.from_meta(recipe_meta)
        num_images = meta[META_NUM_IMAGES]
        if isinstance(num_images, float) and num_images.is_integer():
            num_images = int(num_images)
        if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
            raise AttackInputError(f"meta {META_NUM_IMAGES!r} must be a positive integer, got {num_images!r}")
        model_meta = meta.get(META_MODEL)
        if isinstance(model_meta, Mapping) and model_meta.get("name") not in (None, self.model_name):
            raise AttackInputError(
                f"the client trains {model_meta.get('name')!r} but the filter is configured for {self.model_name!r}"
            )
        return recipe, int(num_images)

    def _ground_truth(self, site: str, num_images: int) -> tuple[np.ndarray, list[int]] | None:
        path = self.audit_datalists.get(site)
        if path is None:
            return None
        from gradinv.data import load_datalist, load_images

        try:
            entries = load_datalist(path, key="training")
            images, labels = load_images(entries, self.resolution)
        except DataError as exc:
            logger.warning("audit ground truth for %s unavailable: %s", site, exc)
            return None
        if len(entries) != num_images:
            logger.warning("site %s reports %d images but its audit datalist lists %d", site, num_images, len(entries))
        return images[:, 0].numpy(), labels.tolist()


def _evaluate(originals, reconstructions, prior, true_labels, recovered_labels) -> dict[str, Any]:
    from gradinv.metrics import evaluate_reconstruction

    return evaluate_reconstruction(originals, reconstructions, prior=prior, true_labels=true_labels,
                                   recovered_labels=recovered_labels)
