"""Name -> constructor table for the classifiers gradinv trains and attacks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

DEFAULT_MODEL = "bn_cnn"


def _bn_cnn(num_classes: int = 2, resolution: int = 64, **kwargs) -> nn.Module:
    from gradinv.models.bn_cnn import BNConvNet

    return BNConvNet(num_classes=num_classes, resolution=resolution, **kwargs)


def _densenet121(num_classes: int = 2, resolution: int = 64, **kwargs) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=num_classes, **kwargs)


def _resnet18_monai(num_classes: int = 2, resolution: int = 64, **kwargs) -> nn.Module:
    from monai.networks.nets import resnet18

    return resnet18(spatial_dims=2, n_input_channels=1, num_classes=num_classes, **kwargs)


def _resnet18_paper(num_classes: int = 2, resolution: int = 224, **kwargs) -> nn.Module:
    from gradinv.models.paper_resnet import PaperResNet18

    return PaperResNet18(num_classes=num_classes, **kwargs)


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "bn_cnn": (_bn_cnn, "small BatchNorm CNN, flatten->Linear head; default, inverts on a CPU in seconds (64 px)"),
    "densenet121": (_densenet121, "MONAI DenseNet121, 1 input channel (GAP head: hard to invert)"),
    "resnet18_monai": (_resnet18_monai, "MONAI ResNet-18, 1 input channel, stride-1 stem (GAP head)"),
    "resnet18": (_resnet18_paper, "the paper's torchvision ResNet-18, gray->3 channels + ImageNet norm, 224 px, GPU"),
}
MODEL_NAMES = tuple(_BUILDERS)


def build_model(name: str = DEFAULT_MODEL, num_classes: int = 2, resolution: int = 64, **kwargs) -> nn.Module:
    """Build a classifier by name. ``resolution`` is the input height = width the model will see.

    The model records the shape of one input image as ``model.input_shape`` (C, H, W).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    model = _BUILDERS[name][0](num_classes=num_classes, resolution=resolution, **kwargs)
    # The attack needs the shape of the images the model is fed; a user's own model declares it elsewhere.
    model.input_shape = (1, resolution, resolution)
    return model


def describe_models() -> dict[str, str]:
    return {name: description for name, (_, description) in _BUILDERS.items()}
