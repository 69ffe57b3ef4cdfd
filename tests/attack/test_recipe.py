"""The batch order is a pure function of (seed, round, epoch); SGD steps match torch.optim.SGD."""

import torch

from gradinv.recipe import TrainingRecipe


def test_batches_cover_every_image_once_per_epoch_and_are_deterministic():
    recipe = TrainingRecipe(batch_size=3, epochs=2, seed=1)
    batches = recipe.batches(7, round_num=2)
    assert len(batches) == recipe.num_steps(7) == 6
    for epoch in range(2):
        assert sorted(torch.cat(batches[epoch * 3 : epoch * 3 + 3]).tolist()) == list(range(7))
    assert all(torch.equal(a, b) for a, b in zip(batches, recipe.batches(7, round_num=2)))
    assert not all(torch.equal(a, b) for a, b in zip(batches, recipe.batches(7, round_num=3)))


def test_unshuffled_batches_are_in_order_and_batch_is_capped():
    assert [b.tolist() for b in TrainingRecipe(batch_size=8, shuffle=False).batches(3)] == [[0, 1, 2]]
    assert TrainingRecipe(batch_size=None).num_steps(5) == 1


def test_soft_and_hard_targets_give_the_same_loss():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 2])
    for loss in ("cross_entropy", "bce"):
        recipe = TrainingRecipe(loss=loss)
        hard = recipe.loss_value(logits, labels)
        soft = recipe.loss_value(logits, torch.nn.functional.one_hot(labels, 3).float())
        assert torch.allclose(hard, soft)


def test_functional_sgd_step_matches_torch_sgd():
    torch.manual_seed(0)
    recipe = TrainingRecipe(lr=0.1, momentum=0.9, weight_decay=0.01)
    layer = torch.nn.Linear(3, 2)
    params = {k: v.detach().clone() for k, v in layer.named_parameters()}
    optimizer = recipe.make_optimizer(layer)
    buffers = None
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params.values()]
        for p, g in zip(layer.parameters(), grads):
            p.grad = g.clone()
        optimizer.step()
        params, buffers = recipe.optimizer_step(params, grads, buffers)
    for k, v in layer.named_parameters():
        assert torch.allclose(params[k], v.detach(), atol=1e-6)
