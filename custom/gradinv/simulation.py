"""One simulated FL client: a model, its images and its recipe in, the update it would send out.

This is the "user" of an attack case (breaching's ``cases/``): ``gradinv attack``, the benchmarks and the tests
build a client update here, in one place, and the attacker only ever sees what a server would receive
(:class:`ClientUpdate`: the global state, the state-dict diff, the recipe and the number of images).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from gradinv.errors import AttackInputError
from gradinv.recipe import TrainingRecipe


@dataclasses.dataclass(frozen=True)
class ClientUpdate:
    """What a server receives from one client round, plus the client's own training figures."""

    global_state: dict[str, torch.Tensor]
    """The global model's state dict the client started from (detached copies)."""
    diff: dict[str, torch.Tensor]
    """Client state after local training minus ``global_state``, every entry (BN buffers included)."""
    recipe: TrainingRecipe
    num_images: int
    round_num: int
    steps: int
    """Local optimiser steps taken (= BN ``num_batches_tracked`` increments)."""
    training_loss: float
    """Mean training loss over the local steps."""


def simulate_client(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TrainingRecipe,
    *,
    round_num: int = 0,
) -> ClientUpdate:
    """Train a copy of ``model`` (the round's global model) on ``images``/``labels`` with ``recipe``.

    ``model`` is left untouched. ``images`` are what the client's model is fed, (N, C, H, W).

    Raises:
        AttackInputError: when the local training diverges (a non-finite loss): such an update has nothing to invert.
    """
    global_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    client = copy.deepcopy(model)
    training = recipe.train(client, images, labels, round_num=round_num)
    after = client.state_dict()
    diff = {name: after[name].detach() - global_state[name] for name in global_state}
    with torch.no_grad():
        final_loss = float(recipe.loss_value(client(images), labels))
    if not (math.isfinite(training["loss"]) and math.isfinite(final_loss)):
        raise AttackInputError(f"the client's local training diverged (non-finite loss with lr {recipe.lr:g}); "
                               "use a smaller learning rate, e.g. 0.01")
    return ClientUpdate(global_state, diff, recipe, int(images.shape[0]), round_num, training["steps"],
                        training["loss"])
