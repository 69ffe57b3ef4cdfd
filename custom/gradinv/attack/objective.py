"""The attacker's objective for one client update: how far the replayed training of surrogate images is from what
the client sent (update direction, BatchNorm running statistics), plus the image priors.

Shared by the inversion loop (:mod:`gradinv.attack.invert`), its compiled step (:mod:`gradinv.attack.compiled`),
the exchange search and the benchmarks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradinv.attack.inputs import AttackInputs
from gradinv.attack.losses import cosine_distance, image_l2, l2_sum_distance, mean_cosine_distance, total_variation_l2
from gradinv.attack.presets import AttackConfig
from gradinv.attack.replay import FunctionalReplay, ReplayResult, replay_running_stats
from gradinv.models.normalization import input_std
from gradinv.recipe import TrainingRecipe


def label_targets(label_logits: torch.Tensor, recipe: TrainingRecipe) -> torch.Tensor:
    """The soft labels the replayed training uses for these logits: sigmoid for a BCE recipe, else softmax."""
    return torch.sigmoid(label_logits) if recipe.loss == "bce" else torch.softmax(label_logits, dim=1)


class InversionObjective:
    """The attacker's loss for one client update, as a function of the surrogate images and targets."""

    def __init__(self, model: nn.Module, inputs: AttackInputs, config: AttackConfig, device: torch.device):
        self.config = config
        self.inputs = inputs
        self.replay = FunctionalReplay(model, inputs.recipe, inputs.num_images, inputs.round_num)
        # The total-variation prior is measured on what the model sees, (x - mean) / std: the matching terms'
        # gradients scale with 1/std too, so a preset's balance between them holds whatever the client's
        # normalisation (with std = 0.23, TV in pixel space would weigh ~4x less than the preset means).
        std = input_std(model)
        self.tv_input_scale = None if std is None else (1.0 / std).to(device)
        self.param_names = self.replay.param_names
        self.initial_params = {
            name: inputs.global_state[name].to(device, copy=True).requires_grad_(True) for name in self.param_names
        }
        self.observed_update = [inputs.diff[name].to(device) for name in self.param_names]
        momentum = inputs.recipe.bn_momentum
        self.bn_momentum = momentum
        self.bn_initial, self.bn_observed = {}, {}
        for layer in self.replay.bn_layer_names:
            initial = tuple(
                inputs.global_state[f"{layer}.{stat}"].to(device) for stat in ("running_mean", "running_var")
            )
            observed = tuple(
                initial[i] + inputs.diff[f"{layer}.{stat}"].to(device)
                for i, stat in enumerate(("running_mean", "running_var"))
            )
            self.bn_initial[layer], self.bn_observed[layer] = initial, observed
        if config.bn_mode == "single_step":  # the paper's inversion, exact only for one local step
            self.bn_single_step_targets = {
                layer: tuple(
                    (observed - (1 - momentum) * initial) / momentum
                    for initial, observed in zip(self.bn_initial[layer], self.bn_observed[layer])
                )
                for layer in self.replay.bn_layer_names
            }
            self.bn_single_step_scales = {
                layer: tuple(max(float(target.norm()), 1e-12) for target in targets)
                for layer, targets in self.bn_single_step_targets.items()
            }
        moved = sum(
            ((o - i) ** 2).sum()
            for layer in self.bn_observed
            for o, i in zip(self.bn_observed[layer], self.bn_initial[layer])
        )
        self._bn_scale = float(torch.sqrt(moved)) if self.bn_observed else 0.0
        # update_layers="mean": tensors whose observed update is zero (e.g. a conv bias cancelled by the BatchNorm after
        # it) have no direction to match and are left out.
        self.directed = [index for index, update in enumerate(self.observed_update) if float(update.norm()) > 0]
        # bn_scale="relative": each layer's error is divided by the size of what its batch statistics put into the
        # running statistics, (r - (1-m)^K r_global) for K local steps, so that every layer counts alike.
        decay = (1 - momentum) ** len(self.replay.batches)
        self.bn_layer_scales = {
            layer: tuple(
                max(float((observed - decay * initial).norm()), 1e-12)
                for observed, initial in zip(self.bn_observed[layer], self.bn_initial[layer])
            )
            for layer in self.bn_observed
        }

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, bn_weight: float | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], ReplayResult]:
        replayed = self.replay.run(self.initial_params, images, targets)
        total, terms = self.loss_from_replay(images, replayed, bn_weight)
        return total, terms, replayed

    def loss_from_replay(
        self, images: torch.Tensor, replayed: ReplayResult, bn_weight: float | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and its matching terms, given the replay of ``images`` (shared by the compiled step).

        ``bn_weight`` is the BatchNorm term's weight at this iteration (``config.bn`` when None); the compiled
        step passes it as a tensor, so that a changing weight is a graph input rather than a reason to recompile.
        """
        config = self.config
        bn_weight = config.bn if bn_weight is None else bn_weight
        simulated_update = [replayed.params[name] - self.initial_params[name] for name in self.param_names]
        terms: dict[str, torch.Tensor] = {"update_cosine": cosine_distance(simulated_update, self.observed_update)}
        if config.update_layers == "mean":
            terms["update_layer_cosine"] = mean_cosine_distance(
                [simulated_update[i] for i in self.directed], [self.observed_update[i] for i in self.directed]
            )
            total = config.update_cosine * terms["update_layer_cosine"]
        else:
            total = config.update_cosine * terms["update_cosine"]
        if config.update_l2:
            terms["update_l2"] = l2_sum_distance(simulated_update, self.observed_update)
            total = total + config.update_l2 * terms["update_l2"]
        if self.bn_observed and config.matches_bn:
            terms["bn"] = self.bn_loss(replayed)
            total = total + bn_weight * terms["bn"]
        if config.tv_l2:
            seen = images if self.tv_input_scale is None else images * self.tv_input_scale
            total = total + config.tv_l2 * total_variation_l2(seen)
        if config.l2:
            total = total + config.l2 * image_l2(images)
        return total, terms

    def bn_loss(self, replayed: ReplayResult) -> torch.Tensor:
        """Sum over layers of the norms of the statistics' errors (``bn_scale="absolute"``), or the mean over layers
        of the errors relative to each layer's :attr:`bn_layer_scales` (``"relative"``; a mean, so that the weight
        means the same for 20 layers as for 120)."""
        momentum, loss, relative = self.bn_momentum, 0.0, self.config.bn_scale == "relative"
        for layer, steps in replayed.batch_stats.items():
            if self.config.bn_mode == "exact":
                estimate = replay_running_stats(*self.bn_initial[layer], steps, momentum)
                target = self.bn_observed[layer]
                if relative:
                    loss = loss + sum(
                        (e - t).norm() / scale for e, t, scale in zip(estimate, target, self.bn_layer_scales[layer])
                    )
                else:
                    loss = loss + sum(((e - t) / momentum).norm() for e, t in zip(estimate, target))
            else:
                estimate, target = steps[-1], self.bn_single_step_targets[layer]
                if relative:
                    loss = loss + sum(
                        (e - t).norm() / scale
                        for e, t, scale in zip(estimate, target, self.bn_single_step_scales[layer])
                    )
                else:
                    loss = loss + sum((e - t).norm() for e, t in zip(estimate, target))
        return loss / len(replayed.batch_stats) if relative else loss

    @torch.no_grad()
    def bn_residual(self, replayed: ReplayResult) -> float | None:
        if not self.bn_observed:
            return None
        squared = 0.0
        for layer, steps in replayed.batch_stats.items():
            estimate = replay_running_stats(*self.bn_initial[layer], steps, self.bn_momentum)
            squared += sum(float(((e - t) ** 2).sum()) for e, t in zip(estimate, self.bn_observed[layer]))
        return math.sqrt(squared) / max(self._bn_scale, 1e-30)
