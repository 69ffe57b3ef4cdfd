"""Test accuracy of a model state on a datalist's test split (used by the client and at the end of a run)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradinv.models import build_model


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


def test_accuracy_of_state(model_name: str, resolution: int, num_classes: int, state: Mapping[str, Any],
                           datalist: str | Path) -> float | None:
    """Accuracy of ``state`` on the ``test`` entries of ``datalist``; None when it has none."""
    from gradinv.data import load_datalist, load_images
    from gradinv.errors import DataError

    try:
        entries = load_datalist(datalist, key="test")
    except DataError:
        return None  # no (usable) test split: accuracy is unknown, not zero
    if not entries:
        return None
    model = build_model(model_name, num_classes=num_classes, resolution=resolution)
    load_state(model, state)
    images, labels = load_images(entries, resolution)
    return accuracy(model, images, labels)
