"""The inversion loop: optimise surrogate images (and labels) until the replayed update matches the real one."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gradinv.attack.compiled import AttackStep, make_attack_step
from gradinv.attack.exchange import search_exchanges
from gradinv.attack.inputs import AttackInputs, validate_attack_inputs
from gradinv.attack.labels import estimate_label_counts, labels_from_counts
from gradinv.attack.objective import InversionObjective, label_targets
from gradinv.attack.parametrisation import ColourCoordinates, coarsen
from gradinv.attack.presets import AttackConfig
from gradinv.attack.schedule import learning_rate
from gradinv.errors import AttackInputError, GradinvError
from gradinv.recipe import TrainingRecipe

logger = logging.getLogger(__name__)

_STOP_HOOK: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("gradinv_stop", default=None)


class AttackStopped(GradinvError):
    """An attack was stopped from outside (:func:`stop_attacks_when`) before it finished: it has no result."""


@contextlib.contextmanager
def stop_attacks_when(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Attacks run in this block (by this thread) call ``should_stop`` before each optimisation step and raise
    :class:`AttackStopped` once it returns True.

    For callers that reach :func:`invert` through other layers (an auditor, a queue's worker) and must end an attack
    at once, e.g. at a run's end: unlike the time budget, which scores the best iterate so far, a stopped attack
    returns nothing, so its update can be attacked again in full later.
    """
    token = _STOP_HOOK.set(should_stop)
    try:
        yield
    finally:
        _STOP_HOOK.reset(token)


def stop_requested() -> bool:
    """Whether the enclosing :func:`stop_attacks_when` of this thread asks attacks to stop (False outside one)."""
    should_stop = _STOP_HOOK.get()
    return should_stop is not None and bool(should_stop())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclasses.dataclass
class InversionResult:
    """What the attacker reconstructed, and how well its own objective was met (no ground truth here)."""

    images: torch.Tensor
    """(N, C, H, W) reconstructions in the model's input space ([0, 1]), the best iterate by attacker loss."""
    label_probabilities: torch.Tensor
    """(N, num_classes) soft labels of the best iterate."""
    recovered_labels: list[int]
    label_counts_estimate: list[int] | None
    """Analytic label counts from the last layer's bias update (None where not identifiable)."""
    update_distance: float
    """Cosine distance between the replayed and the observed parameter update (0 = same direction)."""
    bn_residual: float | None
    """Relative error of the replayed BN running statistics: |r_hat - r| / |r - r_global| (None without BN)."""
    loss: float
    """The attacker's loss of the returned iterate, with the BN weight of a run's last iteration (as are the
    ``history`` losses, so that iterates of every run compare at one weight)."""
    iterations: int
    seconds: float
    stopped: str
    """``completed``, ``time_budget`` or ``non_finite`` (the loss became NaN/Inf; the best finite iterate is kept)."""
    runs: int
    """Independent runs made (see ``AttackConfig.restarts``)."""
    best_run: int
    """The run (0-based) whose iterate had the lowest attacker loss and is returned."""
    history: list[dict[str, float]]
    exchanges: list[str] = dataclasses.field(default_factory=list)
    """Region exchanges kept by the exchange search (see :class:`gradinv.attack.presets.ExchangeSearch`), in order."""
    projected_seconds: float | None = None
    """The whole attack's wall time as projected from its first iterations' speed (the exchange search not
    counted); None for an attack shorter than the measuring window."""
    priors: torch.Tensor | None = None
    """(N, C, H, W) the attacker's prior for each returned slot (its recovered label's image when the prior is per
    class): what RDLV compares a slot with. None without a prior."""

    def diagnostics(self) -> dict[str, Any]:
        return {
            "update_distance": self.update_distance,
            "bn_residual": self.bn_residual,
            "attack_loss": self.loss,
            "iterations": self.iterations,
            "seconds": self.seconds,
            "stopped": self.stopped,
            "runs": self.runs,
            "best_run": self.best_run,
            "recovered_labels": self.recovered_labels,
            "label_counts_estimate": self.label_counts_estimate,
            "exchanges": self.exchanges,
            "projected_seconds": self.projected_seconds,
        }


class _TimeProjection:
    """Projects an attack's wall time from the speed of its first iterations, for any model on any device, and
    warns once when the projection exceeds the attack's time budget (the attack then stops early)."""

    # Iterations before the window are left out: they include a compile and cold caches.
    WINDOW = (5, 25)

    def __init__(self, started: float, planned_iterations: int):
        self.started, self.planned_iterations = started, planned_iterations
        self.window_start: float | None = None
        self.seconds: float | None = None

    def observe(self, iteration: int, budget_s: float | None, description: str) -> None:
        first, last = self.WINDOW
        if iteration == first:
            self.window_start = time.monotonic()
        if iteration != last or self.window_start is None:
            return
        now = time.monotonic()
        per_iteration = (now - self.window_start) / (last - first)
        self.seconds = now - self.started + per_iteration * (self.planned_iterations - last - 1)
        if budget_s is not None and self.seconds > budget_s:
            logger.warning(
                "%s: this attack needs about %.0f s (%.3g s per iteration x %d iterations) but its time budget is "
                "%.0f s: it will stop early and score its best iterate so far. For the whole attack set its time "
                "budget (time_budget_s; --time-budget of gradinv attack) to at least %.0f s, use fewer iterations, "
                "or run it on a GPU.",
                description, self.seconds, per_iteration, self.planned_iterations, budget_s, 1.1 * self.seconds,
            )


def invert(
    model: nn.Module,
    inputs: AttackInputs,
    config: AttackConfig,
    prior: torch.Tensor | None = None,
    num_classes: int = 2,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    description: str = "inverting",
    input_shape: tuple[int, int, int] | None = None,
) -> InversionResult:
    """Reconstruct a client's images from its update.

    Args:
        model: an instance of the architecture the client trains (its weights are not used; the
            global state in ``inputs`` is).
        inputs: validated attacker knowledge (:func:`gradinv.attack.inputs.validate_attack_inputs`).
        config: the attack's settings (a preset, see :mod:`gradinv.attack.presets`).
        prior: (H, W) or (C, H, W) image in [0, 1] that every slot starts from (``init="prior"``), or one
            image per class, (num_classes, C, H, W): each slot then starts from the image of its recovered label
            (the class mean of public images is a prior the attacker honestly has); ``None`` falls back to a flat
            mid-grey image.
        num_classes: output classes of the model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        seed: seeds the initial noise, random labels and the Langevin noise.
        progress: show a tqdm progress bar.
        input_shape: (C, H, W) of one image the client's model is fed; ``None`` takes ``model.input_shape``
            (which :func:`gradinv.models.build_model` records).
    """
    device = resolve_device(device)
    started = time.monotonic()
    input_shape = _input_shape(model, input_shape)
    _check_prior(prior, num_classes)
    model = model.to(device)
    objective = InversionObjective(model, inputs, config, device)
    total_iterations = config.total_iterations(inputs.num_images)
    label_counts = None
    if config.labels != "soft":
        first_images = _initial_images(
            config.init_of_run(0), config.init_noise, prior, None, inputs.num_images, input_shape,
            _run_generator(seed, 0),
        ).to(device)
        with torch.no_grad():
            mean_probabilities = _mean_prediction(objective, first_images, inputs.recipe)
        label_counts = estimate_label_counts(model, inputs, num_classes, mean_probabilities)
    shares_label = label_counts is not None and max(label_counts) >= 2
    searchable = config.exchange.runs_on(inputs.num_images)
    # The exchange search's clients (slots share a label) draw more runs to search from; see ExchangeSearch.restarts.
    runs = config.runs(inputs.num_images, searched=searchable and shares_label)
    # One compile serves every run (same shapes), so the whole attack's length decides whether it pays.
    step = make_attack_step(
        objective,
        config,
        total_iterations * runs,
        lambda logits: label_targets(logits, inputs.recipe),
        differentiate_labels=config.labels != "analytic_fixed",
    )
    planned_iterations = runs * total_iterations + config.polish_iterations(inputs.num_images)
    attack = _Attack(
        inputs=inputs, config=config, objective=objective, step=step, checked_step=_stoppable(step, description),
        colour=ColourCoordinates(input_shape[0], config.chroma_detail, device), device=device, prior=prior,
        input_shape=input_shape, num_classes=num_classes, seed=seed, label_counts=label_counts,
        start_labels=None if label_counts is None else labels_from_counts(label_counts), shares_label=shares_label,
        searchable=searchable, runs=runs, progress=progress, description=description, started=started,
        projection=_TimeProjection(started, planned_iterations),
    )
    run_bests = _optimise_runs(attack)
    best, exchanges = _refine(attack, run_bests)
    result = _score(attack, best, exchanges)
    logger.info(
        "%s: %d images, %d iterations in %.1f s (%s, %s step), update cosine distance %.4g, BN residual %s",
        description, inputs.num_images, result.iterations, result.seconds, result.stopped, step.mode,
        result.update_distance, "n/a" if result.bn_residual is None else f"{result.bn_residual:.4g}",
    )
    return result


@dataclasses.dataclass
class _Attack:
    """One inversion as its stages (runs -> refine -> score) share it: what :func:`invert` prepared, then the running
    tallies (``history``, ``iterations``, ``stopped``) that each stage adds to."""

    inputs: AttackInputs
    config: AttackConfig
    objective: InversionObjective
    step: AttackStep
    checked_step: Callable[..., Any]
    """``step``, stopping the attack once :func:`stop_requested` says so (see :func:`_stoppable`)."""
    colour: ColourCoordinates
    device: torch.device
    prior: torch.Tensor | None
    input_shape: tuple[int, int, int]
    num_classes: int
    seed: int
    label_counts: list[int] | None
    start_labels: torch.Tensor | None
    shares_label: bool
    """Whether the analytic label counts put two slots in one class (coarse-to-fine runs, the exchange search)."""
    searchable: bool
    """Whether the exchange search is on for this client's number of images (:meth:`ExchangeSearch.runs_on`)."""
    runs: int
    progress: bool
    description: str
    started: float
    projection: _TimeProjection
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    iterations: int = 0
    stopped: str = "completed"

    @property
    def total_iterations(self) -> int:
        """Iterations of one run."""
        return self.config.total_iterations(self.inputs.num_images)

    @property
    def final_bn_weight(self) -> float:
        """The BN weight of a run's last iteration, at which every iterate's loss is compared."""
        return self.config.bn_weight(self.total_iterations - 1, self.total_iterations)

    def out_of_time(self) -> bool:
        return self.config.time_budget_s is not None and time.monotonic() - self.started > self.config.time_budget_s


@dataclasses.dataclass
class _RunBest:
    """The lowest-loss iterate of one run (the loss at the final BN weight, so that iterates of all runs compare)."""

    run: int
    loss: float
    images: torch.Tensor
    label_logits: torch.Tensor


def _optimise_runs(attack: _Attack) -> list[_RunBest]:
    """The independent runs (restarts), each from its own seeded start; their best iterates, lowest loss first."""
    run_bests = []
    for run in range(attack.runs):
        run_best = _run(attack, run)
        if run_best is not None:
            run_bests.append(run_best)
        if attack.stopped != "completed":
            break
    if not run_bests:
        raise AttackInputError(
            "the attack objective is NaN or Inf at its starting point; the update cannot be inverted"
        )
    return sorted(run_bests, key=lambda run_best: run_best.loss)


def _run(attack: _Attack, run: int) -> _RunBest | None:
    """One run: Adam with Langevin noise on the images (and labels), coarse-to-fine when slots share a label. Its
    best iterate, or None when its first loss was already NaN/Inf."""
    config, total = attack.config, attack.total_iterations
    generator = _run_generator(attack.seed, run)
    images, coordinates, label_logits = _start_of_run(attack, run, generator)
    variables = [coordinates] + ([label_logits] if label_logits.requires_grad else [])
    optimizer = torch.optim.Adam(variables, lr=config.lr, betas=config.betas, eps=1e-8)
    best = None
    description = f"{attack.description} ({run + 1}/{attack.runs})" if attack.runs > 1 else attack.description
    bar = tqdm(range(total), desc=description, disable=not attack.progress, leave=False, mininterval=1.0)
    for iteration in bar:
        current_lr = learning_rate(iteration, total, config.lr, config.warmup)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        bn_weight = config.bn_weight(iteration, total)
        factor = config.detail_factor(iteration, total) if attack.shares_label else 1
        if factor > 1:
            with torch.no_grad():
                images.copy_(coarsen(images, factor))
                attack.colour.update_coordinates(images, coordinates)
        loss, terms, gradients = attack.checked_step(images, label_logits, bn_weight)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            attack.stopped = "non_finite"  # keep the best finite iterate rather than optimise NaNs
            break
        # Iterates (of this run and of the others) are compared at one BN weight, the final one: with a BN weight
        # that rises during the run, raw losses of early iterates would look better than they are.
        if "bn" in terms:
            loss_value += (attack.final_bn_weight - bn_weight) * float(terms["bn"])
        if best is None or loss_value < best.loss:
            best = _RunBest(run, loss_value, images.detach().clone(), label_logits.detach().clone())
        _take_step(attack, optimizer, variables, gradients, images, generator, current_lr)
        attack.iterations += 1
        if run == 0:
            attack.projection.observe(iteration, config.time_budget_s, attack.description)
        if iteration % 50 == 0 or iteration == total - 1:
            record = {"run": run, "iteration": iteration, "loss": loss_value,
                      **{k: float(v.detach()) for k, v in terms.items()}}
            attack.history.append(record)
            bar.set_postfix(loss=f"{loss_value:.4f}", cos=f"{record['update_cosine']:.4f}")
        if attack.out_of_time():
            attack.stopped = "time_budget"
            break
    bar.close()
    return best


def _start_of_run(
    attack: _Attack, run: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A run's start: its images, the colour coordinates Adam steps in (see ``AttackConfig.chroma_detail``; the
    objective sees the pixels) and its label logits (optimised unless ``analytic_fixed``)."""
    config = attack.config
    images = (
        _initial_images(
            config.init_of_run(run), config.init_noise, attack.prior, attack.start_labels, attack.inputs.num_images,
            attack.input_shape, generator,
        )
        .to(attack.device)
        .requires_grad_(True)
    )
    coordinates = attack.colour.optimised(images)
    if attack.label_counts is None:
        label_logits = torch.rand(attack.inputs.num_images, attack.num_classes, generator=generator)
    else:
        label_logits = 4.0 * F.one_hot(attack.start_labels, attack.num_classes).float()
    return images, coordinates, label_logits.to(attack.device).requires_grad_(config.labels != "analytic_fixed")


def _take_step(
    attack: _Attack,
    optimizer: torch.optim.Optimizer,
    variables: list[torch.Tensor],
    gradients: tuple[torch.Tensor, ...],
    images: torch.Tensor,
    generator: torch.Generator,
    current_lr: float,
) -> None:
    """One Adam step on the colour coordinates (and labels), then the Langevin noise; ``images`` follow."""
    coordinates = variables[0]
    coordinates.grad = attack.colour.pull_back(gradients[0])
    for variable, gradient in zip(variables[1:], gradients[1:]):
        variable.grad = gradient
    optimizer.step()
    with torch.no_grad():
        if attack.config.energy:
            coordinates.add_(
                torch.randn(images.shape, generator=generator).to(attack.device),
                alpha=attack.config.energy * current_lr,
            )
        attack.colour.update_pixels(coordinates, images, clamp=attack.config.clamp)


def _refine(attack: _Attack, run_bests: list[_RunBest]) -> tuple[_RunBest, list[str]]:
    """The noise-free polish of the best run's iterate and, where slots share a label, the region-exchange search
    from the best runs' iterates; the lowest loss wins. Returns it and the exchanges it kept."""
    config = attack.config
    best, exchanges = run_bests[0], []
    # Which slots share a label: the analytic counts when they exist (the optimised soft labels can drift).
    slot_labels = attack.start_labels if attack.start_labels is not None else best.label_logits.argmax(dim=1)
    pairs = _same_label_pairs(slot_labels.tolist()) if attack.searchable else []
    initial_polish = config.polish_iterations(attack.inputs.num_images)
    if attack.stopped != "completed" or not (pairs or initial_polish):
        return best, exchanges
    screen_iterations, polish_iterations = config.exchange.iterations(config.iterations)
    deadline = None if config.time_budget_s is None else attack.started + config.time_budget_s
    # The search is greedy and its end depends on where it starts; from several runs' patchworks, the
    # attacker's loss picks the end that is nearest the truth.
    for start in run_bests[: config.exchange.starts if pairs else 1]:
        labels_held = start.label_logits.clone().requires_grad_(attack.step.differentiate_labels)
        outcome = search_exchanges(
            attack.checked_step,
            start.images,
            labels_held,
            pairs,
            rounds=config.exchange.rounds,
            screen_iterations=screen_iterations,
            polish_iterations=polish_iterations,
            lr=config.exchange.lr,
            betas=config.betas,
            bn_weight=attack.final_bn_weight,
            beam_width=config.exchange.beam,
            patience=config.exchange.patience,
            initial_polish_iterations=initial_polish,
            deadline=deadline,
            progress=attack.progress,
        )
        attack.iterations += outcome.iterations
        attack.stopped = outcome.stopped
        if outcome.loss < best.loss:
            best, exchanges = dataclasses.replace(start, loss=outcome.loss, images=outcome.images), outcome.accepted
        if attack.stopped != "completed":
            break
    return best, exchanges


def _score(attack: _Attack, best: _RunBest, exchanges: list[str]) -> InversionResult:
    """Score the best iterate once more, without the optimiser in the loop."""
    inputs = attack.inputs
    final_targets = label_targets(best.label_logits, inputs.recipe)
    images_for_eval = best.images.clone().requires_grad_(True)
    loss, terms, replayed = attack.objective(images_for_eval, final_targets, attack.final_bn_weight)
    probabilities = final_targets.detach().cpu()
    recovered_labels = probabilities.argmax(dim=1)
    priors = None
    if attack.prior is not None:
        priors = slot_priors(attack.prior, recovered_labels, inputs.num_images, attack.input_shape)
    return InversionResult(
        images=best.images.detach().cpu().clamp(0, 1),
        label_probabilities=probabilities,
        recovered_labels=recovered_labels.tolist(),
        label_counts_estimate=attack.label_counts,
        update_distance=float(terms["update_cosine"].detach()),
        bn_residual=attack.objective.bn_residual(replayed),
        loss=float(loss.detach()),
        iterations=attack.iterations,
        seconds=time.monotonic() - attack.started,
        stopped=attack.stopped,
        runs=attack.runs,
        best_run=best.run,
        history=attack.history,
        exchanges=exchanges,
        projected_seconds=attack.projection.seconds,
        priors=priors,
    )


def attack_update(
    model: nn.Module,
    global_state: Mapping[str, Any],
    diff: Mapping[str, Any],
    recipe: TrainingRecipe,
    num_images: int,
    config: AttackConfig,
    prior: torch.Tensor | None = None,
    num_classes: int = 2,
    round_num: int = 0,
    **invert_kwargs: Any,
) -> InversionResult:
    """Validate what a server holds (global state, the client's state-dict diff, recipe, N) and invert it."""
    inputs = validate_attack_inputs(model, global_state, diff, recipe, num_images, round_num)
    return invert(model, inputs, config, prior=prior, num_classes=num_classes, **invert_kwargs)


def _stoppable(step: Callable[..., Any], description: str) -> Callable[..., Any]:
    """``step``, raising :class:`AttackStopped` instead of running once :func:`stop_requested` says so."""

    def checked(*args: Any) -> Any:
        if stop_requested():
            raise AttackStopped(f"{description}: stopped before it finished (stop_attacks_when)")
        return step(*args)

    return checked


def _same_label_pairs(labels: list[int]) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]]


def _run_generator(seed: int, run: int) -> torch.Generator:
    """The generator of one run's initial images, random labels and Langevin noise."""
    return torch.Generator(device="cpu").manual_seed(seed * 7919 + run)


def _input_shape(model: nn.Module, input_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise AttackInputError(
            f"the shape of the images {type(model).__name__} is fed is unknown; pass input_shape=(C, H, W)"
        )
    if len(shape) != 3 or not all(isinstance(size, int) and size >= 1 for size in shape):
        raise AttackInputError(f"input_shape must be three positive integers (C, H, W), got {shape!r}")
    return tuple(shape)


def _check_prior(prior: torch.Tensor | None, num_classes: int) -> None:
    if prior is None:
        return
    if prior.dim() not in (2, 3, 4):
        raise AttackInputError(
            f"prior must be one image, (H, W) or (C, H, W), or one image per class, (K, C, H, W); "
            f"got shape {tuple(prior.shape)}"
        )
    if prior.dim() == 4 and prior.shape[0] != num_classes:
        raise AttackInputError(
            f"the prior has an image for each of {prior.shape[0]} classes but the model has {num_classes} classes; "
            "give one image per class of the model, or a single prior image"
        )


def _initial_images(
    init: str,
    init_noise: float,
    prior: torch.Tensor | None,
    slot_labels: torch.Tensor | None,
    count: int,
    shape: tuple[int, int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Start images: the prior (each slot its label's image when there is one per class) plus seeded noise."""
    if init == "random":
        return torch.rand((count, *shape), generator=generator)
    if prior is None:
        base = torch.full((count, *shape), 0.5)
    else:
        base = slot_priors(prior, slot_labels, count, shape)
    noise = init_noise * torch.randn((count, *shape), generator=generator)
    return (base + noise).clamp(0, 1)


def slot_priors(
    prior: torch.Tensor, slot_labels: torch.Tensor | None, count: int, shape: tuple[int, int, int]
) -> torch.Tensor:
    """(count, C, H, W): the prior image of each slot, resized to ``shape``.

    A per-class prior (K, C, H, W) gives each slot the image of its label; without labels every slot gets the
    mean of the class images (the attacker's prior before it knows the labels).
    """
    prior = torch.as_tensor(prior, dtype=torch.float32)
    if prior.dim() < 4:
        return _resize_prior(prior, shape).unsqueeze(0).expand(count, -1, -1, -1).clone()
    classes = torch.stack([_resize_prior(image, shape) for image in prior])
    if slot_labels is None:
        return classes.mean(dim=0, keepdim=True).expand(count, -1, -1, -1).clone()
    return classes[torch.as_tensor(slot_labels, dtype=torch.long)].clone()


def _resize_prior(prior: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    if prior.dim() == 2:
        prior = prior.unsqueeze(0)
    if tuple(prior.shape[-2:]) != shape[-2:]:
        prior = F.interpolate(prior.unsqueeze(0), size=shape[-2:], mode="area").squeeze(0)
    return prior.expand(shape[0], -1, -1).clone()


def _mean_prediction(objective: InversionObjective, images: torch.Tensor, recipe: TrainingRecipe) -> torch.Tensor:
    logits = torch.func.functional_call(objective.replay.model, objective.initial_params, (images,))
    probabilities = torch.sigmoid(logits) if recipe.loss == "bce" else torch.softmax(logits, dim=1)
    return probabilities.mean(dim=0)
