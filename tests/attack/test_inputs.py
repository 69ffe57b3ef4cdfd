"""Malformed attacker inputs raise AttackInputError naming the problem; nothing is mutated."""

import math

import numpy as np
import pytest
import torch

from gradinv.attack import get_preset, validate_attack_inputs
from gradinv.errors import AttackInputError
from gradinv.models import BNConvNet
from gradinv.recipe import TrainingRecipe


@pytest.fixture
def server_view():
    model = BNConvNet(resolution=16)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    diff = {k: np.full_like(v, 0.01, dtype=np.float32) for k, v in state.items()}
    for k in diff:
        if k.endswith("num_batches_tracked"):
            diff[k] = np.array(2.0)  # float64 after FedAvg, as NVFlare sends it
    return model, state, diff


def _check(server_view, recipe=TrainingRecipe(batch_size=2), num_images=4, **changes):
    model, state, diff = server_view
    state, diff = dict(state), dict(diff)
    for key, value in changes.items():
        target, name = key.split(":")
        mapping = state if target == "global" else diff
        if value is None:
            mapping.pop(name)
        else:
            mapping[name] = value
    return validate_attack_inputs(model, state, diff, recipe, num_images)


def test_valid_inputs_are_converted_to_float32_copies(server_view):
    inputs = _check(server_view)
    assert all(v.dtype == torch.float32 for v in inputs.diff.values())
    inputs.diff["classifier.bias"].add_(1.0)
    assert server_view[2]["classifier.bias"][0] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"diff:classifier.weight": None},
         "diff does not match the BNConvNet architecture: missing 1 keys [classifier.weight]"),
        ({"diff:extra.weight": np.zeros(3)}, "unexpected 1 keys [extra.weight]"),
        ({"global:features.1.running_var": None}, "global model does not match"),
        ({"diff:classifier.bias": np.zeros(3, np.float32)}, "'classifier.bias' has shape (3,), the model expects (2,)"),
        ({"diff:classifier.bias": np.array([np.nan, 0], np.float32)}, "'classifier.bias' contains NaN or Inf"),
        ({"global:classifier.bias": np.array([np.inf, 0], np.float32)}, "contains NaN or Inf"),
        ({"diff:classifier.bias": np.array(["a", "b"])}, "is not numeric"),
        ({"diff:features.1.num_batches_tracked": np.array(5.0)}, "the recipe implies 2 local steps"),
    ],
)
def test_malformed_inputs_are_named(server_view, changes, message):
    with pytest.raises(AttackInputError) as error:
        _check(server_view, **changes)
    assert message in str(error.value)


def test_noised_step_counter_is_not_held_against_the_recipe(server_view):
    _check(server_view, **{"diff:features.1.num_batches_tracked": np.array(2.37)})


@pytest.mark.parametrize("num_images", [0, -1, 2.5, True, "3"])
def test_bad_number_of_images(server_view, num_images):
    with pytest.raises(AttackInputError, match="num_images must be a positive integer"):
        _check(server_view, num_images=num_images)


def test_not_a_mapping(server_view):
    model, state, _ = server_view
    with pytest.raises(AttackInputError, match="diff must be a mapping"):
        validate_attack_inputs(model, state, [1, 2], TrainingRecipe(), 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lr": 0}, "lr must be"), ({"lr": math.nan}, "lr must be"), ({"epochs": 0}, "epochs must be"),
     ({"batch_size": 0}, "batch_size must be"), ({"loss": "mse"}, "loss must be one of"),
     ({"momentum": 1.0}, "momentum")],
)
def test_bad_recipe(kwargs, message):
    with pytest.raises(AttackInputError, match=message):
        TrainingRecipe(**kwargs)


def test_recipe_meta_round_trip_and_unknown_keys():
    recipe = TrainingRecipe(lr=0.02, batch_size=4, epochs=2, seed=7)
    assert TrainingRecipe.from_meta(recipe.to_meta()) == recipe
    assert TrainingRecipe.from_meta({**recipe.to_meta(), "epochs": 2.0, "batch_size": 4.0}) == recipe
    with pytest.raises(AttackInputError, match="unknown keys"):
        TrainingRecipe.from_meta({"lr": 0.1, "learning_rate": 0.1})


def test_bad_presets_and_overrides():
    with pytest.raises(AttackInputError, match="unknown attack preset 'slow'"):
        get_preset("slow")
    with pytest.raises(AttackInputError, match="unknown attack settings"):
        get_preset("fast", {"iters": 3})
    with pytest.raises(AttackInputError, match="iterations must be"):
        get_preset("fast", {"iterations": 0})
    with pytest.raises(AttackInputError, match="restart_init must be one of"):
        get_preset("fast", {"restart_init": "zeros"})
    with pytest.raises(AttackInputError, match="restart_min_images must be"):
        get_preset("fast", {"restart_min_images": 0})
    with pytest.raises(AttackInputError, match="bn_end must be"):
        get_preset("fast", {"bn_end": -0.1})
    with pytest.raises(AttackInputError, match="at least one of"):
        get_preset("fast", {"update_cosine": 0.0, "bn": 0.0, "bn_end": None})
    for betas in (0.9, [0.9], [0.9, 1.0], ["0.9", 0.9]):
        with pytest.raises(AttackInputError, match="betas must be two numbers"):
            get_preset("fast", {"betas": betas})
    assert get_preset("fast", {"betas": [0.5, 0.99]}).betas == (0.5, 0.99)


def test_bn_weight_ramps_linearly_over_a_run():
    fast = get_preset("fast", {"bn": 0.1, "bn_end": 0.3})
    weights = [fast.bn_weight(iteration, 101) for iteration in range(101)]
    assert weights[0] == pytest.approx(0.1) and weights[50] == pytest.approx(0.2) and weights[-1] == pytest.approx(0.3)
    assert all(a < b for a, b in zip(weights, weights[1:]))
    assert fast.bn_weight(0, 1) == pytest.approx(0.1)  # a one-iteration run uses the starting weight
    constant = get_preset("paper")
    assert constant.bn_end is None and {constant.bn_weight(i, 10) for i in range(10)} == {constant.bn}
    # BN matching that only starts later still counts as matching BN
    assert get_preset("fast", {"update_cosine": 0.0, "bn": 0.0, "bn_end": 0.5}).matches_bn
