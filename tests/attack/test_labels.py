"""Label counts from the last layer's bias update."""

import numpy as np
import pytest
import torch

from gradinv.attack.inputs import validate_attack_inputs
from gradinv.attack.labels import estimate_label_counts, final_linear_bias_name, round_to_total
from gradinv.recipe import TrainingRecipe


@pytest.mark.parametrize("labels", [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
def test_counts_are_recovered_for_a_full_batch_step(natural_images, client_update, labels):
    images, labels = natural_images(4, 32), torch.tensor(labels)
    recipe = TrainingRecipe(lr=0.001)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    inputs = validate_attack_inputs(model, global_state, diff, recipe, 4)
    with torch.no_grad():  # the attacker's estimate of the mean prediction: the global model on the true batch
        mean_probabilities = torch.softmax(model.train()(images), dim=1).mean(0)
    counts = estimate_label_counts(model, inputs, 2, mean_probabilities)
    assert counts == np.bincount(labels.numpy(), minlength=2).tolist()


def test_round_to_total_and_bias_lookup():
    assert round_to_total(np.array([1.6, 2.4]), 4) == [2, 2]
    assert round_to_total(np.array([-1.0, 5.0]), 3) == [0, 3]
    assert sum(round_to_total(np.array([0.2, 0.2, 0.2]), 2)) == 2
    assert final_linear_bias_name(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)), 2) == "1.bias"
    assert final_linear_bias_name(torch.nn.Linear(4, 2, bias=False), 2) is None
