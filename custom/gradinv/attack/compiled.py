"""One attack iteration's loss and gradient, eagerly or as a single ``torch.compile``-d graph.

:func:`gradinv.attack.invert` asks an :class:`AttackStep` for the objective of the current images and label
logits and its gradient w.r.t. them; Adam, the lr schedule, Langevin noise, clamping and best-iterate
bookkeeping stay in the loop. Both ways compute the same :class:`~gradinv.attack.objective.InversionObjective`
(same replay, same recipe, same loss terms, one definition of each):

* eager: ``InversionObjective`` (``torch.autograd.grad(create_graph=True)`` per local step), then
  ``torch.autograd.grad`` w.r.t. the images and label logits;
* compiled: the same replay with each local step differentiated by ``torch.func.grad``
  (:meth:`FunctionalReplay.run` with ``functional=True``, BatchNorm statistics returned from the forward), the
  whole objective under ``torch.func.grad_and_value`` and ``torch.compile(fullgraph=True)``. ``torch.compile``
  cannot trace ``autograd.grad(create_graph=True)`` (aot_autograd has no double backward), hence ``func.grad``.

Measured on a 2-core CPU (``bn_cnn``, 64 px): the compiled iteration is
about 2x faster than the eager one; compiling costs tens of seconds with a cold inductor cache
(``/tmp/torchinductor_$USER`` by default, shared by every process of the user) and a few seconds warm. The
first compiled call is checked against the eager step (loss and gradients within :data:`CHECK_RTOL`); a
mismatch or any compile/run-time error logs a warning and the attack continues eagerly, so an FL job never
aborts because of compilation.

Within one process the compiled graph is reused by later attacks of the same shapes and settings (the
objective's tensors are graph inputs, not constants: measured, a second same-shape attack's first call takes
milliseconds), so the FL filter pays the compile once per client size. Each distinct shape/setting is one more
entry in dynamo's cache of this function; past ``torch._dynamo.config.recompile_limit`` (8) dynamo runs it
uncompiled (correct, slower). Registered models on the CPU: ``bn_cnn`` compiles in seconds to a minute;
``resnet18``/``resnet18_monai`` compile in minutes and gain ~1.2-1.5x; ``densenet121`` is never compiled
(:data:`UNSUPPORTED_MODEL_CLASSES`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from gradinv.attack.presets import AttackConfig

if TYPE_CHECKING:  # invert.py imports this module; the objective is only a type here
    from gradinv.attack.objective import InversionObjective

logger = logging.getLogger(__name__)

StepOutput = tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, ...]]
"""(loss, loss terms, gradients w.r.t. (images[, label logits])), all detached from any graph."""

#: ``compile="auto"`` compiles attacks of at least this many iterations (all runs together: one compile serves
#: them all): a cold compile (30-40 s on the 2-core CPU at 64 px) is repaid after ~5k iterations at the
#: measured saving of 5-9 ms per iteration (bn_cnn 64 px, N=1-4), a warm one (1-4 s) much sooner. The ``fast``
#: preset's single-image attacks (1000 iterations, ~10 s) stay eager; its multi-image ones (3 runs x 2000),
#: ``paper`` (40k) and ``gpu`` (20k) compile.
AUTO_MIN_ITERATIONS = 5000
#: ... and whose time budget (if any) leaves room for a cold compile: the budget counts the compile.
AUTO_MIN_TIME_BUDGET_S = 300.0
#: Largest relative difference (of the loss, and of the whole gradient, images and label logits concatenated)
#: accepted between the first compiled step and the eager step. Measured on bn_cnn: in float64 the two agree to
#: 1e-14 (same math); in float32 the compiled gradient is off the float64 value by up to ~2e-3 at 64 px N=4
#: (eager float32: ~1e-6): the double backward sums many cancelling terms, and inductor's fused reductions
#: accumulate less carefully than ATen's. Harmless for Adam with Langevin noise; a wrong graph is far off.
#: (Per variable would be wrong: with one local step the cosine term does not depend on the label logits,
#: whose gradient is then pure rounding noise of ~1e-8.)
CHECK_RTOL = 1e-2
#: Model classes (matched by class name anywhere in the model's MRO, so MONAI need not be imported) that run
#: eagerly whatever ``compile`` says. MONAI's DenseNet: measured at 32 px, N=2, the compile took 16 min on 2 cores
#: and its gradient was 1.7 (relative) off the eager one, while the same traced graph run by ``aot_eager``
#: matched exactly: an inductor code-generation problem, not one of the replay.
UNSUPPORTED_MODEL_CLASSES = ("DenseNet",)


def should_compile(config: AttackConfig, total_iterations: int) -> bool:
    """Whether ``config.compile`` asks for the compiled step for an attack of ``total_iterations`` (all runs)."""
    if config.compile != "auto":
        return config.compile == "on"
    budget_ok = config.time_budget_s is None or config.time_budget_s >= AUTO_MIN_TIME_BUDGET_S
    return total_iterations >= AUTO_MIN_ITERATIONS and budget_ok


def step_difference(a: StepOutput, b: StepOutput) -> float:
    """Max of the relative differences of the loss and of the concatenated gradient between two steps."""

    def relative(x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.detach().double(), y.detach().double()
        return float((x - y).norm() / y.norm()) if y.norm() > 0 else float((x - y).norm())

    flat = [torch.cat([g.detach().flatten() for g in step[2]]) for step in (a, b)]
    return max(relative(a[0], b[0]), relative(*flat))


class AttackStep:
    """The objective of one attack iteration and its gradient w.r.t. the images (and label logits).

    Args:
        objective: the eager reference objective (its replay, targets and weights define the math).
        targets_fn: label logits -> targets the recipe's loss takes (sigmoid or softmax probabilities).
        differentiate_labels: also return the gradient w.r.t. the label logits.
        compile: build the compiled step (first call compiles); ``False`` is the eager step.
    """

    def __init__(
        self,
        objective: InversionObjective,
        targets_fn: Callable[[torch.Tensor], torch.Tensor],
        differentiate_labels: bool,
        compile: bool,
    ):
        self.objective = objective
        self.targets_fn = targets_fn
        self.differentiate_labels = differentiate_labels
        self.mode = "eager"
        """``compiled`` or ``eager`` (after a fallback too)."""
        self.compile_seconds: float | None = None
        """Wall time of the first compiled call (tracing + inductor compile + one run), once it happened."""
        self.fallback_reason: str | None = None
        self._compiled: Callable | None = None
        unsupported = (
            [cls.__name__ for cls in type(objective.replay.model).__mro__ if cls.__name__ in UNSUPPORTED_MODEL_CLASSES]
            if compile
            else []
        )
        if unsupported:
            self.fallback_reason = f"{unsupported[0]} models are not compiled (see UNSUPPORTED_MODEL_CLASSES)"
            logger.warning("compiled attack step unavailable, running eagerly: %s", self.fallback_reason)
        elif compile:
            argnums = (0, 1) if differentiate_labels else 0
            grad_fn = torch.func.grad_and_value(self._objective_with_terms, argnums=argnums, has_aux=True)
            # fullgraph: a graph break inside the func transforms would silently run them eagerly (slower than
            # the autograd step); better to fail at compile time and fall back to the eager step explicitly.
            self._compiled = torch.compile(grad_fn, fullgraph=True, dynamic=False)
            self.mode = "compiled"

    def _objective_with_terms(
        self, images: torch.Tensor, label_logits: torch.Tensor, bn_weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        objective = self.objective
        replayed = objective.replay.run(
            objective.initial_params, images, self.targets_fn(label_logits), functional=True
        )
        return objective.loss_from_replay(images, replayed, bn_weight)

    def eager(self, images: torch.Tensor, label_logits: torch.Tensor, bn_weight: float | None = None) -> StepOutput:
        """The reference step: ``InversionObjective`` and ``torch.autograd.grad``."""
        loss, terms, _ = self.objective(images, self.targets_fn(label_logits), bn_weight)
        variables = [images, label_logits] if self.differentiate_labels else [images]
        gradients = torch.autograd.grad(loss, variables)
        return loss.detach(), {name: value.detach() for name, value in terms.items()}, tuple(gradients)

    def _run_compiled(self, images: torch.Tensor, label_logits: torch.Tensor, bn_weight: float | None) -> StepOutput:
        # Outside the graph nothing needs autograd: no_grad makes aot_autograd build an inference graph (the
        # func.grad transforms inside still differentiate), and detached inputs keep the guards stable.
        weight = torch.tensor(
            self.objective.config.bn if bn_weight is None else bn_weight, dtype=images.dtype, device=images.device
        )
        with torch.no_grad():
            gradients, (loss, terms) = self._compiled(images.detach(), label_logits.detach(), weight)
        if not self.differentiate_labels:
            gradients = (gradients,)
        return loss, terms, tuple(gradients)

    def __call__(self, images: torch.Tensor, label_logits: torch.Tensor, bn_weight: float | None = None) -> StepOutput:
        """Loss, terms and gradients at ``images`` / ``label_logits``; ``bn_weight`` defaults to ``config.bn``."""
        if self.mode == "eager":
            return self.eager(images, label_logits, bn_weight)
        if self.compile_seconds is not None:
            try:
                return self._run_compiled(images, label_logits, bn_weight)
            except Exception as exc:  # noqa: BLE001 - e.g. a recompile failing; the attack must go on
                return self._fall_back(f"{type(exc).__name__}: {exc}", images, label_logits, bn_weight)
        return self._first_compiled_call(images, label_logits, bn_weight)

    def _first_compiled_call(
        self, images: torch.Tensor, label_logits: torch.Tensor, bn_weight: float | None
    ) -> StepOutput:
        logger.info("compiling the attack step (one-off; tens of seconds on a CPU with a cold inductor cache)")
        started = time.monotonic()
        try:
            compiled = self._run_compiled(images, label_logits, bn_weight)
        except Exception as exc:  # noqa: BLE001 - any compiler/toolchain failure: run eagerly instead
            return self._fall_back(f"{type(exc).__name__}: {exc}", images, label_logits, bn_weight)
        self.compile_seconds = time.monotonic() - started
        reference = self.eager(images, label_logits, bn_weight)
        mismatch = step_difference(compiled, reference)
        if not mismatch <= CHECK_RTOL:
            return self._fall_back(
                f"the compiled step differs from the eager one by {mismatch:.2e} (relative)",
                images,
                label_logits,
                bn_weight,
                reference,
            )
        logger.info(
            "attack step compiled in %.1f s (check against eager: %.1e relative)", self.compile_seconds, mismatch
        )
        return compiled

    def _fall_back(
        self,
        reason: str,
        images: torch.Tensor,
        label_logits: torch.Tensor,
        bn_weight: float | None,
        reference: StepOutput | None = None,
    ) -> StepOutput:
        logger.warning("compiled attack step unavailable, continuing eagerly: %s", reason.splitlines()[0][:500])
        self.mode, self.fallback_reason, self._compiled = "eager", reason, None
        return reference if reference is not None else self.eager(images, label_logits, bn_weight)


def make_attack_step(
    objective: InversionObjective,
    config: AttackConfig,
    total_iterations: int,
    targets_fn: Callable[[torch.Tensor], torch.Tensor],
    differentiate_labels: bool,
) -> AttackStep:
    """The step :func:`gradinv.attack.invert` runs: compiled when :func:`should_compile` says so."""
    return AttackStep(objective, targets_fn, differentiate_labels, compile=should_compile(config, total_iterations))
