"""The functional replay reproduces a real client's update exactly, and is differentiable."""

import pytest
import torch

from gradinv.attack.inputs import validate_attack_inputs
from gradinv.attack.replay import FunctionalReplay, replay_running_stats
from gradinv.models import BNConvNet
from gradinv.recipe import TrainingRecipe


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-12))


# float32 diffs lose ~1e-5 of their relative precision to cancellation (client - global), for the client and the
# replay alike; float64 shows the replay itself is exact.
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-9), (torch.float32, 1e-4)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize(
    "recipe",
    [
        TrainingRecipe(lr=0.05, batch_size=2, epochs=2, shuffle=True, seed=3),
        TrainingRecipe(lr=0.05, batch_size=3, epochs=2, shuffle=True, momentum=0.9, weight_decay=1e-3),
        TrainingRecipe(lr=0.05, batch_size=2, epochs=1, loss="bce", bn_momentum=0.3),
    ],
    ids=["sgd-shuffled", "momentum-wd-ragged-batches", "bce"],
)
def test_replay_at_true_images_equals_real_client_update(natural_images, client_update, recipe, dtype, tolerance):
    images, labels = natural_images(4, 32).to(dtype), torch.tensor([0, 1, 1, 0])
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe, round_num=5, dtype=dtype)
    validate_attack_inputs(model, global_state, diff, recipe, num_images=4, round_num=5)

    replay = FunctionalReplay(model, recipe, num_images=4, round_num=5)
    result = replay.run(global_state, images, labels, create_graph=False)

    simulated = {name: result.params[name] - global_state[name] for name in replay.param_names}
    assert _relative_error(torch.cat([simulated[n].flatten() for n in simulated]),
                           torch.cat([diff[n].flatten() for n in simulated])) < tolerance
    largest = max(float(diff[name].norm()) for name in simulated)
    for name in simulated:
        if diff[name].norm() > 1e-3 * largest:  # conv biases before BatchNorm only move by rounding noise
            assert _relative_error(simulated[name], diff[name]) < tolerance, name
    for layer in replay.bn_layer_names:
        mean, var = replay_running_stats(global_state[f"{layer}.running_mean"], global_state[f"{layer}.running_var"],
                                         result.batch_stats[layer], recipe.bn_momentum)
        assert _relative_error(mean, global_state[f"{layer}.running_mean"] + diff[f"{layer}.running_mean"]) < tolerance
        assert _relative_error(var, global_state[f"{layer}.running_var"] + diff[f"{layer}.running_var"]) < tolerance
        assert len(result.batch_stats[layer]) == recipe.num_steps(4)


def test_replay_gradcheck_float64():
    torch.manual_seed(0)
    recipe = TrainingRecipe(lr=0.1, batch_size=2, epochs=1, momentum=0.5)
    model = BNConvNet(resolution=6, widths=(2, 2)).double()
    replay = FunctionalReplay(model, recipe, num_images=4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    labels = torch.tensor([0, 1, 0, 1])
    probe = {k: torch.randn_like(v) for k, v in params.items()}

    def simulated(images):
        result = replay.run(params, images, labels)
        update = sum(((result.params[k] - params[k]) * probe[k]).sum() for k in params)
        bn = sum(m.sum() + v.sum() for steps in result.batch_stats.values() for m, v in steps)
        return update, bn

    images = torch.rand(4, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(simulated, (images,), eps=1e-6, atol=1e-5)


def test_replay_does_not_touch_the_model():
    model = BNConvNet(resolution=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replay = FunctionalReplay(model, TrainingRecipe(), num_images=2)
    replay.run(dict(model.named_parameters()), torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.features[1].running_mean is not None
