"""The paper's classifier: torchvision ResNet-18 with a 2-class head, grayscale repeated to 3 channels.

The client of the paper normalises its inputs with ImageNet statistics after repeating the gray channel;
that preprocessing is part of this module's forward so that the attack optimises a gray image in [0, 1]
(the released attack code skipped it, so its attack inverted a different function than the client trained).
"""

from __future__ import annotations

import torch
from torch import nn

from gradinv.compat import import_torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PaperResNet18(nn.Module):
    """torchvision ``resnet18(weights=None)`` with ``fc = Linear(512, num_classes)``; input (N, 1, H, W) in [0, 1].

    ImageNet-pretrained initial weights (the paper's starting point) are not available offline; the network
    starts from torchvision's random initialisation. Use >= 64 px (at 32 px layer4 is 1x1 and BatchNorm fails
    in train mode with one image).
    """

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes
        torchvision = import_torchvision()
        self.net = torchvision.models.resnet18(weights=None)
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return self.net((x.expand(-1, 3, -1, -1) - self.mean) / self.std)
