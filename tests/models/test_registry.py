"""Every registered model builds by name, takes (N, 1, H, W) grayscale in [0, 1] and trains with BatchNorm."""

import pytest
import torch

from gradinv.models import MODEL_NAMES, build_model
from gradinv.recipe import TrainingRecipe


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_builds_trains_and_carries_batchnorm_buffers(name):
    resolution = 224 if name == "resnet18" else 64
    model = build_model(name, num_classes=2, resolution=resolution)
    images, labels = torch.rand(2, 1, resolution, resolution), torch.tensor([0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}

    assert model(images).shape == (2, 2)
    TrainingRecipe(lr=0.01).train(model, images, labels)

    running = [k for k in before if k.endswith("running_mean")]
    assert running, "the product's premise: BatchNorm running statistics travel in the state dict"
    assert any(not torch.equal(before[k], model.state_dict()[k]) for k in running)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'vgg'; choose one of: bn_cnn"):
        build_model("vgg")


def test_bn_cnn_initialisation_is_seedable_and_resolution_checked():
    first, second = build_model("bn_cnn", init_seed=5), build_model("bn_cnn", init_seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    with pytest.raises(ValueError, match="must be divisible by 4"):
        build_model("bn_cnn", resolution=30)
