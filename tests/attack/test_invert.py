"""End to end: a real client's update is inverted back to its image."""

import importlib

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from gradinv.attack import attack_update, get_preset
from gradinv.attack.invert import coarsen, learning_rate
from gradinv.errors import AttackInputError
from gradinv.recipe import TrainingRecipe


def test_single_image_client_is_reconstructed(natural_images, client_update):
    images, labels = natural_images(1, 32), torch.tensor([1])
    recipe = TrainingRecipe(lr=0.01, batch_size=1)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    prior = torch.full((32, 32), 0.5)

    result = attack_update(model, global_state, diff, recipe, num_images=1,
                           config=get_preset("fast", {"iterations": 300}), prior=prior, progress=False, seed=0)

    ssim = structural_similarity(images[0, 0].numpy(), result.images[0, 0].numpy(), data_range=1.0)
    assert ssim > 0.9
    assert result.recovered_labels == [1]
    assert result.label_counts_estimate == [0, 1]
    assert result.update_distance < 0.05
    assert result.bn_residual < 0.01
    assert result.iterations == 300 and result.stopped == "completed"


def test_time_budget_stops_early_with_the_best_iterate(natural_images, client_update):
    images, labels = natural_images(1, 32), torch.tensor([0])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    config = get_preset("fast", {"iterations": 100000, "time_budget_s": 0.5})

    result = attack_update(model, global_state, diff, recipe, 1, config, progress=False)

    assert result.stopped == "time_budget"
    assert 0 < result.iterations < 100000
    assert torch.isfinite(result.images).all() and result.images.min() >= 0 and result.images.max() <= 1


def test_an_attack_longer_than_its_budget_says_so_and_what_budget_it_needs(
    natural_images, client_update, caplog, monkeypatch
):
    images, labels = natural_images(1, 32), torch.tensor([0])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    config = get_preset("fast", {"iterations": 1_000_000, "time_budget_s": 10.0, "compile": "off"})
    # A clock that advances 10 ms per reading: the projection is tested, not this machine's speed.
    readings = iter(range(10**9))
    invert_module = importlib.import_module("gradinv.attack.invert")
    monkeypatch.setattr(invert_module.time, "monotonic", lambda: 0.01 * next(readings))

    with caplog.at_level("WARNING", logger="gradinv.attack.invert"):
        result = attack_update(model, global_state, diff, recipe, 1, config, progress=False)

    assert result.stopped == "time_budget"
    assert result.projected_seconds > 1000 and result.diagnostics()["projected_seconds"] == result.projected_seconds
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "time budget is 10 s" in warnings[0] and "at least" in warnings[0]


def test_attack_does_not_mutate_inputs(natural_images, client_update):
    images, labels = natural_images(2, 32), torch.tensor([0, 1])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    global_numpy = {k: v.numpy().copy() for k, v in global_state.items()}
    diff_numpy = {k: v.numpy().copy() for k, v in diff.items()}
    passed_global = {k: v.copy() for k, v in global_numpy.items()}
    passed_diff = {k: v.copy() for k, v in diff_numpy.items()}
    model_state = {k: v.clone() for k, v in model.state_dict().items()}

    attack_update(model, passed_global, passed_diff, recipe, 2, get_preset("fast", {"iterations": 5}), progress=False)

    for k in global_numpy:
        np.testing.assert_array_equal(passed_global[k], global_numpy[k])
        np.testing.assert_array_equal(passed_diff[k], diff_numpy[k])
        assert torch.equal(model.state_dict()[k], model_state[k])


def test_attack_is_reproducible_with_a_seed(natural_images, client_update):
    images, labels = natural_images(1, 32), torch.tensor([0])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    config = get_preset("fast", {"iterations": 20})
    first = attack_update(model, global_state, diff, recipe, 1, config, progress=False, seed=4)
    second = attack_update(model, global_state, diff, recipe, 1, config, progress=False, seed=4)
    assert torch.equal(first.images, second.images)


@pytest.mark.parametrize("preset", ["paper", "gpu"])
def test_other_presets_run(natural_images, client_update, preset):
    images, labels = natural_images(1, 32), torch.tensor([0])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    result = attack_update(model, global_state, diff, recipe, 1, get_preset(preset, {"iterations": 5}), progress=False)
    assert result.iterations == 5 and torch.isfinite(result.images).all()


def test_learning_rate_schedule_warms_up_then_decays_to_zero():
    rates = [learning_rate(i, 1000, 0.1, 100) for i in range(1000)]
    assert rates[0] == pytest.approx(0.001) and rates[99] == pytest.approx(0.1)
    assert rates[100] == pytest.approx(0.1) and rates[-1] < 1e-5
    assert all(a >= b for a, b in zip(rates[100:], rates[101:]))


def test_multi_image_clients_get_restarts_and_keep_the_lowest_loss_run(natural_images, client_update):
    images, labels = natural_images(2, 32), torch.tensor([0, 0])
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    # The polish and the exchange search would add iterations after the runs; this test is about the runs.
    once = get_preset("fast", {"iterations": 15, "restarts": 1, "polish": 0.0, "exchange": {"rounds": 0}})
    thrice = get_preset("fast", {"iterations": 15, "restarts": 3, "polish": 0.0, "exchange": {"rounds": 0}})

    single_run = attack_update(model, global_state, diff, recipe, 2, once, progress=False, seed=3)
    result = attack_update(model, global_state, diff, recipe, 2, thrice, progress=False, seed=3)

    assert single_run.runs == 1 and result.runs == 3 and 0 <= result.best_run < 3
    assert result.iterations == 3 * thrice.total_iterations(2)
    assert {record["run"] for record in result.history} == {0, 1, 2}
    # The first run is the single run (same seed); the returned iterate is the best over all runs.
    assert result.loss <= single_run.loss + 1e-6
    best_of_each_run = [min(r["loss"] for r in result.history if r["run"] == run) for run in range(3)]
    assert result.loss <= min(best_of_each_run) + 1e-6


def test_clients_the_exchange_search_runs_on_draw_its_own_restarts_runs(natural_images, client_update):
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    settings = {"iterations": 5, "restarts": 2, "polish": 0.0,
                "exchange": {"restarts": 4, "rounds": 1, "screen": 0.2, "polish": 0.2}}
    runs = {}
    for name, labels in (("same", [0, 0]), ("mixed", [0, 1])):
        model, global_state, diff = client_update("bn_cnn", natural_images(2, 32), torch.tensor(labels), recipe)
        result = attack_update(model, global_state, diff, recipe, 2, get_preset("fast", settings), progress=False)
        runs[name] = (result.label_counts_estimate, result.runs, {record["run"] for record in result.history})
    assert runs["same"] == ([2, 0], 4, {0, 1, 2, 3})
    assert runs["mixed"] == ([1, 1], 2, {0, 1})


def test_single_image_clients_run_once_whatever_the_restarts(natural_images, client_update):
    images, labels = natural_images(1, 32), torch.tensor([1])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    result = attack_update(model, global_state, diff, recipe, 1, get_preset("fast", {"iterations": 10, "restarts": 3}),
                           progress=False)
    assert result.runs == 1 and result.best_run == 0 and result.iterations == 10


def test_coarse_phase_holds_multi_image_runs_to_coarse_detail(natural_images, client_update):
    images, labels = natural_images(2, 32), torch.tensor([0, 0])
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    coarse_throughout = get_preset("fast", {"iterations": 10, "restarts": 1, "polish": 0.0, "exchange": {"rounds": 0},
                                            "coarse_to_fine": [[1.0, 4]]})
    result = attack_update(model, global_state, diff, recipe, 2, coarse_throughout, progress=False)
    # Every iterate the run evaluated, the returned best one included, carries no detail finer than 4 px.
    assert torch.allclose(result.images, coarsen(result.images, 4), atol=0.05)
    assert not torch.allclose(images, coarsen(images, 4), atol=0.05)
    full_detail = attack_update(model, global_state, diff, recipe, 2, coarse_throughout.replace(coarse_to_fine=()),
                                progress=False)
    assert not torch.allclose(full_detail.images, coarsen(full_detail.images, 4), atol=0.05)


def test_coarse_phase_is_skipped_when_no_two_slots_share_a_label(natural_images, client_update):
    images, labels = natural_images(2, 32), torch.tensor([0, 1])
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    settings = {"iterations": 10, "restarts": 1, "polish": 0.0, "exchange": {"rounds": 0}}
    coarse = attack_update(model, global_state, diff, recipe, 2,
                           get_preset("fast", {**settings, "coarse_to_fine": [[1.0, 4]]}), progress=False)
    plain = attack_update(model, global_state, diff, recipe, 2, get_preset("fast", {**settings, "coarse_to_fine": []}),
                          progress=False)
    assert coarse.label_counts_estimate == [1, 1]
    assert torch.equal(coarse.images, plain.images)


def test_coarse_phases_follow_the_configured_fractions():
    config = get_preset("fast", {"coarse_to_fine": [[0.25, 4], [0.5, 2]]})
    assert [config.detail_factor(i, 100) for i in (0, 24, 25, 49, 50, 99)] == [4, 4, 2, 2, 1, 1]
    assert get_preset("paper").coarse_to_fine == () and get_preset("gpu").coarse_to_fine == ()


@pytest.mark.parametrize("phases", [[[0.5, 4], [0.25, 2]], [[0.5, 1]], [[1.5, 2]], [[0.5, 2.5]], [[0.0, 2]], "coarse",
                                    4, [4]])
def test_malformed_coarse_phases_are_rejected(phases):
    with pytest.raises(AttackInputError, match="coarse_to_fine"):
        get_preset("fast", {"coarse_to_fine": phases})


def test_a_per_class_prior_starts_each_slot_from_its_label_s_image(natural_images, client_update):
    images, labels = natural_images(2, 32), torch.tensor([0, 1])
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    priors = torch.stack([torch.full((1, 32, 32), 0.2), torch.full((1, 32, 32), 0.8)])
    config = get_preset("fast", {"iterations": 1, "restarts": 1, "init_noise": 0.0, "polish": 0.0})

    result = attack_update(model, global_state, diff, recipe, 2, config, prior=priors, progress=False, seed=0)

    assert sorted(result.label_counts_estimate) == [1, 1]
    expected = priors[torch.tensor(result.recovered_labels)]
    torch.testing.assert_close(result.priors, expected)
    # One Adam step (lr 0.1 at most) moves a slot from its start by less than the classes' 0.6 apart.
    slot_means = result.images.mean(dim=(1, 2, 3))
    torch.testing.assert_close(slot_means, expected.mean(dim=(1, 2, 3)), atol=0.15, rtol=0)


def test_a_prior_with_another_number_of_classes_is_refused(natural_images, client_update):
    images, labels = natural_images(1, 32), torch.tensor([0])
    recipe = TrainingRecipe()
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    with pytest.raises(AttackInputError, match="each of 3 classes but the model has 2"):
        attack_update(model, global_state, diff, recipe, 1, get_preset("fast", {"iterations": 1}),
                      prior=torch.rand(3, 1, 32, 32), progress=False)
