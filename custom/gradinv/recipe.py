"""The one definition of a client's local training, used by the client to train and by the attacker to replay.

A :class:`TrainingRecipe` fixes everything that decides the weight update a client sends: the loss, SGD's
learning rate / momentum / weight decay, the number of local epochs, the batch size, the per-round batch
order and BatchNorm's momentum. The client trains a normal ``nn.Module`` with :meth:`TrainingRecipe.train`
(``torch.optim.SGD``); the attacker replays the very same steps functionally with :meth:`TrainingRecipe.batches`,
:meth:`TrainingRecipe.loss` and :meth:`TrainingRecipe.sgd_step`, which reproduce ``torch.optim.SGD`` exactly
(checked by the exactness tests). There is no second training loop.

The recipe travels to the server in the update's meta (:meth:`to_meta` / :meth:`from_meta`), as the paper
assumes the server knows the local hyper-parameters. That includes the shuffle seed, so the replay uses the
client's real batch order: a worst case for the client, stated in the docs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.errors import AttackInputError

LOSSES = ("cross_entropy", "bce")


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """Local training of one FL client for one round.

    Args:
        lr: SGD learning rate.
        momentum: SGD momentum (0 = plain SGD, as in the paper).
        weight_decay: SGD L2 weight decay.
        epochs: local epochs per round.
        batch_size: images per local step; ``None`` means the whole local set in one batch.
        shuffle: reshuffle the local images every epoch (order seeded by ``seed``, the round and the epoch).
        seed: base seed of the batch order.
        loss: ``"cross_entropy"`` (softmax CE on integer labels, the paper's client) or ``"bce"``
            (BCE-with-logits on one-hot labels, what the paper's attack code assumed).
        bn_momentum: momentum of every BatchNorm layer's running statistics.
    """

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int | None = None
    shuffle: bool = True
    seed: int = 0
    loss: str = "cross_entropy"
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr!r}")
        if not (0 <= self.momentum < 1):
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            problems.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            problems.append(f"batch_size must be an integer >= 1 or None, got {self.batch_size!r}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (0 < self.bn_momentum <= 1):
            problems.append(f"bn_momentum must be in (0, 1], got {self.bn_momentum!r}")
        if problems:
            raise AttackInputError("invalid training recipe: " + "; ".join(problems))

    # --- what the recipe implies -------------------------------------------------------------------------
    def effective_batch_size(self, num_images: int) -> int:
        """Images per local step (the batch is capped at the local set size)."""
        return min(self.batch_size or num_images, num_images)

    def steps_per_epoch(self, num_images: int) -> int:
        return math.ceil(num_images / self.effective_batch_size(num_images))

    def num_steps(self, num_images: int) -> int:
        """Local SGD steps (= train-mode forwards = BN ``num_batches_tracked`` increments) in one round."""
        return self.epochs * self.steps_per_epoch(num_images)

    def batches(self, num_images: int, round_num: int = 0) -> list[torch.Tensor]:
        """The index batches of every local step, in order, for this round.

        The order is a pure function of (seed, round, epoch), so the client and the replay agree.
        """
        if num_images < 1:
            raise AttackInputError(f"a client needs at least one image, got num_images={num_images}")
        batch_size = self.effective_batch_size(num_images)
        batches = []
        for epoch in range(self.epochs):
            if self.shuffle:
                generator = torch.Generator().manual_seed(_order_seed(self.seed, round_num, epoch))
                order = torch.randperm(num_images, generator=generator)
            else:
                order = torch.arange(num_images)
            batches.extend(order[start : start + batch_size] for start in range(0, num_images, batch_size))
        return batches

    # --- the math shared by the client and the replay ----------------------------------------------------
    def loss_value(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch. ``targets`` are integer labels (N,) or class probabilities (N, C).

        Soft targets are what the attacker optimises; with one-hot targets both forms give the same value.
        """
        if self.loss == "cross_entropy":
            if targets.dtype in (torch.int64, torch.int32):
                return F.cross_entropy(logits, targets)
            return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        if targets.dtype in (torch.int64, torch.int32):
            targets = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def sgd_step(
        self,
        params: Mapping[str, torch.Tensor],
        grads: Sequence[torch.Tensor],
        momentum_buffers: Mapping[str, torch.Tensor] | None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """One out-of-place ``torch.optim.SGD`` step (dampening 0, no Nesterov), differentiable.

        Returns the new parameters and momentum buffers (``None`` when momentum is 0).
        """
        new_params, new_buffers = {}, ({} if self.momentum else None)
        for (name, param), grad in zip(params.items(), grads):
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            if self.momentum:
                previous = None if momentum_buffers is None else momentum_buffers.get(name)
                grad = grad if previous is None else self.momentum * previous + grad
                new_buffers[name] = grad
            new_params[name] = param - self.lr * grad
        return new_params, new_buffers

    # --- the client's side ---------------------------------------------------------------------------------
    def configure_batchnorm(self, model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = self.bn_momentum

    def make_optimizer(self, model: nn.Module) -> torch.optim.SGD:
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def train(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, round_num: int = 0) -> dict:
        """Train ``model`` in place for one round on the client's images; returns ``{"steps", "loss"}``.

        BatchNorm runs in train mode, so its running statistics are updated and travel in the diff.
        """
        self.configure_batchnorm(model)
        model.train()
        optimizer = self.make_optimizer(model)
        losses = []
        for batch in self.batches(images.shape[0], round_num):
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss_value(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return {"steps": len(losses), "loss": sum(losses) / len(losses)}

    # --- transport -------------------------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        """JSON-serialisable form, sent in the update's meta."""
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> TrainingRecipe:
        """Rebuild a recipe from :meth:`to_meta` output; unknown or missing keys are reported."""
        if not isinstance(meta, Mapping):
            raise AttackInputError(f"training recipe must be a mapping, got {type(meta).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(meta) - fields)
        if unknown:
            raise AttackInputError(f"training recipe has unknown keys {unknown}; known keys: {sorted(fields)}")
        values = dict(meta)
        for key in ("epochs", "seed"):
            if key in values and isinstance(values[key], float) and values[key].is_integer():
                values[key] = int(values[key])
        if isinstance(values.get("batch_size"), float) and values["batch_size"].is_integer():
            values["batch_size"] = int(values["batch_size"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise AttackInputError(f"invalid training recipe: {exc}") from exc


def _order_seed(seed: int, round_num: int, epoch: int) -> int:
    # A fixed mixing so that neighbouring (round, epoch) pairs get unrelated permutations.
    return (seed * 1_000_003 + round_num * 10_007 + epoch * 101) % (2**63 - 1)
