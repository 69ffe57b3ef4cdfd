"""Input normalisation as the client's transform applied it, kept outside the images the attack optimises.

The attack optimises images in [0, 1] pixel space, where its priors (TV, the clamp, the prior image) and every
metric live; a client that normalised its inputs fed its model ``(x - mean) / std``. The attacker's copy of the
model does the same in a forward pre-hook, so parameter names (and so the state-dict keys the update is matched
on) stay those of the client's model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from gradinv.errors import AttackInputError

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def check_normalization(normalize: object, channels: int | None = None) -> Normalization | None:
    """``(mean, std)`` as tuples of floats, one per channel (std > 0, all finite), or None.

    Raises:
        AttackInputError: naming what is wrong.
    """
    if normalize is None:
        return None
    problem = f"normalize must be (mean, std) with one finite number per channel and std > 0, got {normalize!r}"
    if not isinstance(normalize, Sequence) or isinstance(normalize, str) or len(normalize) != 2:
        raise AttackInputError(problem)
    try:
        mean, std = (tuple(float(v) for v in (part if isinstance(part, Sequence) else [part])) for part in normalize)
    except (TypeError, ValueError) as exc:
        raise AttackInputError(problem) from exc
    if len(mean) != len(std) or not all(math.isfinite(v) for v in mean + std) or not all(v > 0 for v in std):
        raise AttackInputError(problem)
    if channels is not None and len(mean) not in (1, channels):
        raise AttackInputError(f"normalize gives {len(mean)} values per statistic but the images have {channels} "
                               "channel(s)")
    return mean, std


class _NormalizeInput:
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        images = args[0]
        mean, std = self.mean.to(images), self.std.to(images)
        return ((images - mean) / std, *args[1:])


def input_std(model: nn.Module) -> torch.Tensor | None:
    """The per-channel ``std`` (shape ``(1, C, 1, 1)``) that ``model`` divides its input by, when it was wrapped by
    :func:`with_input_normalization`; None for a model that takes its input as it is."""
    for hook in model._forward_pre_hooks.values():
        if isinstance(hook, _NormalizeInput):
            return hook.std
    return None


def with_input_normalization(model: nn.Module, normalize: Normalization | None) -> nn.Module:
    """A deep copy of ``model`` that feeds itself ``(x - mean) / std``; the model itself when ``normalize`` is None."""
    if normalize is None:
        return model
    normalized = copy.deepcopy(model)
    normalized.register_forward_pre_hook(_NormalizeInput(*normalize))
    return normalized
