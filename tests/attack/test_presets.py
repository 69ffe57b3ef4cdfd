"""Presets as data: the ``gap`` preset and its loss options, choosing a preset by structure."""

import pytest
import torch
from torch import nn

from gradinv.attack import get_preset
from gradinv.attack.inputs import validate_attack_inputs
from gradinv.attack.losses import mean_cosine_distance
from gradinv.attack.objective import InversionObjective
from gradinv.attack.presets import PRESET_NAMES, PRESETS, check_preset, head_kind, preset_for_model, resolve_preset
from gradinv.errors import AttackInputError
from gradinv.models import BNConvNet
from gradinv.recipe import TrainingRecipe


def test_gap_preset_validates_and_uses_the_new_loss_options():
    config = get_preset("gap")
    assert config.bn_scale == "relative" and config.matches_bn


@pytest.mark.parametrize("setting", [{"update_layers": "per_tensor"}, {"bn_scale": "scaled"}])
def test_unknown_loss_modes_fail_at_construction(setting):
    with pytest.raises(AttackInputError, match=next(iter(setting))):
        get_preset("fast", setting)


class _PooledByModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class _PooledInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).mean(dim=(2, 3)))


def test_preset_for_model_picks_by_head_structure():
    assert head_kind(BNConvNet(resolution=16)) == "flatten" and preset_for_model(BNConvNet(resolution=16)) == "fast"
    for model in (_PooledByModule(), _PooledInForward()):
        assert head_kind(model) == "pooled" and preset_for_model(model) == "gap"
    assert all(preset_for_model(model) in PRESETS for model in (BNConvNet(resolution=16), _PooledByModule()))


def test_mean_cosine_distance_weights_every_tensor_alike():
    big, small = torch.tensor([100.0, 0.0]), torch.tensor([0.0, 0.01])
    assert float(mean_cosine_distance([big, small], [big, small])) == pytest.approx(0.0, abs=1e-6)
    # The small tensor pointing the other way costs half the maximum, however small its norm.
    assert float(mean_cosine_distance([big, -small], [big, small])) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bn_mode", ["exact", "single_step"])
def test_gap_objective_is_zero_at_the_true_images_and_positive_elsewhere(client_update, natural_images, bn_mode):
    torch.manual_seed(0)
    images, labels = natural_images(1, 16), torch.tensor([1])
    recipe = TrainingRecipe(lr=0.01)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    inputs = validate_attack_inputs(model, global_state, diff, recipe, 1)
    config = get_preset("gap", {"update_layers": "mean", "bn_mode": bn_mode, "tv_l2": 0.0, "l2": 0.0})
    objective = InversionObjective(model, inputs, config, torch.device("cpu"))
    targets = nn.functional.one_hot(labels, 2).float()
    _, at_truth, _ = objective(images, targets)
    _, elsewhere, _ = objective(torch.rand_like(images), targets)
    for term in ("update_layer_cosine", "bn"):
        assert float(at_truth[term].detach()) < 1e-3 < float(elsewhere[term].detach())


def test_auto_resolves_by_structure_and_other_names_stay():
    assert "auto" in PRESET_NAMES and "auto" not in PRESETS
    assert resolve_preset("auto", BNConvNet(resolution=16)) == "fast"
    assert resolve_preset("auto", _PooledByModule()) == "gap"
    assert resolve_preset("thorough", _PooledByModule()) == "thorough"


def test_auto_overrides_are_checked_against_every_preset_it_can_become_before_the_model_is_known():
    check_preset("auto", {"iterations": 10})
    with pytest.raises(AttackInputError, match="bn_scale"):
        check_preset("auto", {"bn_scale": "scaled"})
    with pytest.raises(AttackInputError, match="unknown attack preset 'turbo'.*auto"):
        check_preset("turbo")
