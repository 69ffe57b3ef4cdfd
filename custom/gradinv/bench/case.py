"""The attack-speed benchmark harness: time one attack iteration of one client configuration, and what it compares with.

Run by ``gradinv bench-case`` (one case) and ``bench/attack_speed.py`` (the default cases, with the targets).

Four things are timed on the same client (model, resolution, N images, batch size, epochs), interleaved in
one process (the order rotates every repetition; ``warmup`` untimed repetitions first, then the median of
``reps`` samples, each the mean over ``inner`` calls):

* ``eager``: one iteration of gradinv's attack loop exactly as :func:`gradinv.attack.invert` runs it with
  ``compile="off"`` (the default for short attacks):
  :class:`~gradinv.attack.objective.InversionObjective` forward (functional replay of the local steps with
  ``create_graph=True``, exact BN running-stat replay from the replay's own forwards), ``autograd.grad``
  w.r.t. the images and label logits, the Adam step, Langevin noise, clamping and best-iterate bookkeeping.
* ``compiled``: the same iteration with the objective and its gradient as one ``torch.compile``-d graph
  (:mod:`gradinv.attack.compiled`), what :func:`~gradinv.attack.invert` runs for long attacks (``compile="on"``,
  or ``"auto"`` from 5000 iterations). It is compiled before the warm-up, untimed; ``compile_seconds`` reports
  that first call (tens of seconds with a cold inductor cache, seconds warm). :func:`compiled_check` reports
  how far its loss and gradient are from the eager step's (float32; accepted up to ``CHECK_RTOL``).
* ``training``: one local-training pass of the same client, :meth:`TrainingRecipe.train` on the real
  ``nn.Module`` with ``torch.optim.SGD`` (all local steps of one round).
* ``reference``: the *same math* written the way the paper's released attack code structures its loop: every
  iteration deep-copies
  the model and loads the global state, builds a ``torch.optim.SGD`` (its hyper-parameters drive the update),
  swaps the parameters into the module with ``setattr`` for each differentiable local step, and takes the BN
  statistics from a SEPARATE forward of a second model copy with forward hooks registered anew every
  iteration. The update term stays differentiable (unrolled steps, ``create_graph=True``), so both loops
  optimise the same objective; :func:`same_math_check` verifies loss and image gradient agree before timing.

Ratios: ``iteration_over_training_pass`` = compiled / training (the product's path for long attacks; a
compile that fails falls back to eager, as in the product, and ``compile_fallback`` says why);
``iteration_over_training_pass_eager`` = eager / training; ``reference_loop_over_gradinv`` = reference / eager
(same math, same structure), all of the medians; ``*_min`` are the same ratios of the fastest samples (on a CPU shared
with other busy processes the minimum is the less disturbed estimate). ``bench/attack_speed.py`` runs the
default cases and checks the targets.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

METHODS = ("compiled", "eager", "reference", "training")


# --- one case ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CaseSpec:
    model: str = "bn_cnn"
    resolution: int = 64
    num_images: int = 1
    batch_size: int = 1
    epochs: int = 1

    def label(self) -> str:
        return f"{self.model} {self.resolution}px N={self.num_images} B={self.batch_size} E={self.epochs}"


def _validate(case: CaseSpec, reps: int, warmup: int, inner: int, threads: int) -> None:
    from gradinv.errors import GradinvError
    from gradinv.models import MODEL_NAMES

    if case.model not in MODEL_NAMES:
        raise GradinvError(f"unknown model {case.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    for name, value, low in (("resolution", case.resolution, 4), ("num-images", case.num_images, 1),
                             ("batch-size", case.batch_size, 1), ("epochs", case.epochs, 1), ("reps", reps, 1),
                             ("warmup", warmup, 0), ("inner", inner, 1), ("threads", threads, 1)):
        if value < low:
            raise GradinvError(f"--{name} must be at least {low}, got {value}")


class _Setup:
    """A real client's update for the case, and the three timed callables."""

    def __init__(self, case: CaseSpec, device, seed: int):
        from gradinv.attack import get_preset
        from gradinv.attack.compiled import AttackStep
        from gradinv.attack.inputs import validate_attack_inputs
        from gradinv.attack.objective import InversionObjective, label_targets
        from gradinv.errors import GradinvError
        from gradinv.models import build_model
        from gradinv.recipe import TrainingRecipe
        from gradinv.simulation import simulate_client

        self.device = device
        generator = torch.Generator().manual_seed(seed)
        self.images = real_images(case.num_images, case.resolution).to(device)
        self.labels = (torch.arange(case.num_images) % 2).to(device)
        self.recipe = TrainingRecipe(lr=0.01, epochs=case.epochs, batch_size=case.batch_size, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = build_model(case.model, num_classes=2, resolution=case.resolution)
            except ValueError as exc:
                raise GradinvError(f"--resolution {case.resolution} is not valid for {case.model!r}: {exc}") from exc
        self.model = model.to(device)
        update = simulate_client(self.model, self.images, self.labels, self.recipe)
        self.global_state = update.global_state
        self.client = copy.deepcopy(self.model)  # what the timed training passes train, reset before each sample
        self.inputs = validate_attack_inputs(self.model, update.global_state, update.diff, self.recipe,
                                             case.num_images)
        self.config = get_preset("fast")
        self.objective = InversionObjective(self.model, self.inputs, self.config, device)
        self.reference = ReferenceStyleLoss(self.model, self.inputs, self.config, device)

        prior = torch.full(model.input_shape, 0.5)
        init = (prior.unsqueeze(0) + 0.02 * torch.randn(case.num_images, *model.input_shape,
                                                        generator=generator)).clamp(0, 1)
        logits = torch.rand(case.num_images, 2, generator=generator)

        def targets(label_logits):
            return label_targets(label_logits, self.recipe)

        steps = {"compiled": AttackStep(self.objective, targets, differentiate_labels=True, compile=True),
                 "eager": AttackStep(self.objective, targets, differentiate_labels=True, compile=False),
                 "reference": AttackStep(self.reference, targets, differentiate_labels=True, compile=False)}
        self.loops = {method: _AttackLoop(step, self.config, init.to(device), logits.to(device), seed)
                      for method, step in steps.items()}

    def reset_client(self) -> None:
        self.client.load_state_dict(self.global_state)

    def training_pass(self) -> None:
        self.recipe.train(self.client, self.images, self.labels)

    def callables(self) -> dict[str, Callable[[], None]]:
        return {**{method: loop.step for method, loop in self.loops.items()}, "training": self.training_pass}


#: scikit-image's bundled grayscale pictures (no download), cycled when a case needs more images.
SKIMAGE_PICTURES = ("camera", "moon", "coins", "cell", "clock", "shepp_logan_phantom", "text", "page", "grass", "brick")


def real_images(count: int, resolution: int):
    """``count`` real grayscale images (N, 1, R, R) in [0, 1]: scikit-image pictures, centre-cropped and resized
    the way gradinv loads user images."""
    import numpy as np
    from skimage import data

    from gradinv.data.images import centre_square, resize_square

    stack = []
    for index in range(count):
        picture = np.asarray(getattr(data, SKIMAGE_PICTURES[index % len(SKIMAGE_PICTURES)])(), dtype=np.float64)
        picture = (picture - picture.min()) / max(picture.max() - picture.min(), 1e-12)
        if index >= len(SKIMAGE_PICTURES):  # repeats are flipped so that no two client images are equal
            picture = picture[:, ::-1] if (index // len(SKIMAGE_PICTURES)) % 2 else picture[::-1]
        stack.append(resize_square(centre_square(picture.astype(np.float32)), resolution))
    return torch.from_numpy(np.stack(stack)[:, None].copy())


class _AttackLoop:
    """The body of :func:`gradinv.attack.invert`'s loop, with the step (objective + gradient) swappable."""

    def __init__(self, attack_step, config, init, label_logits, seed: int):
        self.attack_step, self.config = attack_step, config
        self.images = init.clone().requires_grad_(True)
        self.label_logits = label_logits.clone().requires_grad_(True)
        self.variables = [self.images, self.label_logits]
        self.optimizer = torch.optim.Adam(self.variables, lr=config.lr, betas=config.betas, eps=1e-8)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.best = math.inf
        self.iteration = 0

    def step(self) -> None:
        from gradinv.attack.schedule import learning_rate

        config = self.config
        lr = learning_rate(self.iteration, 1000, config.lr, config.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, _, gradients = self.attack_step(self.images, self.label_logits)
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError("the attack objective became NaN/Inf during timing")
        if value < self.best:
            self.best = value
            self.best_state = (self.images.detach().clone(), self.label_logits.detach().clone())
        for variable, gradient in zip(self.variables, gradients):
            variable.grad = gradient
        self.optimizer.step()
        with torch.no_grad():
            if config.energy:
                self.images.add_(torch.randn(self.images.shape, generator=self.generator).to(self.images.device),
                                 alpha=config.energy * lr)
            if config.clamp:
                self.images.clamp_(0, 1)
        self.iteration = (self.iteration + 1) % 1000


def _swap_parameters(module, tensors: dict) -> None:
    """Put plain tensors where the module's parameters were (reference-style ``setattr`` swap)."""
    for name, tensor in tensors.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf in owner._parameters:
            delattr(owner, leaf)
        setattr(owner, leaf, tensor)


class ReferenceStyleLoss:
    """gradinv's objective (cosine update matching + exact BN replay + TV/L2 priors), computed the way the
    released reference loop is structured: per call a deep copy of the model loaded with the global state,
    a new ``torch.optim.SGD``, ``setattr`` parameter swaps for each unrolled local step, and a separate BN
    forward through a second copy with hooks registered anew. Returns ``(loss, terms, None)`` like
    :class:`~gradinv.attack.objective.InversionObjective`."""

    def __init__(self, model, inputs, config, device):
        self.model, self.inputs, self.config, self.device = model, inputs, config, device
        self.recipe = inputs.recipe
        self.global_state = {k: v.to(device) for k, v in inputs.global_state.items()}
        self.param_names = [name for name, _ in model.named_parameters()]
        self.observed = [inputs.diff[name].to(device) for name in self.param_names]
        self.batches = self.recipe.batches(inputs.num_images, inputs.round_num)
        self.bn_layers = [name for name, module in model.named_modules()
                          if isinstance(module, nn.modules.batchnorm._BatchNorm)]
        self.bn_initial = {layer: tuple(self.global_state[f"{layer}.{s}"] for s in ("running_mean", "running_var"))
                           for layer in self.bn_layers}
        self.bn_observed = {layer: tuple(self.global_state[f"{layer}.{s}"] + inputs.diff[f"{layer}.{s}"].to(device)
                                         for s in ("running_mean", "running_var")) for layer in self.bn_layers}

    def __call__(self, images, targets, bn_weight=None):
        from gradinv.attack.losses import cosine_distance, image_l2, total_variation_l2
        from gradinv.attack.replay import replay_running_stats

        config, recipe = self.config, self.recipe
        simulation = copy.deepcopy(self.model)
        simulation.load_state_dict(self.global_state)
        simulation.train()
        optimizer = torch.optim.SGD(simulation.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
        group = optimizer.param_groups[0]
        model_bn = copy.deepcopy(self.model)
        model_bn.load_state_dict(self.global_state)
        model_bn.train()

        stats: dict[str, list] = {layer: [] for layer in self.bn_layers}
        current = dict(simulation.named_parameters())
        initial = dict(current)
        buffers: dict | None = None
        for batch in self.batches:
            _swap_parameters(simulation, current)
            loss = recipe.loss_value(simulation(images[batch]), targets[batch])
            values = list(current.values())
            grads = torch.autograd.grad(loss, values, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(v) if g is None else g for v, g in zip(values, grads)]
            # The separate BN forward (pre-update weights of this step), hooks registered for this forward only.
            _swap_parameters(model_bn, current)
            handles = [model_bn.get_submodule(layer).register_forward_pre_hook(_stat_hook(stats[layer]))
                       for layer in self.bn_layers]
            try:
                model_bn(images[batch])
            finally:
                for handle in handles:
                    handle.remove()
            new_params, new_buffers = {}, ({} if group["momentum"] else None)
            for (name, param), grad in zip(current.items(), grads):
                if group["weight_decay"]:
                    grad = grad + group["weight_decay"] * param
                if group["momentum"]:
                    previous = None if buffers is None else buffers.get(name)
                    grad = grad if previous is None else group["momentum"] * previous + grad
                    new_buffers[name] = grad
                new_params[name] = param - group["lr"] * grad
            current, buffers = new_params, new_buffers

        simulated = [current[name] - initial[name] for name in self.param_names]
        terms = {"update_cosine": cosine_distance(simulated, self.observed)}
        total = config.update_cosine * terms["update_cosine"]
        if self.bn_layers and config.matches_bn:
            momentum, bn_loss = recipe.bn_momentum, 0.0
            for layer in self.bn_layers:
                estimate = replay_running_stats(*self.bn_initial[layer], stats[layer], momentum)
                bn_loss = bn_loss + sum(((e - t) / momentum).norm() for e, t in zip(estimate, self.bn_observed[layer]))
            terms["bn"] = bn_loss
            total = total + (config.bn if bn_weight is None else bn_weight) * bn_loss
        if config.tv_l2:
            total = total + config.tv_l2 * total_variation_l2(images)
        if config.l2:
            total = total + config.l2 * image_l2(images)
        return total, terms, None


def _stat_hook(sink: list):
    def hook(module, args):
        activations = args[0]
        dims = [0, *range(2, activations.dim())]
        count = activations.numel() // activations.shape[1]
        variance = activations.var(dims, unbiased=False)
        if count > 1:
            variance = variance * (count / (count - 1))
        sink.append((activations.mean(dims), variance))
    return hook


def _step_at_start(setup: _Setup, method: str):
    """``method``'s step (loss, terms, gradients) at the loops' common starting point."""
    loop = setup.loops["eager"]
    images = loop.images.detach().clone().requires_grad_(True)
    label_logits = loop.label_logits.detach().clone().requires_grad_(True)
    return setup.loops[method].attack_step(images, label_logits)


def _relative(value, reference) -> float:
    return float((value - reference).norm() / reference.norm().clamp_min(1e-12))


def same_math_check(setup: _Setup) -> float:
    """Max relative difference of (loss, d loss / d images) between gradinv's eager and the reference-style step."""
    (loss_a, _, grads_a), (loss_b, _, grads_b) = (_step_at_start(setup, method) for method in ("eager", "reference"))
    return max(_relative(loss_b, loss_a), _relative(grads_b[0], grads_a[0]))


def compile_step(setup: _Setup) -> float | None:
    """Compile the ``compiled`` loop's step (its first call); its seconds, or None if it fell back to eager."""
    step = setup.loops["compiled"].attack_step
    _step_at_start(setup, "compiled")
    return step.compile_seconds if step.mode == "compiled" else None


def compiled_check(setup: _Setup) -> dict[str, float]:
    """How far the compiled step is from the eager one at the same point (relative, float32): the loss, the image
    gradient, and what the product checks on its first compiled call (loss and whole gradient, see
    :data:`gradinv.attack.compiled.CHECK_RTOL`)."""
    from gradinv.attack.compiled import step_difference

    compiled, eager = (_step_at_start(setup, method) for method in ("compiled", "eager"))
    return {"loss": _relative(compiled[0], eager[0]), "image_gradient": _relative(compiled[2][0], eager[2][0]),
            "checked": step_difference(compiled, eager)}


def _synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: CaseSpec, *, reps: int = 7, warmup: int = 2, inner: int = 10, threads: int = 2,
             device: str | torch.device = "cpu", seed: int = 0, flush_denormal: bool = True) -> dict[str, Any]:
    """Time the four methods of one case, interleaved; returns a JSON-serialisable dict (times in ms).

    ``device`` is resolved by :func:`gradinv.attack.resolve_device`; front-ends check a user's ``--device`` first
    (:func:`gradinv.cli.common.parse_device`)."""
    import os

    from gradinv.attack import resolve_device
    from gradinv.attack.compiled import CHECK_RTOL

    _validate(case, reps, warmup, inner, threads)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    load_before = os.getloadavg()[0]
    resolved = resolve_device(device)
    setup = _Setup(case, resolved, seed)
    compile_seconds = compile_step(setup)  # before the warm-up, untimed
    mismatch = same_math_check(setup)
    compiled_mismatch = compiled_check(setup)
    calls = setup.callables()
    samples: dict[str, list[float]] = {method: [] for method in METHODS}
    for rep in range(warmup + reps):
        order = METHODS[rep % len(METHODS):] + METHODS[: rep % len(METHODS)]  # rotate who goes first
        for method in order:
            if method == "training":
                setup.reset_client()
            _synchronize(resolved)
            started = time.perf_counter()
            for _ in range(inner):
                calls[method]()
            _synchronize(resolved)
            elapsed = (time.perf_counter() - started) / inner
            if rep >= warmup:
                samples[method].append(elapsed * 1e3)
    median = {method: statistics.median(values) for method, values in samples.items()}
    fastest = {method: min(values) for method, values in samples.items()}
    return {
        **dataclasses.asdict(case),
        "local_steps": setup.recipe.num_steps(case.num_images),
        "ms_compiled_iteration": median["compiled"],
        "ms_eager_iteration": median["eager"],
        "ms_training_pass": median["training"],
        "ms_reference_iteration": median["reference"],
        "iteration_over_training_pass": median["compiled"] / median["training"],
        "iteration_over_training_pass_eager": median["eager"] / median["training"],
        "reference_loop_over_gradinv": median["reference"] / median["eager"],
        "compile_seconds": compile_seconds,
        "compile_fallback": setup.loops["compiled"].attack_step.fallback_reason,
        "same_math_max_rel_diff": mismatch,
        "compiled_rel_diff": compiled_mismatch,
        "compiled_check_tolerance": CHECK_RTOL,
        # The least-disturbed samples: on a shared CPU the minimum is closer to the machine's real speed.
        "min_ms": {method: fastest[method] for method in METHODS},
        "iteration_over_training_pass_min": fastest["compiled"] / fastest["training"],
        "iteration_over_training_pass_eager_min": fastest["eager"] / fastest["training"],
        "reference_loop_over_gradinv_min": fastest["reference"] / fastest["eager"],
        "samples_ms": {method: [round(value, 4) for value in values] for method, values in samples.items()},
        "reps": reps, "warmup": warmup, "inner": inner, "threads": threads, "device": str(resolved),
        "flush_denormal": flush_denormal, "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def profile_case(case: CaseSpec, *, threads: int = 2, device: str | torch.device = "cpu", seed: int = 0,
                 iterations: int = 30, rows: int = 25, flush_denormal: bool = True) -> str:
    """torch.profiler's operator tables (self CPU time) of ``iterations`` eager and compiled gradinv iterations,
    after 5 warm-ups (the compiled step is compiled first)."""
    from torch.profiler import ProfilerActivity, profile

    from gradinv.attack import resolve_device

    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    resolved = resolve_device(device)
    setup = _Setup(case, resolved, seed)
    compile_step(setup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if resolved.type == "cuda" else [])
    sort = "self_cuda_time_total" if resolved.type == "cuda" else "self_cpu_time_total"
    tables = []
    for method in ("eager", "compiled"):
        step = setup.loops[method].step
        for _ in range(5):
            step()
        with profile(activities=activities) as profiler:
            for _ in range(iterations):
                step()
            _synchronize(resolved)
        tables.append(f"profile of {iterations} {method} gradinv iterations, {case.label()}:\n"
                      + profiler.key_averages().table(sort_by=sort, row_limit=rows))
    return "\n".join(tables)


# --- reporting ---------------------------------------------------------------------------------------------
TARGETS = {
    "iteration_over_training_pass": ("<=", 3.5),
    "reference_loop_over_gradinv": (">=", 1.25),
}


def meets(key: str, value: float) -> bool:
    op, bound = TARGETS[key]
    return value <= bound if op == "<=" else value >= bound


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per case: ``iter/train`` is the compiled iteration (the target), ``eager/train`` the eager one;
    ``ref/eager`` the reference-style loop over the eager iteration (the second target)."""
    header = (f"{'case':<34} {'compiled ms':>11} {'eager ms':>9} {'train ms':>9} {'ref ms':>9} {'iter/train':>10} "
              f"{'':4} {'eager/train':>11} {'ref/eager':>9} {'':4} {'compile s':>9} {'same-math':>9} {'compiled':>8}")
    lines = [header, "-" * len(header)]
    for r in results:
        case = CaseSpec(r["model"], r["resolution"], r["num_images"], r["batch_size"], r["epochs"])
        a, b = r["iteration_over_training_pass"], r["reference_loop_over_gradinv"]
        compile_s = "fallback" if r["compile_seconds"] is None else f"{r['compile_seconds']:.1f}"
        lines.append(
            f"{case.label():<34} {r['ms_compiled_iteration']:>11.2f} {r['ms_eager_iteration']:>9.2f} "
            f"{r['ms_training_pass']:>9.2f} {r['ms_reference_iteration']:>9.2f} {a:>10.2f} "
            f"{'PASS' if meets('iteration_over_training_pass', a) else 'FAIL':4} "
            f"{r['iteration_over_training_pass_eager']:>11.2f} {b:>9.2f} "
            f"{'PASS' if meets('reference_loop_over_gradinv', b) else 'FAIL':4} {compile_s:>9} "
            f"{r['same_math_max_rel_diff']:>9.1e} {r['compiled_rel_diff']['checked']:>8.1e}"
        )
    for r in results:
        if r["compile_fallback"]:
            lines.append(f"NOTE: {r['num_images']} images: the compiled step fell back to eager: "
                         f"{r['compile_fallback'][:300]}")
    return "\n".join(lines)

