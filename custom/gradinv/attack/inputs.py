"""What the attacker is given, checked and converted once: global state dict, the client's diff, recipe, N.

Everything a server holds arrives here as numpy arrays or tensors; the attack works on float32 copies
and never touches the caller's objects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from gradinv.errors import AttackInputError
from gradinv.recipe import TrainingRecipe

BN_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


@dataclasses.dataclass
class AttackInputs:
    """Validated attacker knowledge, as float32 tensors on the CPU (copies of what was passed)."""

    global_state: dict[str, torch.Tensor]
    diff: dict[str, torch.Tensor]
    recipe: TrainingRecipe
    num_images: int
    round_num: int = 0

    @property
    def client_state(self) -> dict[str, torch.Tensor]:
        """The client's state after local training: global + diff."""
        return {name: self.global_state[name] + self.diff[name] for name in self.diff}


def _to_tensor(name: str, value: Any, role: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu", copy=True)
    else:
        try:
            array = np.array(value, copy=True)
        except Exception as exc:  # noqa: BLE001 - anything unconvertible is bad input
            raise AttackInputError(f"{role} entry {name!r} is not an array: {exc}") from exc
        if array.dtype == object or not np.issubdtype(array.dtype, np.number):
            raise AttackInputError(f"{role} entry {name!r} is not numeric (dtype {array.dtype})")
        tensor = torch.from_numpy(array)
    if not torch.isfinite(tensor.double()).all():
        raise AttackInputError(f"{role} entry {name!r} contains NaN or Inf values")
    return tensor.to(torch.float32)


def validate_attack_inputs(
    model: nn.Module,
    global_state: Mapping[str, Any],
    diff: Mapping[str, Any],
    recipe: TrainingRecipe,
    num_images: int,
    round_num: int = 0,
) -> AttackInputs:
    """Check the attacker's inputs against the model and against each other.

    Checks: every state-dict entry of ``model`` is in both the global state and the diff and nothing else
    is; shapes match the model; values are finite; ``num_images`` is a positive integer; the recipe's step
    count agrees with the diff of ``num_batches_tracked`` (which counts train-mode forwards).

    Raises:
        AttackInputError: naming the first problems found.
    """
    if not isinstance(recipe, TrainingRecipe):
        raise AttackInputError(f"recipe must be a TrainingRecipe, got {type(recipe).__name__}")
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise AttackInputError(f"num_images must be a positive integer, got {num_images!r}")
    for role, mapping in (("global model", global_state), ("diff", diff)):
        if not isinstance(mapping, Mapping):
            raise AttackInputError(f"{role} must be a mapping of parameter name to array, got {type(mapping).__name__}")

    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    for role, mapping in (("global model", global_state), ("diff", diff)):
        missing = sorted(set(expected) - set(mapping))
        extra = sorted(set(mapping) - set(expected))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} keys {_preview(missing)}")
            if extra:
                parts.append(f"unexpected {len(extra)} keys {_preview(extra)}")
            raise AttackInputError(
                f"{role} does not match the {type(model).__name__} architecture: "
                + "; ".join(parts)
                + " (is the filter configured with the model the clients train?)"
            )

    tensors = {}
    for role, mapping in (("global model", global_state), ("diff", diff)):
        converted = {}
        for name, shape in expected.items():
            tensor = _to_tensor(name, mapping[name], role)
            if tuple(tensor.shape) != shape:
                raise AttackInputError(
                    f"{role} entry {name!r} has shape {tuple(tensor.shape)}, the model expects {shape}"
                )
            converted[name] = tensor
        tensors[role] = converted

    inputs = AttackInputs(tensors["global model"], tensors["diff"], recipe, int(num_images), int(round_num))
    _check_step_count(inputs)
    return inputs


def _check_step_count(inputs: AttackInputs) -> None:
    expected_steps = inputs.recipe.num_steps(inputs.num_images)
    for name, delta in inputs.diff.items():
        if name.endswith(".num_batches_tracked"):
            observed = float(delta)
            if abs(observed - round(observed)) > 1e-3:
                return  # a noised counter (e.g. GaussianPrivacy noises every entry) says nothing about the steps
            if not math.isclose(observed, expected_steps, abs_tol=0.5):
                raise AttackInputError(
                    f"the recipe implies {expected_steps} local steps ({inputs.recipe.epochs} epoch(s) x "
                    f"{inputs.recipe.steps_per_epoch(inputs.num_images)} batch(es) of {inputs.num_images} image(s)) "
                    f"but {name} advanced by {observed:g}; the reported recipe or number of images is wrong"
                )
            return


def _preview(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"
