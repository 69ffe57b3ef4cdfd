"""Differentiable, BatchNorm-exact replay of a client's local training (pure functions over parameter dicts).

:class:`FunctionalReplay` runs the client's :class:`~gradinv.recipe.TrainingRecipe` step by step with
``torch.func.functional_call`` and ``torch.autograd.grad(create_graph=True)``, each step applied by
:meth:`~gradinv.recipe.TrainingRecipe.optimizer_step` (SGD, Adam or AdamW, its state carried between steps),
so the simulated update is a differentiable function of the surrogate images and labels. Every BatchNorm
layer's batch mean and unbiased variance is recorded, keyed by layer name, in the same forward the client's
step used (same pre-update weights); :func:`replay_running_stats` turns them into the running statistics the
client must have sent, exactly, for any number of local steps.
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

    Two ways to differentiate a local step, same math: ``torch.autograd.grad(create_graph=True)`` (the eager
    default) or ``torch.func.grad`` (``functional=True``), which ``torch.compile`` can trace as one graph
    (:mod:`gradinv.attack.compiled`). Both take each step's BatchNorm statistics from
    :meth:`forward_with_stats`, which returns them explicitly.
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

    def forward_with_stats(
        self, params: Mapping[str, torch.Tensor], images: torch.Tensor
    ) -> tuple[torch.Tensor, BatchStats]:
        """One train-mode forward: the logits and, per BatchNorm layer, the (mean, unbiased variance) of its input.

        The statistics are returned, not left in an attribute: under ``torch.func`` transforms a tensor that
        escaped the transformed function (as a hook's side output would) is an unusable wrapper, while a
        returned one is unwrapped and stays differentiable at the outer level.
        """
        stats: BatchStats = {name: [] for name in self.bn_layer_names}
        self._batch_stats = stats
        try:
            logits = functional_call(self.model, dict(params), (images,))
        finally:
            self._batch_stats = None
        return logits, stats

    def _step_loss(
        self, params: Mapping[str, torch.Tensor], images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, BatchStats]:
        logits, stats = self.forward_with_stats(params, images)
        return self.recipe.loss_value(logits, targets), stats

    def run(
        self,
        params: Mapping[str, torch.Tensor],
        images: torch.Tensor,
        targets: torch.Tensor,
        create_graph: bool = True,
        functional: bool = False,
    ) -> ReplayResult:
        """Replay every local step on ``images`` (N, C, H, W) with ``targets`` (labels or class probabilities).

        ``functional=True`` differentiates each step with ``torch.func.grad`` (always differentiable w.r.t.
        the images and targets; ``create_graph`` is ignored): for use inside ``torch.func`` transforms and
        ``torch.compile``, where ``torch.autograd.grad`` cannot be traced.
        """
        if functional:
            current = {name: params[name] for name in self.param_names}
            step_gradients = torch.func.grad(self._step_loss, has_aux=True)
        else:
            # The local gradients are taken w.r.t. the parameters, so the starting point must be part of the graph.
            current = {
                name: p if p.requires_grad else p.detach().requires_grad_(True)
                for name, p in ((name, params[name]) for name in self.param_names)
            }
        optimizer_state = None  # the client's optimiser is fresh at the round's start (see TrainingRecipe)
        batch_stats: BatchStats = {name: [] for name in self.bn_layer_names}
        for batch in self.batches:
            if functional:
                gradient_map, stats = step_gradients(current, images[batch], targets[batch])
                grads = [gradient_map[name] for name in current]  # torch.func.grad gives zeros for unused inputs
            else:
                loss, stats = self._step_loss(current, images[batch], targets[batch])
                values = list(current.values())
                grads = torch.autograd.grad(loss, values, create_graph=create_graph, allow_unused=True)
                grads = [torch.zeros_like(v) if g is None else g for v, g in zip(values, grads)]
            for name, layer_stats in stats.items():
                batch_stats[name].extend(layer_stats)
            current, optimizer_state = self.recipe.optimizer_step(current, grads, optimizer_state)
        return ReplayResult(current, batch_stats)


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
