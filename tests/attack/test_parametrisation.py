"""The colour coordinates RGB images are optimised in (gradinv.attack.parametrisation), and an RGB attack using them."""

import pytest
import torch
from torch import nn

from gradinv.attack import attack_update, get_preset
from gradinv.attack.parametrisation import ColourCoordinates, coarsen
from gradinv.errors import AttackInputError
from gradinv.models.normalization import with_input_normalization
from gradinv.recipe import TrainingRecipe
from gradinv.simulation import simulate_client


def _chroma(images: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour with its brightness taken out (zero for a grey image)."""
    return images - images.mean(dim=1, keepdim=True)


def test_round_trip_to_pixel_space_and_clamp_into_unit_range():
    generator = torch.Generator().manual_seed(0)
    colour = ColourCoordinates(3, chroma_detail=2)
    # Holding the colour to coarse detail is a projection: images whose colour is coarse survive the round trip.
    images = colour.to_pixels(colour.from_pixels(torch.rand(2, 3, 8, 6, generator=generator)))
    assert torch.allclose(colour.to_pixels(colour.from_pixels(images)), images, atol=1e-5)
    # A step that leaves [0, 1] is clamped in pixel space, and the coordinates follow the clamped pixels.
    coordinates = colour.from_pixels(images) + 3 * torch.randn(images.shape, generator=generator)
    expected = colour.to_pixels(coordinates).clamp(0, 1)
    colour.update_pixels(coordinates, images, clamp=True)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images, expected, atol=1e-6)
    assert torch.allclose(colour.from_pixels(images), coordinates, atol=1e-6)


def test_brightness_keeps_its_detail_and_colour_loses_detail_finer_than_the_factor():
    colour = ColourCoordinates(3, chroma_detail=2)
    checker = (torch.arange(8).view(-1, 1) + torch.arange(8).view(1, -1)) % 2 * 0.5 + 0.25
    grey = checker.expand(1, 3, 8, 8)
    assert torch.allclose(colour.to_pixels(colour.from_pixels(grey)), grey, atol=1e-6)
    coloured = torch.stack([checker, 1 - checker, torch.full_like(checker, 0.5)]).unsqueeze(0)
    smoothed = colour.to_pixels(colour.from_pixels(coloured))
    assert float(_chroma(coloured).abs().max()) > 0.2 and float(_chroma(smoothed).abs().max()) < 0.05
    assert torch.allclose(smoothed.mean(dim=1), coloured.mean(dim=1), atol=1e-6)  # brightness untouched


def test_pulled_back_gradient_is_the_gradient_in_the_coordinates():
    generator = torch.Generator().manual_seed(1)
    colour = ColourCoordinates(3, chroma_detail=2)
    coordinates = torch.randn(1, 3, 6, 6, generator=generator, requires_grad=True)
    weights = torch.randn(1, 3, 6, 6, generator=generator)
    image_gradient = 2 * weights * colour.to_pixels(coordinates).detach()  # of sum(weights * images ** 2)
    (expected,) = torch.autograd.grad((weights * colour.to_pixels(coordinates) ** 2).sum(), [coordinates])
    assert torch.allclose(colour.pull_back(image_gradient), expected, atol=1e-5)


@pytest.mark.parametrize("channels, chroma_detail", [(1, 2), (3, 1)])
def test_one_channel_images_and_detail_one_are_optimised_as_they_are(channels, chroma_detail):
    images = torch.rand(1, channels, 4, 4, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    colour = ColourCoordinates(channels, chroma_detail)
    assert colour.optimised(images) is images and colour.pull_back(images) is images
    assert colour.to_pixels(images) is images and colour.from_pixels(images) is images


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_a_chroma_detail_that_is_not_a_positive_integer_fails_at_construction(value):
    with pytest.raises(AttackInputError, match="chroma_detail"):
        get_preset("fast", {"chroma_detail": value})


class _TinyRGBNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4 * 12 * 12, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_an_rgb_normalised_client_is_attacked_in_pixel_space_with_coarse_colour():
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = with_input_normalization(_TinyRGBNet(), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    images, labels = torch.rand(1, 3, 12, 12, generator=generator), torch.tensor([1])
    recipe = TrainingRecipe(lr=0.01, momentum=0.9, batch_size=1)
    update = simulate_client(model, images, labels, recipe)
    config = get_preset("fast", {"iterations": 40, "energy": 0.0})
    result = attack_update(model, update.global_state, update.diff, recipe, 1, config, num_classes=2,
                           progress=False, seed=0, input_shape=(3, 12, 12))
    reconstruction = result.images
    assert reconstruction.shape == (1, 3, 12, 12) and reconstruction.min() >= 0 and reconstruction.max() <= 1
    # The colour holds (up to the clamp into [0, 1]) no detail finer than the preset's; the brightness does.
    assert config.chroma_detail > 1
    colour = ColourCoordinates(3, config.chroma_detail)
    coarse = colour.to_pixels(colour.from_pixels(reconstruction))
    fine_chroma = float((_chroma(reconstruction) - _chroma(coarse)).norm() / _chroma(reconstruction).norm())
    brightness = reconstruction.mean(dim=1, keepdim=True)
    fine_brightness = float((brightness - coarsen(brightness, 2)).norm() / (brightness - brightness.mean()).norm())
    assert fine_chroma < 0.1 and fine_brightness > 0.3
