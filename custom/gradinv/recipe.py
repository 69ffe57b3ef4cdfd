"""The one definition of a client's local training, used by the client to train and by the attacker to replay.

A :class:`TrainingRecipe` fixes everything that decides the weight update a client sends: the loss, the
optimiser (``torch.optim.SGD`` with momentum / dampening / Nesterov / weight decay, ``Adam`` or ``AdamW``) and its
hyper-parameters, the number of local epochs, the batch size, ``drop_last``, the per-round batch order and
BatchNorm's momentum. The client trains a normal ``nn.Module`` with :meth:`TrainingRecipe.train`; the attacker
replays the very same steps functionally with :meth:`TrainingRecipe.batches`, :meth:`TrainingRecipe.loss_value`
and :meth:`TrainingRecipe.optimizer_step`, which reproduce the torch optimisers (fresh at the round's start)
exactly (checked by the exactness tests). There is no second training loop.

The recipe travels to the server in the update's meta (:meth:`to_meta` / :meth:`from_meta`), as the paper
assumes the server knows the local hyper-parameters. gradinv's own client also sends its shuffle seed, so the
replay uses the client's real batch order (a worst case for the client, stated in the docs). A user's shuffling
``DataLoader`` discloses no order (``seed=None``): one epoch is still replayed exactly, because the surrogate
slots are exchangeable (index order is the true order up to a permutation of the images); with several epochs
the replay assumes the same order every epoch, an approximation :meth:`replay_fidelity` reports.
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
OPTIMIZERS = ("sgd", "adam", "adamw")
#: torch optimiser options whose replay is not implemented: present and true, a recipe is refused rather than
#: replayed wrongly; present and false (torch's default), they are ignored.
UNSUPPORTED_OPTIONS = ("amsgrad", "maximize")
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8

OptimizerState = dict[str, Any]
"""Functional optimiser state between local steps: ``{"step": int, slot: {parameter name: tensor}}`` with the
slots torch keeps per parameter (``momentum_buffer`` for SGD; ``exp_avg``, ``exp_avg_sq`` for Adam/AdamW)."""


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """Local training of one FL client for one round.

    Args:
        lr: learning rate.
        momentum: SGD momentum (0 = plain SGD, as in the paper).
        weight_decay: L2 weight decay: added to the gradient (SGD, Adam) or decoupled (AdamW: the parameter
            shrinks by ``lr * weight_decay`` per step), as torch does.
        epochs: local epochs per round.
        batch_size: images per local step; ``None`` means the whole local set in one batch.
        shuffle: reshuffle the local images every epoch.
        seed: base seed of gradinv's own batch order (a function of the seed, the round and the epoch);
            ``None`` = the client shuffles with an order it does not disclose (a ``DataLoader(shuffle=True)``).
        loss: ``"cross_entropy"`` (softmax CE on integer labels, the paper's client) or ``"bce"``
            (BCE-with-logits on one-hot labels, what the paper's attack code assumed).
        bn_momentum: momentum of every BatchNorm layer's running statistics.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (``torch.optim.SGD`` / ``Adam`` / ``AdamW``).
        dampening: SGD dampening of the momentum buffer.
        nesterov: SGD Nesterov momentum (needs momentum > 0 and dampening 0, as torch requires).
        betas: Adam/AdamW running-average coefficients.
        eps: Adam/AdamW denominator term.
        drop_last: drop each epoch's last partial batch (``DataLoader(drop_last=True)``): fewer steps, and the
            dropped images are not seen in that epoch.
        fresh_optimizer: the client builds its optimiser anew every round. ``False`` (its momentum / Adam state
            carries over from earlier rounds) cannot be replayed exactly: the replay starts from a fresh state.
    """

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int | None = None
    shuffle: bool = True
    seed: int | None = 0
    loss: str = "cross_entropy"
    bn_momentum: float = 0.1
    optimizer: str = "sgd"
    dampening: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = DEFAULT_BETAS
    eps: float = DEFAULT_EPS
    drop_last: bool = False
    fresh_optimizer: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # what a JSON round trip gives back
            object.__setattr__(self, "betas", tuple(self.betas))
        problems = []
        if not (_is_number(self.lr) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr!r}")
        if not (_is_number(self.momentum) and 0 <= self.momentum < 1):
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (_is_int(self.epochs) and self.epochs >= 1):
            problems.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.batch_size is not None and not (_is_int(self.batch_size) and self.batch_size >= 1):
            problems.append(f"batch_size must be an integer >= 1 or None, got {self.batch_size!r}")
        if self.seed is not None and not _is_int(self.seed):
            problems.append(f"seed must be an integer or None (order not disclosed), got {self.seed!r}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (_is_number(self.bn_momentum) and 0 < self.bn_momentum <= 1):
            problems.append(f"bn_momentum must be in (0, 1], got {self.bn_momentum!r}")
        for name in ("shuffle", "nesterov", "drop_last", "fresh_optimizer"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS} (others cannot be replayed), "
                            f"got {self.optimizer!r}")
        else:
            problems.extend(self._optimizer_problems())
        if problems:
            raise AttackInputError("invalid training recipe: " + "; ".join(problems))

    def _optimizer_problems(self) -> list[str]:
        problems = []
        if not (_is_number(self.dampening) and 0 <= self.dampening <= 1):
            problems.append(f"dampening must be in [0, 1], got {self.dampening!r}")
        betas_ok = (isinstance(self.betas, tuple) and len(self.betas) == 2
                    and all(_is_number(beta) and 0 <= beta < 1 for beta in self.betas))
        if not betas_ok:
            problems.append(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not (_is_number(self.eps) and self.eps > 0):
            problems.append(f"eps must be a positive number (0 divides by zero where a gradient is 0), "
                            f"got {self.eps!r}")
        if self.optimizer == "sgd":
            if self.nesterov and not (_is_number(self.momentum) and self.momentum > 0 and self.dampening == 0):
                problems.append("nesterov needs momentum > 0 and dampening 0 (torch.optim.SGD's rule), got "
                                f"momentum={self.momentum!r}, dampening={self.dampening!r}")
            if self.betas != DEFAULT_BETAS or self.eps != DEFAULT_EPS:
                problems.append(f"betas/eps apply to Adam/AdamW only, got betas={self.betas!r}, eps={self.eps!r} "
                                "with optimizer 'sgd'")
        else:
            for name in ("momentum", "dampening", "nesterov"):
                if getattr(self, name):
                    problems.append(f"{name}={getattr(self, name)!r} applies to optimizer 'sgd' only "
                                    f"({self.optimizer}'s momentum is betas[0])")
        return problems

    # --- what the recipe implies -------------------------------------------------------------------------
    @property
    def order_known(self) -> bool:
        """Whether the server knows each epoch's batch order (no shuffling, or gradinv's disclosed seed)."""
        return not self.shuffle or self.seed is not None

    @property
    def has_optimizer_state(self) -> bool:
        """Whether a step depends on earlier steps' state (SGD momentum, Adam's moments and step count)."""
        return self.optimizer != "sgd" or self.momentum > 0

    def effective_batch_size(self, num_images: int) -> int:
        """Images per local step (the batch is capped at the local set size)."""
        return min(self.batch_size or num_images, num_images)

    def steps_per_epoch(self, num_images: int) -> int:
        """Batches per epoch, as ``len(DataLoader)``: ``drop_last`` drops the last partial one."""
        if self.drop_last:
            return num_images // (self.batch_size or num_images)
        return math.ceil(num_images / self.effective_batch_size(num_images))

    def images_per_epoch(self, num_images: int) -> int:
        """Images one epoch trains on (fewer than ``num_images`` when ``drop_last`` drops a partial batch)."""
        if self.drop_last:
            return self.steps_per_epoch(num_images) * (self.batch_size or num_images)
        return num_images

    def num_steps(self, num_images: int) -> int:
        """Local optimiser steps (= train-mode forwards = BN ``num_batches_tracked`` increments) in one round."""
        return self.epochs * self.steps_per_epoch(num_images)

    def replay_approximations(self, num_images: int) -> list[str]:
        """Why replaying this recipe for ``num_images`` images is not exact (empty: exact up to a permutation)."""
        reasons = []
        if not self.fresh_optimizer and self.has_optimizer_state:
            reasons.append(f"the client's {self.optimizer} state carries over from earlier rounds; "
                           "the replay starts it fresh")
        one_batch_of_all = self.steps_per_epoch(num_images) == 1 and self.images_per_epoch(num_images) == num_images
        if not self.order_known and self.epochs > 1 and not one_batch_of_all:
            reasons.append("the batch order is not disclosed and there are several epochs; "
                           "the replay uses the same order every epoch")
        return reasons

    def replay_fidelity(self, num_images: int) -> str:
        """``"exact"`` (the replay reproduces the update, up to a permutation of the images) or ``"approximate"``."""
        return "approximate" if self.replay_approximations(num_images) else "exact"

    def batches(self, num_images: int, round_num: int = 0,
                generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The index batches of every local step, in order, for this round.

        A disclosed order is a pure function of (seed, round, epoch), so the client and the replay agree. With an
        undisclosed order (``seed=None``) the client's own training passes ``generator`` and draws a private
        permutation every epoch, like ``DataLoader(shuffle=True)``; the replay passes none and uses index order,
        every epoch (exact for one epoch: the surrogate slots are exchangeable).
        """
        if num_images < 1:
            raise AttackInputError(f"a client needs at least one image, got num_images={num_images}")
        if self.steps_per_epoch(num_images) == 0:
            raise AttackInputError(f"drop_last with batch_size={self.batch_size} > {num_images} image(s): the client "
                                   "takes no local step, so there is no update to replay")
        batch_size = self.effective_batch_size(num_images)
        seen = self.images_per_epoch(num_images)
        batches = []
        for epoch in range(self.epochs):
            if self.shuffle and self.seed is not None:
                order_generator = torch.Generator().manual_seed(_order_seed(self.seed, round_num, epoch))
                order = torch.randperm(num_images, generator=order_generator)
            elif self.shuffle and generator is not None:
                order = torch.randperm(num_images, generator=generator)
            else:
                order = torch.arange(num_images)
            batches.extend(order[start : start + batch_size] for start in range(0, seen, batch_size))
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

    def optimizer_step(
        self,
        params: Mapping[str, torch.Tensor],
        grads: Sequence[torch.Tensor],
        state: OptimizerState | None,
    ) -> tuple[dict[str, torch.Tensor], OptimizerState]:
        """One out-of-place, differentiable step of the recipe's torch optimiser; ``state=None`` is a fresh one.

        Same operations in the same order as torch's single-tensor implementation, so the values match
        ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` bit for bit on the CPU. Returns the new parameters and state.
        """
        step = 1 if state is None else state["step"] + 1
        if self.optimizer == "sgd":
            return self._sgd_step(params, grads, state, step)
        return self._adam_step(params, grads, state, step)

    def _sgd_step(self, params: Mapping[str, torch.Tensor], grads: Sequence[torch.Tensor],
                  state: OptimizerState | None, step: int) -> tuple[dict[str, torch.Tensor], OptimizerState]:
        previous = {} if state is None else state["momentum_buffer"]
        new_params, buffers = {}, {}
        for (name, param), grad in zip(params.items(), grads):
            if self.weight_decay:
                grad = _add_scaled(grad, self.weight_decay, param)
            if self.momentum:
                buffer = previous.get(name)
                # torch starts the buffer at the first gradient, undampened
                buffer = grad if buffer is None else _add_scaled(buffer.mul(self.momentum), 1 - self.dampening, grad)
                buffers[name] = buffer
                grad = _add_scaled(grad, self.momentum, buffer) if self.nesterov else buffer
            new_params[name] = _add_scaled(param, -self.lr, grad)
        return new_params, {"step": step, "momentum_buffer": buffers}

    def _adam_step(self, params: Mapping[str, torch.Tensor], grads: Sequence[torch.Tensor],
                   state: OptimizerState | None, step: int) -> tuple[dict[str, torch.Tensor], OptimizerState]:
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        new_params, exp_avgs, exp_avg_sqs = {}, {}, {}
        for (name, param), grad in zip(params.items(), grads):
            if self.weight_decay:
                if self.optimizer == "adamw":
                    param = param.mul(1 - self.lr * self.weight_decay)
                else:
                    grad = _add_scaled(grad, self.weight_decay, param)
            exp_avg = torch.zeros_like(param) if state is None else state["exp_avg"][name]
            exp_avg_sq = torch.zeros_like(param) if state is None else state["exp_avg_sq"][name]
            exp_avg = exp_avg.lerp(grad, 1 - beta1)
            exp_avg_sq = _add_scaled(exp_avg_sq.mul(beta2), 1 - beta2, product=(grad, grad))
            denom = (_sqrt_with_zero_slope_at_zero(exp_avg_sq) / bias_correction2_sqrt).add(self.eps)
            new_params[name] = _add_scaled(param, -step_size, quotient=(exp_avg, denom))
            exp_avgs[name], exp_avg_sqs[name] = exp_avg, exp_avg_sq
        return new_params, {"step": step, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}

    # --- the client's side ---------------------------------------------------------------------------------
    def configure_batchnorm(self, model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = self.bn_momentum

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The torch optimiser this recipe describes, over ``model``'s parameters."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum, dampening=self.dampening,
                                   weight_decay=self.weight_decay, nesterov=self.nesterov)
        optimizer_class = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return optimizer_class(model.parameters(), lr=self.lr, betas=self.betas, eps=self.eps,
                               weight_decay=self.weight_decay)

    def train(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, round_num: int = 0,
              optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None) -> dict:
        """Train ``model`` in place for one round on the client's images; returns ``{"steps", "loss"}``.

        BatchNorm runs in train mode, so its running statistics are updated and travel in the diff.
        ``optimizer``: the client's own, kept across rounds (only with ``fresh_optimizer=False``); ``None``
        builds a fresh one. ``generator`` draws an undisclosed order (``seed=None``); default torch's global RNG.
        """
        if optimizer is None:
            optimizer = self.make_optimizer(model)
        elif self.fresh_optimizer and optimizer.state:
            raise AttackInputError("this optimizer carries state from earlier steps but the recipe says "
                                   "fresh_optimizer=True; pass fresh_optimizer=False or a new optimizer")
        self.configure_batchnorm(model)
        model.train()
        losses = []
        for batch in self.batches(images.shape[0], round_num,
                                  generator if generator is not None else torch.default_generator):
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss_value(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return {"steps": len(losses), "loss": sum(losses) / len(losses)}

    # --- transport -------------------------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        """JSON-serialisable plain data (dict, list, str, float, int, bool, None), sent in the update's meta."""
        values = dataclasses.asdict(self)
        values["betas"] = list(self.betas)
        return values

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> TrainingRecipe:
        """Rebuild a recipe from :meth:`to_meta` output; unknown or missing keys are reported.

        Keys missing from an older client's meta take their defaults (SGD, fresh optimiser, no ``drop_last``).
        """
        if not isinstance(meta, Mapping):
            raise AttackInputError(f"training recipe must be a mapping, got {type(meta).__name__}")
        values = dict(meta)
        for option in UNSUPPORTED_OPTIONS:
            if values.pop(option, False):
                raise AttackInputError(f"training recipe: {option}=True is not supported (gradinv cannot replay it); "
                                       f"train without {option}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise AttackInputError(f"training recipe has unknown keys {unknown}; known keys: {sorted(fields)}")
        for key in ("epochs", "seed", "batch_size"):
            if isinstance(values.get(key), float) and values[key].is_integer():
                values[key] = int(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise AttackInputError(f"invalid training recipe: {exc}") from exc


def _add_scaled(base: torch.Tensor, alpha: float, tensor: torch.Tensor | None = None, *,
                product: tuple[torch.Tensor, torch.Tensor] | None = None,
                quotient: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``base + alpha * term``, out of place; the term is ``tensor``, or ``a * b`` (``product``) or ``a / b``.

    Eagerly it is torch's own fused op (``add(alpha=)``, ``addcmul``, ``addcdiv``), so the replay matches the
    optimisers bit for bit: Adam amplifies the last bit of a parameter whose gradient is rounding noise (measured:
    the plain form puts a float32 AdamW replay 2e-2 off). Under ``torch.compile`` it is the plain form: inductor
    miscompiles ``add(alpha=)`` inside the replay's nested ``torch.func.grad`` (measured: the attack gradient 1.3
    relative off, ``aot_eager`` exact), and the compiled step is checked against the eager one anyway.
    """
    if product is not None:
        if torch.compiler.is_compiling():
            return base + alpha * product[0] * product[1]
        return base.addcmul(*product, value=alpha)
    if quotient is not None:
        if torch.compiler.is_compiling():
            return base + alpha * (quotient[0] / quotient[1])
        return base.addcdiv(*quotient, value=alpha)
    if torch.compiler.is_compiling():
        return base + alpha * tensor
    return base.add(tensor, alpha=alpha)


def _sqrt_with_zero_slope_at_zero(values: torch.Tensor) -> torch.Tensor:
    """``sqrt`` of non-negative ``values`` (same forward values) whose derivative at 0 is 0 instead of inf.

    Adam's second moment is exactly 0 where a parameter's gradient is 0; ``sqrt``'s infinite slope there times
    the zero slope of the moment gives NaN in the attack's gradient. The inner ``where`` keeps the masked branch
    finite, so no NaN can flow back through it.
    """
    positive = values > 0
    return torch.where(positive, torch.where(positive, values, torch.ones_like(values)).sqrt(),
                       torch.zeros_like(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _order_seed(seed: int, round_num: int, epoch: int) -> int:
    # A fixed mixing so that neighbouring (round, epoch) pairs get unrelated permutations.
    return (seed * 1_000_003 + round_num * 10_007 + epoch * 101) % (2**63 - 1)
