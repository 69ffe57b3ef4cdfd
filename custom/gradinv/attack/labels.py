"""Label counts from the last layer's bias update, where they are identifiable.

With a loss averaged over the batch, the bias of the final Linear layer moves by
``-lr * mean_batch(p - y)`` per plain-SGD step (``p - y`` divided by the number of classes too for BCE, which
averages over every logit). Summed over a round of E epochs of equal batches of B images this gives

    n_c = N * pbar_c + B * [C] * (delta_b_c + lr * weight_decay * T * b_c) / (lr * E)

where ``pbar_c`` is the model's mean predicted probability for class c. With plain SGD (momentum 0) and
one full batch this is exact given ``pbar``; ``pbar`` itself is unknown to the attacker and is estimated
from the global model's predictions on the initial surrogate images, so the counts are an estimate that
is reliable when the model is far from confident (early rounds), as is typical for the rounds that leak.
The batch order does not enter, so an undisclosed order is fine.

Elsewhere the sum does not hold and no counts are given: Adam/AdamW normalise each step's gradient; SGD
momentum weighs each step's gradient differently (except in a single step from a fresh optimiser, where
Nesterov scales it by ``1 + momentum``); ``drop_last`` leaves images unseen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gradinv.attack.inputs import AttackInputs
from gradinv.recipe import TrainingRecipe


def final_linear_bias_name(model: nn.Module, num_classes: int) -> str | None:
    """Name of the bias of the last ``nn.Linear`` with ``num_classes`` outputs, or None."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes and module.bias is not None:
            found = f"{name}.bias" if name else "bias"
    return found


def estimate_label_counts(
    model: nn.Module, inputs: AttackInputs, num_classes: int, mean_probabilities: torch.Tensor
) -> list[int] | None:
    """Integer label counts summing to N, or None when the model has no usable final bias or the recipe's
    optimiser breaks the formula (see the module docstring)."""
    bias_name = final_linear_bias_name(model, num_classes)
    recipe, n = inputs.recipe, inputs.num_images
    scale = _sgd_step_scale(recipe, n)
    if bias_name is None or scale is None:
        return None
    step_lr = recipe.lr * scale
    steps = recipe.num_steps(n)
    decay = step_lr * recipe.weight_decay * steps * inputs.global_state[bias_name].double()
    delta = inputs.diff[bias_name].double() + decay
    per_logit = num_classes if recipe.loss == "bce" else 1
    batch = recipe.effective_batch_size(n)
    counts = n * mean_probabilities.double().cpu() + batch * per_logit * delta / (step_lr * recipe.epochs)
    return round_to_total(counts.numpy(), n)  # one class per image, for BCE's one-hot targets too


def _sgd_step_scale(recipe: TrainingRecipe, num_images: int) -> float | None:
    """Each step's parameter change in units of ``-lr * gradient`` where the formula holds, else None."""
    if recipe.optimizer != "sgd" or recipe.images_per_epoch(num_images) != num_images:
        return None
    if not recipe.momentum:
        return 1.0
    if recipe.num_steps(num_images) == 1 and recipe.fresh_optimizer:
        return 1.0 + recipe.momentum if recipe.nesterov else 1.0  # the buffer starts at the gradient
    return None


def round_to_total(values: np.ndarray, total: int) -> list[int]:
    """Non-negative integers summing to ``total``, closest to ``values`` (largest-remainder rounding)."""
    clipped = np.clip(values, 0, None)
    if clipped.sum() <= 0:
        clipped = np.ones_like(clipped)
    scaled = clipped * total / clipped.sum()
    floors = np.floor(scaled).astype(int)
    for index in np.argsort(-(scaled - floors))[: total - floors.sum()]:
        floors[index] += 1
    return floors.tolist()


def labels_from_counts(counts: list[int]) -> torch.Tensor:
    """One label per surrogate slot, class by class (slots are interchangeable)."""
    return torch.tensor([c for c, count in enumerate(counts) for _ in range(count)], dtype=torch.long)
