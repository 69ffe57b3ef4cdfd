"""The colour coordinates RGB images are optimised in (gradinv.attack.parametrisation)."""

import pytest
import torch

from gradinv.attack import get_preset
from gradinv.attack.parametrisation import ColourCoordinates
from gradinv.errors import AttackInputError


def test_round_trip_to_pixel_space_and_clamp_into_unit_range():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 5, 4, generator=generator)
    colour = ColourCoordinates(3, 0.25)
    coordinates = colour.from_pixels(images)
    assert not torch.allclose(coordinates, images)
    assert torch.allclose(colour.to_pixels(coordinates), images, atol=1e-6)
    # A step that leaves [0, 1] is clamped in pixel space, and the coordinates follow the clamped pixels.
    coordinates += 3 * torch.randn(coordinates.shape, generator=generator)
    colour.update_pixels(coordinates, images, clamp=True)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.allclose(colour.to_pixels(coordinates), images, atol=1e-6)


def test_chroma_steps_are_scaled_and_luminance_steps_are_not():
    colour = ColourCoordinates(3, 0.25)
    grey = torch.full((1, 3, 2, 2), 0.5)
    luminance_step, chroma_step = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    luminance_step[:, 0], chroma_step[:, 1] = 1.0, 1.0
    moved_luminance = colour.to_pixels(colour.from_pixels(grey) + luminance_step) - grey
    moved_chroma = colour.to_pixels(colour.from_pixels(grey) + chroma_step) - grey
    # A unit luminance step brightens all three channels alike; a unit chroma step moves a quarter as far.
    assert torch.allclose(moved_luminance, torch.full_like(grey, 3 ** -0.5), atol=1e-6)
    assert float(moved_chroma[0, :, 0, 0].norm()) == pytest.approx(0.25, abs=1e-6)
    assert float(moved_chroma.sum(dim=1).abs().max()) < 1e-6  # no change of brightness


def test_pulled_back_gradient_is_the_gradient_in_the_coordinates():
    generator = torch.Generator().manual_seed(1)
    colour = ColourCoordinates(3, 0.3)
    coordinates = torch.randn(1, 3, 4, 4, generator=generator, requires_grad=True)
    weights = torch.randn(1, 3, 4, 4, generator=generator)
    image_gradient = 2 * weights * colour.to_pixels(coordinates).detach()  # of sum(weights * images ** 2)
    (expected,) = torch.autograd.grad((weights * colour.to_pixels(coordinates) ** 2).sum(), [coordinates])
    assert torch.allclose(colour.pull_back(image_gradient), expected, atol=1e-5)


@pytest.mark.parametrize("channels, chroma_scale", [(1, 0.25), (3, 1.0)])
def test_one_channel_images_and_scale_one_are_optimised_as_they_are(channels, chroma_scale):
    images = torch.rand(1, channels, 3, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    colour = ColourCoordinates(channels, chroma_scale)
    assert colour.optimised(images) is images and colour.pull_back(images) is images


@pytest.mark.parametrize("value", [0.0, -0.5])
def test_a_non_positive_chroma_scale_fails_at_construction(value):
    with pytest.raises(AttackInputError, match="chroma_scale"):
        get_preset("fast", {"chroma_scale": value})
