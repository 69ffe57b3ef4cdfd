"""Differentiable, BatchNorm-exact replay of a client's local training (pure functions over parameter dicts).

:class:`FunctionalReplay` runs the client's :class:`~gradinv.recipe.TrainingRecipe` step by step with
``torch.func.functional_call`` and ``torch.autograd.grad(create_graph=True)``, so the simulated update is a
differentiable function of the surrogate images and labels. Every BatchNorm layer's batch mean and unbiased
variance is recorded, keyed by layer name, in the same forward the client's step used (same pre-update
weights); :func:`replay_running_stats` turns them into the running statistics the client must have sent,
exactly, for any number of local steps (``shared/reference/attack.md`` §5).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from gradinv.recipe import TrainingRecipe

BatchStats = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]


@dataclasses.dataclass
class ReplayResult:
    params: dict[str, torch.Tensor]
    """Parameters after the last local step (differentiable w.r.t. the images and targets)."""
    batch_stats: BatchStats
    """Per BatchNorm layer, per local step: (batch mean, unbiased batch variance) of the layer's input."""


class FunctionalReplay:
    """Replays ``recipe`` on surrogate data, starting from given parameters, without touching ``model``.

    The attack copy of the model has its BatchNorm running statistics removed (``track_running_stats=False``):
    in train mode BatchNorm normalises with batch statistics only, so this is exact, and it keeps buffers out
    of the differentiated graph.
    """

    def __init__(self, model: nn.Module, recipe: TrainingRecipe, num_images: int, round_num: int = 0):
        self.recipe = recipe
        self.model = copy.deepcopy(model).train()
        self.param_names = [name for name, _ in model.named_parameters()]
        self.bn_layer_names: list[str] = []
        for name, module in self.model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.track_running_stats = False
                module.running_mean = module.running_var = module.num_batches_tracked = None
                module.register_forward_pre_hook(functools.partial(self._record_batch_stats, name))
                self.bn_layer_names.append(name)
        self.batches = recipe.batches(num_images, round_num)
        self._batch_stats: BatchStats | None = None

    def _record_batch_stats(self, layer_name: str, module: nn.Module, args: tuple) -> None:
        if self._batch_stats is None:
            return
        activations = args[0]
        dims = [0, *range(2, activations.dim())]
        count = activations.numel() // activations.shape[1]
        mean = activations.mean(dims)
        variance = activations.var(dims, unbiased=False)
        if count > 1:  # running_var is updated with the unbiased estimate, normalisation uses the biased one
            variance = variance * (count / (count - 1))
        self._batch_stats[layer_name].append((mean, variance))

    def run(
        self,
        params: Mapping[str, torch.Tensor],
        images: torch.Tensor,
        targets: torch.Tensor,
        create_graph: bool = True,
    ) -> ReplayResult:
        """Replay every local step on ``images`` (N, C, H, W) with ``targets`` (labels or class probabilities)."""
        # The local gradients are taken w.r.t. the parameters, so the starting point must be part of the graph.
        current = {name: p if p.requires_grad else p.detach().requires_grad_(True)
                   for name, p in ((name, params[name]) for name in self.param_names)}
        momentum_buffers = None
        self._batch_stats = {name: [] for name in self.bn_layer_names}
        try:
            for batch in self.batches:
                logits = functional_call(self.model, current, (images[batch],))
                loss = self.recipe.loss_value(logits, targets[batch])
                values = list(current.values())
                grads = torch.autograd.grad(loss, values, create_graph=create_graph, allow_unused=True)
                grads = [torch.zeros_like(v) if g is None else g for v, g in zip(values, grads)]
                current, momentum_buffers = self.recipe.sgd_step(current, grads, momentum_buffers)
            return ReplayResult(current, self._batch_stats)
        finally:
            self._batch_stats = None


def replay_running_stats(
    initial_mean: torch.Tensor,
    initial_var: torch.Tensor,
    batch_stats: list[tuple[torch.Tensor, torch.Tensor]],
    momentum: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r <- (1 - m) r + m b`` over every local step, from the global running statistics."""
    mean, var = initial_mean, initial_var
    for batch_mean, batch_var in batch_stats:
        mean = (1 - momentum) * mean + momentum * batch_mean
        var = (1 - momentum) * var + momentum * batch_var
    return mean, var
