import numpy as np
import pytest
import torch
from skimage import color, data, transform

from gradinv.models import build_model
from gradinv.recipe import TrainingRecipe
from gradinv.simulation import simulate_client


def _square(image: np.ndarray, resolution: int) -> np.ndarray:
    image = image.astype(np.float64)
    image = (image - image.min()) / (image.max() - image.min())
    side = min(image.shape)
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return transform.resize(image[top : top + side, left : left + side], (resolution, resolution), anti_aliasing=True)


@pytest.fixture
def natural_images():
    """Distinct real grayscale images (scikit-image's bundled set) as (N, 1, R, R) in [0, 1]."""

    def make(count: int, resolution: int) -> torch.Tensor:
        sources = [data.camera(), color.rgb2gray(data.retina()), data.moon(), data.cell(),
                   data.shepp_logan_phantom(), data.coins(), data.clock(), color.rgb2gray(data.astronaut())]
        stack = np.stack([_square(source, resolution) for source in sources[:count]])
        return torch.tensor(stack, dtype=torch.float32).unsqueeze(1)

    return make


@pytest.fixture
def client_update():
    """Train a real client (nn.Module + torch.optim, :func:`gradinv.simulation.simulate_client`) with a recipe;
    return (model, global_state, diff)."""

    def run(model_name: str, images: torch.Tensor, labels: torch.Tensor, recipe: TrainingRecipe, round_num: int = 0,
            dtype: torch.dtype = torch.float32, **model_kwargs):
        torch.manual_seed(0)
        model = build_model(model_name, resolution=images.shape[-1], **model_kwargs).to(dtype)
        update = simulate_client(model, images, labels, recipe, round_num=round_num)
        return model, update.global_state, update.diff

    return run
