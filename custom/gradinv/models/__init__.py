"""Classifiers by name, so that a job config, the client and the attacker build the same network.

``build_model("bn_cnn", resolution=64)`` etc. Every model takes grayscale images in [0, 1] shaped
(N, 1, H, W); whatever preprocessing a model needs (channel repetition, ImageNet normalisation) happens
inside its forward, so the attacker optimises images in the client's own input space.
"""

from gradinv.models.bn_cnn import BNConvNet
from gradinv.models.paper_resnet import PaperResNet18
from gradinv.models.registry import DEFAULT_MODEL, MODEL_NAMES, build_model, describe_models

__all__ = ["MODEL_NAMES", "DEFAULT_MODEL", "build_model", "describe_models", "BNConvNet", "PaperResNet18"]
