"""Test accuracy of a model state on a datalist's test split (used by the client and at the end of a run)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Load a state dict sent over NVFlare (numpy arrays or tensors; ``num_batches_tracked`` may be float64)."""
    own = model.state_dict()
    model.load_state_dict({name: torch.as_tensor(state[name]).to(own[name].dtype) for name in own})


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> float:
    """Top-1 accuracy in eval mode (BatchNorm uses its running statistics)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        correct += int((model(images[batch]).argmax(dim=1) == labels[batch]).sum())
    model.train(was_training)
    return correct / len(images)


def test_accuracy_of_state(model: nn.Module, state: Mapping[str, Any], datalist: str | Path,
                           input_shape: tuple[int, int, int]) -> float | None:
    """Accuracy of ``state`` loaded into a copy of ``model`` on the ``test`` entries of ``datalist`` (images read at
    ``input_shape`` (C, H, W) in [0, 1]; ``model`` applies any input normalisation itself); None when it has none."""
    from gradinv.data import load_datalist, load_images
    from gradinv.errors import DataError

    try:
        entries = load_datalist(datalist, key="test")
    except DataError:
        return None  # no (usable) test split: accuracy is unknown, not zero
    if not entries:
        return None
    model = copy.deepcopy(model)
    load_state(model, state)
    images, labels = load_images(entries, tuple(input_shape[1:]), channels=input_shape[0])
    return accuracy(model, images, labels)
