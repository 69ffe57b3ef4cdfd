import json
import math

import numpy as np
import pytest
import torch

from gradinv.attack import ExchangeSearch, attack_update, get_preset
from gradinv.attack.exchange import (
    DISTINCT_STATES,
    MIN_RELATIVE_GAIN,
    _lowest_distinct,
    _SearchState,
    exchange_candidates,
    exchange_region,
    search_exchanges,
)
from gradinv.errors import AttackInputError
from gradinv.recipe import TrainingRecipe


def _pair_agreeing_along(path: np.ndarray, size: int = 32) -> torch.Tensor:
    """Two (1, size, size) images that differ strongly except in a 3-px band around ``path`` (column per row)."""
    generator = np.random.default_rng(0)
    first, second = generator.uniform(0.0, 1.0, (size, size)), generator.uniform(0.0, 1.0, (size, size))
    for row, column in enumerate(path):
        second[row, column - 1:column + 2] = first[row, column - 1:column + 2]
    return torch.tensor(np.stack([first, second]), dtype=torch.float32).unsqueeze(1)


def _quadratic_step(target: torch.Tensor):
    """A stand-in attack step: loss = squared distance to ``target``, gradient w.r.t. the images."""
    def step(images, label_logits, bn_weight):
        difference = images.detach() - target
        return (difference ** 2).sum(), {}, (2 * difference,)
    return step


def test_exchange_region_swaps_two_slots_inside_the_mask_only_and_undoes_itself():
    images = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 3:] = True
    swapped = exchange_region(images, 0, 2, mask)
    assert torch.equal(swapped[0][:, mask], images[2][:, mask]) and torch.equal(swapped[2][:, mask], images[0][:, mask])
    assert torch.equal(swapped[0][:, ~mask], images[0][:, ~mask]) and torch.equal(swapped[1], images[1])
    assert torch.equal(exchange_region(swapped, 0, 2, mask), images)


def test_the_cheapest_candidate_follows_the_path_where_the_slots_agree():
    path = np.clip(16 + np.round(4 * np.sin(np.arange(32) / 5)).astype(int), 6, 25)
    pair = _pair_agreeing_along(path)
    candidates = exchange_candidates(pair[0], pair[1])
    names = [name for name, _ in candidates]
    assert any(name.startswith("horizontal") for name in names)
    first_mask = next(mask for name, mask in candidates if name.startswith("vertical@"))
    assert first_mask.dtype == torch.bool and first_mask.shape == (32, 32)
    boundary = first_mask.int().argmax(dim=1).numpy()  # first exchanged column per row
    assert np.abs(boundary - path).max() <= 1
    margin = round(0.1 * 32)
    for name, mask in candidates:
        assert mask.any() and not mask.all(), name
        if name.startswith("vertical@"):
            assert not mask[:, :margin].any() and mask[:, -margin:].all()  # seams stay off the borders


def test_brighter_first_candidates_exchange_where_the_first_slot_is_darker():
    first, second = torch.full((1, 16, 16), 0.8), torch.full((1, 16, 16), 0.2)
    first[:, :, 10:], second[:, :, 10:] = 0.1, 0.9
    masks = {name: mask for name, mask in exchange_candidates(first, second) if name.startswith("brighter-first")}
    assert masks and all(mask.shape == (16, 16) for mask in masks.values())
    assert torch.equal(masks["brighter-first sigma=1"], torch.arange(16).expand(16, 16) >= 10)
    assert not any(name.startswith("brighter-first") for name, _ in exchange_candidates(first, first * 0.5))


def test_a_blob_in_the_wrong_slot_gets_a_component_candidate_covering_it():
    # Both slots share their surroundings; a bright disc sits in the first slot, a faint one elsewhere in the second.
    rows, columns = np.mgrid[:32, :32]
    background = 0.3 + 0.2 * columns / 31
    disc = (rows - 10) ** 2 + (columns - 20) ** 2 <= 16
    faint = (rows - 24) ** 2 + (columns - 8) ** 2 <= 9
    first, second = background.copy(), background.copy()
    first[disc] += 0.6
    second[faint] += 0.5
    candidates = dict(exchange_candidates(torch.tensor(first)[None], torch.tensor(second)[None]))
    components = {name: mask.numpy() for name, mask in candidates.items() if name.startswith("component")}
    assert set(components) == {"component +1", "component -2"}  # the larger difference first
    assert components["component +1"][disc].all() and not components["component +1"][faint].any()
    assert components["component -2"][faint].all() and not components["component -2"][disc].any()
    assert components["component +1"].sum() < 3 * disc.sum()  # the disc and its edge, not the whole image
    assert not any(name.startswith("component") for name, _ in exchange_candidates(torch.tensor(first)[None],
                                                                                  torch.tensor(first)[None]))


def test_search_keeps_the_exchange_that_lowers_the_loss():
    path = np.full(32, 15)
    truth = _pair_agreeing_along(path)
    patchwork = exchange_region(truth, 0, 1, torch.from_numpy(np.arange(32)[None, :] >= 15).expand(32, 32))
    step = _quadratic_step(truth)
    outcome = search_exchanges(step, patchwork, torch.zeros(2, 2), [(0, 1)], rounds=2, screen_iterations=3,
                               polish_iterations=10, lr=0.01, betas=(0.9, 0.9), bn_weight=0.3)
    assert outcome.accepted and outcome.accepted[0].startswith("0-1 vertical")
    assert outcome.loss < 1e-2 * float(step(patchwork, None, 0.3)[0])
    assert torch.allclose(outcome.images, truth, atol=0.05)


def test_search_keeps_nothing_when_no_exchange_helps():
    truth = _pair_agreeing_along(np.full(32, 15))
    start = (truth + 0.01).clamp(0, 1)
    step = _quadratic_step(truth)
    outcome = search_exchanges(step, start, torch.zeros(2, 2), [(0, 1)], rounds=3, screen_iterations=3,
                               polish_iterations=10, lr=0.01, betas=(0.9, 0.9), bn_weight=0.3)
    assert outcome.accepted == [] and outcome.stopped == "completed"
    assert outcome.loss <= float(step(start, None, 0.3)[0])  # the polish alone never makes it worse
    assert torch.allclose(outcome.images, truth, atol=0.02)
    assert 0 < MIN_RELATIVE_GAIN < 1


def test_a_beam_follows_an_exchange_that_pays_only_with_the_next_one(monkeypatch):
    # Truth, and a start two exchanges away from it: exchanging the left half, then the top quarter, restores it.
    # The left half alone leaves a quarter of the pixels wrong; a decoy exchange elsewhere scores lower at once but
    # leads nowhere (a narrow basin of its own). A greedy search takes the decoy; a beam of 2 with a patience of 2
    # keeps both and finds the truth.
    truth = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    left = torch.zeros(32, 32, dtype=torch.bool)
    left[:, :16] = True
    top = torch.zeros(32, 32, dtype=torch.bool)
    top[:8] = True
    corner = torch.zeros(32, 32, dtype=torch.bool)
    corner[-4:, -4:] = True
    start = exchange_region(exchange_region(truth, 0, 1, left), 0, 1, top)
    decoy = exchange_region(start, 0, 1, corner)
    decoy_loss = 0.5 * float(((exchange_region(start, 0, 1, left) - truth) ** 2).sum())

    def step(images, label_logits, bn_weight):
        to_truth, to_decoy = images.detach() - truth, images.detach() - decoy
        near_truth, near_decoy = (to_truth ** 2).sum(), decoy_loss + 100 * (to_decoy ** 2).sum()
        return (near_truth, {}, (2 * to_truth,)) if near_truth < near_decoy else (near_decoy, {}, (200 * to_decoy,))

    monkeypatch.setattr("gradinv.attack.exchange.exchange_candidates",
                        lambda first, second: [("vertical@16", left), ("horizontal@8", top), ("component +1", corner)])
    settings = dict(rounds=4, screen_iterations=2, polish_iterations=4, lr=0.001, betas=(0.9, 0.9), bn_weight=0.3)
    greedy = search_exchanges(step, start, torch.zeros(2, 2), [(0, 1)], **settings)
    assert greedy.accepted == ["0-1 component +1"] and greedy.loss == pytest.approx(decoy_loss, rel=0.01)
    beam = search_exchanges(step, start, torch.zeros(2, 2), [(0, 1)], beam_width=2, patience=2, **settings)
    assert beam.accepted == ["0-1 vertical@16", "0-1 horizontal@8"]
    assert beam.loss < 1e-3 * decoy_loss and torch.allclose(beam.images, truth, atol=0.01)


def test_the_beam_keeps_distinct_states_only():
    base = torch.zeros(2, 1, 8, 8)
    states = [_SearchState(0.1, base, []), _SearchState(0.2, base + DISTINCT_STATES / 2, ["a"]),
              _SearchState(0.3, base + 0.5, ["b"]), _SearchState(0.4, base + 0.9, ["c"])]
    assert [state.accepted for state in _lowest_distinct(states, 2)] == [[], ["b"]]
    assert len(_lowest_distinct(states, 10)) == 3


@pytest.mark.parametrize("labels, searched", [([0, 0], True), ([0, 1], False)])
def test_attack_runs_the_search_only_for_slots_that_share_a_label(natural_images, client_update, labels, searched):
    images = natural_images(2, 32)
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    model, global_state, diff = client_update("bn_cnn", images, torch.tensor(labels), recipe)
    without = get_preset("fast", {"iterations": 20, "restarts": 1, "exchange": {"rounds": 0}})
    with_search = without.replace(exchange={"rounds": 1})
    plain = attack_update(model, global_state, diff, recipe, 2, without, progress=False, seed=1)
    result = attack_update(model, global_state, diff, recipe, 2, with_search, progress=False, seed=1)
    screen, polish = with_search.exchange.iterations(with_search.iterations)
    assert (screen, polish) == (2, 8)  # fractions of the 20 iterations
    if searched:
        assert result.iterations > plain.iterations + polish  # the start's polish, then at least one screening
        assert result.loss <= plain.loss + 1e-6 and math.isfinite(result.loss)
        assert isinstance(result.diagnostics()["exchanges"], list)
    else:
        assert result.iterations == plain.iterations and result.exchanges == []
        assert torch.equal(result.images, plain.images)


def test_a_same_label_search_from_two_runs_keeps_the_lower_loss_and_mixed_labels_polish_one(natural_images,
                                                                                           client_update):
    images = natural_images(2, 32)
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    for labels, searched in (([1, 1], True), ([0, 1], False)):
        model, global_state, diff = client_update("bn_cnn", images, torch.tensor(labels), recipe)
        one = get_preset("fast", {"iterations": 20, "restarts": 2, "exchange": {"rounds": 1, "starts": 1}})
        two = one.replace(exchange={"starts": 2})
        from_one = attack_update(model, global_state, diff, recipe, 2, one, progress=False, seed=3)
        from_two = attack_update(model, global_state, diff, recipe, 2, two, progress=False, seed=3)
        if searched:
            assert from_two.iterations > from_one.iterations  # a second search, from the other run
            assert from_two.loss <= from_one.loss + 1e-6
        else:
            assert from_two.iterations == from_one.iterations and torch.equal(from_two.images, from_one.images)


def test_multi_image_clients_get_a_noise_free_polish_that_never_raises_the_loss(natural_images, client_update):
    images, labels = natural_images(2, 32), torch.tensor([0, 1])
    recipe = TrainingRecipe(lr=0.01, batch_size=2)
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    unpolished = get_preset("fast", {"iterations": 20, "restarts": 1, "polish": 0.0})
    polished = unpolished.replace(polish=1.5)
    before = attack_update(model, global_state, diff, recipe, 2, unpolished, progress=False, seed=2)
    after = attack_update(model, global_state, diff, recipe, 2, polished, progress=False, seed=2)
    assert polished.polish_iterations(2) == 30 and polished.polish_iterations(1) == 0
    assert after.iterations == before.iterations + 30
    assert after.loss <= before.loss + 1e-6 and not torch.equal(after.images, before.images)


def test_exchange_settings_are_validated():
    with pytest.raises(AttackInputError, match=r"exchange\.rounds"):
        get_preset("fast", {"exchange": {"rounds": -1}})
    with pytest.raises(AttackInputError, match=r"exchange\.starts"):
        get_preset("fast", {"exchange": {"starts": 0}})
    for name in ("beam", "patience"):
        with pytest.raises(AttackInputError, match=rf"exchange\.{name}"):
            get_preset("fast", {"exchange": {name: 0}})
    with pytest.raises(AttackInputError, match=r"exchange\.lr"):
        get_preset("fast", {"exchange": {"lr": 0}})
    with pytest.raises(AttackInputError, match="polish"):
        get_preset("fast", {"polish": -1.0})
    # The search is opt-in for its cost: `thorough` is `fast` with it, and nothing else differs.
    assert get_preset("paper").exchange.rounds == 0 and get_preset("fast").exchange.rounds == 0
    rounds = get_preset("thorough").exchange.rounds
    assert rounds > 0 and get_preset("thorough") == get_preset("fast", {"exchange": {"rounds": rounds}})


def test_exchange_overrides_merge_into_the_current_settings():
    thorough = get_preset("thorough", {"exchange": {"beam": 1, "patience": 1}})
    assert thorough.exchange == ExchangeSearch(rounds=6, beam=1, patience=1)  # the preset's rounds are kept
    assert thorough.replace(exchange={"lr": 0.02}).exchange == ExchangeSearch(rounds=6, beam=1, patience=1, lr=0.02)
    assert get_preset("fast").replace(exchange=ExchangeSearch(starts=3)).exchange == ExchangeSearch(starts=3)
    # The stored (JSON) form reads back as the same settings.
    stored = json.loads(json.dumps(thorough.to_dict()))
    assert stored["exchange"]["rounds"] == 6 and get_preset("fast", stored) == thorough
    with pytest.raises(AttackInputError, match=r"unknown exchange-search settings \['round'\]"):
        get_preset("fast", {"exchange": {"round": 6}})
    with pytest.raises(AttackInputError, match="exchange must be a mapping"):
        get_preset("fast", {"exchange": 6})


def test_a_flat_exchange_setting_says_what_to_write_instead():
    with pytest.raises(AttackInputError) as error:
        get_preset("fast", {"exchange_rounds": 6})
    assert str(error.value) == "'exchange_rounds' is now a key of 'exchange': pass {'exchange': {'rounds': 6}}"
    with pytest.raises(AttackInputError, match=r"are now keys of 'exchange': pass \{'exchange': \{'beam': 1, 'lr'"):
        get_preset("fast").replace(exchange_beam=1, exchange_lr=0.02)
