"""The default, CPU-invertible classifier: a small BatchNorm CNN with a flatten -> Linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BNConvNet(nn.Module):
    """``len(widths)`` blocks of 3x3 conv + BatchNorm + ReLU (first block stride 1, then stride 2),
    flattened into one Linear layer.

    The flatten head keeps spatial layout in the last layer's update, which is what makes a single
    client's images recoverable in CPU minutes; global-average-pool networks (ResNets) are not
    (see ``docs/architectures.md``).

    Args:
        in_channels: image channels (1 = grayscale).
        num_classes: output classes.
        resolution: input height = width in pixels; must be divisible by ``2 ** (len(widths) - 1)``.
        widths: output channels of each conv block.
        init_seed: seed of the initial weights (None: the global torch RNG). A job's initial global model
            is built from these arguments in the server process, so a seed here makes it reproducible.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        resolution: int = 64,
        widths: Sequence[int] = (16, 32, 64),
        init_seed: int | None = None,
    ):
        super().__init__()
        self.init_seed = init_seed
        with torch.random.fork_rng(enabled=init_seed is not None, devices=[]):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            self._build(in_channels, num_classes, resolution, widths)

    def _build(self, in_channels: int, num_classes: int, resolution: int, widths: Sequence[int]) -> None:
        downsampling = 2 ** (len(widths) - 1)
        if resolution % downsampling:
            raise ValueError(
                f"resolution {resolution} must be divisible by {downsampling} for {len(widths)} conv blocks"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.resolution = resolution
        self.widths = list(widths)
        layers, channels = [], in_channels
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        side = resolution // downsampling
        self.classifier = nn.Linear(channels * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
