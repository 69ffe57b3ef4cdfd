"""Attacks described as data: an :class:`AttackConfig` per named preset, overridable key by key.

``auto`` (the default of the filter and of ``gradinv attack``) picks by the model's structure
(:func:`preset_for_model`): ``fast`` for a flatten head, ``gap`` for a head that pools over space.

- ``fast``: what inverts a small BatchNorm CNN's (flatten head) update in CPU seconds to minutes: cosine update
  matching (weight 1) + exact BatchNorm running-stat replay (weight rising 0.1 -> 0.3 over each run) + TV/L2
  priors, Adam(0.1, betas 0.9/0.9), 100-iteration warm-up + cosine decay, analytic label counts; 1000 iterations
  per image, capped at 2 images' worth; RGB images are optimised as full-detail luminance and 3x coarser chroma
  (``chroma_detail``). Multi-image clients get 3 runs (the lowest attacker loss wins) and a
  noise-free polish; clients whose label counts put two images in one class start coarse-to-fine. Each setting's
  reason and measured effect is documented on :class:`AttackConfig` and in ``docs/``.
- ``thorough``: ``fast`` plus the region-exchange search for same-label pairs (6 runs, then a beam search over
  region exchanges from the best 2): same-label pairs SSIM 0.80 -> 0.95 on the test split, at 20-37 min per pair on
  one CPU thread instead of 3-8 (docs/same-label-pairs.md). Opt-in because of that cost.
- ``paper``: the released hyper-parameters of Hatamizadeh et al. (40k iterations, update matching as the sum
  of per-tensor L2 norms with weight 1e-3, BN 0.1 with the one-step BN formula, soft labels). Once the
  update term really is differentiable (it was a constant in the released code), the BN term dominates it
  by about 1000x and little of the image is recovered: this preset documents the published setting, it is
  not the recommended one. GPU-scale.
- ``gpu``: the corrected objective at the paper's scale (ResNet-18, 224 px): ``fast``'s loss with
  20k iterations; for a GPU.
- ``gap``: for global-average-pool heads (MONAI ResNet/DenseNet), what ``auto`` picks for them: relative
  BatchNorm matching (weight 1), Adam lr 0.01, 1500 iterations (~10 min of one CPU thread on ``resnet18_monai`` at
  64 px). It does not yet reconstruct such clients (measured SSIM 0.03-0.18, no structure):
  ``docs/architectures.md`` has the measurements and what is left to try.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gradinv.errors import AttackInputError

INIT_MODES = ("prior", "random")
LABEL_MODES = ("analytic", "analytic_fixed", "soft")
BN_MODES = ("exact", "single_step")
COMPILE_MODES = ("auto", "on", "off")
UPDATE_LAYER_MODES = ("joint", "mean")
BN_SCALE_MODES = ("absolute", "relative")


#: The integer settings and their smallest allowed values.
_INTEGER_MINIMUMS = {
    "iterations": 1,
    "iterations_per_image_cap": 1,
    "restarts": 1,
    "restart_min_images": 1,
    "polish_min_images": 0,
    "chroma_detail": 1,
}
_EXCHANGE_INTEGER_MINIMUMS = {"rounds": 0, "max_images": 0, "restarts": 1, "starts": 1, "beam": 1, "patience": 1}


@dataclasses.dataclass(frozen=True)
class ExchangeSearch:
    """The region-exchange search (:mod:`gradinv.attack.exchange`) for slots that share a recovered label: the
    ``exchange`` setting of :class:`AttackConfig`, overridden key by key (``{"exchange": {"rounds": 6}}``).

    Args:
        rounds: rounds of the search run on the best iterate when slots share a recovered label (0 = off, the
            default; ``thorough`` runs 6): a same-label batch ends in a patchwork of the two images that gradient
            steps do not leave; each round tries exchanging regions between such slots and keeps an exchange only if
            the attacker's loss falls. Off by default for its cost: 20-37 min per pair on one CPU thread against 3-8
            min without it.
        max_images: clients with more images skip the search (its cost grows with the slot pairs).
        restarts: runs (in place of ``AttackConfig.restarts``) for the clients the search runs on because their
            analytic label counts put two slots in one class: the search improves a start by a few exchanges and
            cannot rescue a start that is a fine blend, so it pays to draw more runs and search from the best (a run
            costs a fraction of a search). Measured on 12 same-label pair runs (docs/same-label-pairs.md), 6 runs
            against 3: mean SSIM 0.847 -> 0.872 (3 up, 1 down, 8 the same), up to 2x the time.
        starts: the search runs from the best iterates of this many runs (lowest loss first), and the lowest loss it
            reaches is kept: the search ends in different states from different patchworks.
        beam: states the search keeps per round (the lowest losses), each searched in the next round.
        patience: the search stops after this many rounds in a row that do not lower its best loss (by 1 %). A beam
            of 1 with a patience of 1 is greedy; a wider beam with a patience of 2 also follows an exchange that pays
            only with the next one (a large, mostly right exchange whose seam is wrong). Measured on 6 same-label
            pairs from other image sources (docs/same-label-pairs.md), beam 3 / patience 2 against greedy: the MR
            pair that the greedy search left at 0.63 reached 0.93, the others moved within run-to-run noise; on 6
            test-split pairs mean SSIM 0.919 -> 0.946 (worst 0.877 -> 0.918); 1.5-3x the time.
        screen: iterations that screen one candidate exchange, as a fraction of ``AttackConfig.iterations``.
        polish: iterations that polish the start and the best candidates, as a fraction of
            ``AttackConfig.iterations``.
        lr: Adam step size (decaying to 0) of screening and polishing, and of ``AttackConfig.polish``; low, so that
            a polish settles the exchanged images rather than scrambling them again.
    """

    rounds: int = 0
    max_images: int = 2
    restarts: int = 6
    starts: int = 2
    beam: int = 3
    patience: int = 2
    screen: float = 0.08
    polish: float = 0.4
    lr: float = 0.01

    def __post_init__(self) -> None:
        problems = []
        for name, minimum in _EXCHANGE_INTEGER_MINIMUMS.items():
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= minimum):
                problems.append(f"exchange.{name} must be an integer >= {minimum}, got {getattr(self, name)!r}")
        for name in ("screen", "polish", "lr"):
            if not getattr(self, name) > 0:
                problems.append(f"exchange.{name} must be > 0, got {getattr(self, name)!r}")
        if problems:
            raise AttackInputError("invalid attack configuration: " + "; ".join(problems))

    def runs_on(self, num_images: int) -> bool:
        """Whether the search is on for a client of ``num_images`` images (it then runs where slots share a label)."""
        return bool(self.rounds) and num_images <= self.max_images

    def iterations(self, attack_iterations: int) -> tuple[int, int]:
        """(screen, polish) iterations of the search in an attack of ``attack_iterations`` iterations per image."""
        screen = max(1, round(self.screen * attack_iterations))
        return screen, max(1, round(self.polish * attack_iterations))

    def merged(self, overrides: ExchangeSearch | Mapping[str, Any]) -> ExchangeSearch:
        """These settings with ``overrides`` (some of the keys) applied; an :class:`ExchangeSearch` replaces them."""
        if isinstance(overrides, ExchangeSearch):
            return overrides
        if not isinstance(overrides, Mapping):
            raise AttackInputError(f"exchange must be a mapping of exchange-search settings such as {{'rounds': 6}}, "
                                   f"got {overrides!r}")
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise AttackInputError(f"unknown exchange-search settings {unknown}; the keys of 'exchange' are "
                                   f"{', '.join(known)}")
        return dataclasses.replace(self, **overrides)


#: The flat names the exchange-search settings had before they moved into ``AttackConfig.exchange``.
_FLAT_EXCHANGE_NAMES = {f"exchange_{field.name}": field.name for field in dataclasses.fields(ExchangeSearch)}


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """All knobs of one inversion.

    Args:
        iterations: optimisation steps for one image; see ``iterations_per_image_cap``.
        iterations_per_image_cap: the run uses ``iterations * min(N, cap)`` steps for N images
            (more images need longer; 1 = the same for every N).
        lr: Adam step size (peak, after warm-up).
        betas: Adam betas.
        warmup: linear warm-up iterations before the cosine decay to 0.
        update_cosine: weight of the cosine distance between simulated and observed parameter updates.
        update_l2: weight of the paper's sum of per-tensor L2 distances.
        bn: weight of BatchNorm running-statistics matching (at the first iteration).
        bn_end: weight of BatchNorm matching at the last iteration of a run; it rises (or falls) linearly from
            ``bn``. ``None`` keeps ``bn`` throughout. Raising it late pins what update matching leaves loose:
            measured on the 48 held-out sample images as 1-image clients (``fast``, 64 px, 2 seeds), 0.1 -> 0.3
            removed the faint dots a constant 0.1 leaves on flat black backgrounds (worst SSIM 0.85 -> 0.98, mean
            0.996 either way), while a constant 0.3 from the start lowered the mean and 1.0 broke some images.
        bn_mode: ``exact`` (replay every local step) or ``single_step`` (the paper's one-step inversion).
        bn_scale: ``absolute`` (sum over layers of the norms of the statistics' errors) or ``relative`` (mean over
            layers of each error divided by the size of that layer's statistics' contribution to its running
            statistics: every layer counts alike, and the weight means the same for 20 layers as for 120). On
            MONAI's ResNet-18 the absolute term starts ~100x the update term, dominated by the 4x4 px layers.
        update_layers: ``joint`` (one cosine distance over all parameter updates together) or ``mean`` (the mean of
            each tensor's own cosine distance, tensors with a zero observed update left out): on a ResNet the
            stem convolution holds ~80 % of the squared update norm and so decides the joint cosine alone.
        tv_l2: weight of the total-variation prior, measured on the model's input ``(x - mean) / std``. 3e-4 (3x
            the reference code's 1e-4) lifted RGB single images from SSIM 0.75 to 0.82 and left grayscale ones
            unchanged (docs/own-job.md).
        chroma_detail: RGB images are optimised as luminance at full detail and chroma this many times coarser
            (:mod:`gradinv.attack.parametrisation`; 1 optimises the RGB values directly). One-channel images are
            unaffected. 3 lifted single RGB images (64 px, ImageNet normalisation, ``fast``) from mean SSIM 0.84 to
            0.92 on the example job's four crops and 0.81 to 0.88 on six other photographs at the same cost; 2 and 4
            were within 0.01 of it (docs/own-job.md).
        l2: weight of the image-norm prior.
        energy: Langevin noise on the image after each step, std = energy x current lr.
        init: ``prior`` (start every slot from the prior image plus small seeded noise) or ``random``.
        init_noise: std of the noise added to the prior so that slots start apart.
        labels: ``analytic`` (label counts from the last-layer bias update initialise soft labels that are
            then optimised), ``analytic_fixed`` (those labels, held fixed) or ``soft`` (free soft labels,
            random start, as the paper).
        clamp: project the images into [0, 1] (the client's input range) after each step.
        restarts: independent runs (different seeds) for clients of at least ``restart_min_images`` images;
            the one with the lowest attacker loss is kept. Several images in one batch can settle in a local
            minimum where regions of one image sit in the other's slot; such a run ends with a clearly higher
            loss, so a differently initialised run picked by the attacker's own loss is the robust remedy.
        restart_init: ``init`` of every run after the first (the first uses ``init``): ``random`` starts far
            from the first run's basin.
        restart_min_images: clients with fewer images run once (one image converges reliably from the prior).
        coarse_to_fine: ``(fraction, factor)`` phases of each run when the analytic label counts say that two slots
            share a label: until ``fraction`` of a run's iterations, the images are held to ``factor`` x coarser
            detail (area-downsampled and bilinearly upsampled before each step). At full detail from the start, a
            same-label batch breaks the symmetry between its slots pixel by pixel and ends in a fine patchwork of
            both images that few exchanges undo; at coarse detail each slot first commits to one image's layout,
            and the exchange search is left with fewer, larger misassigned regions. ``()`` = off.
        polish: after the runs, clients of at least ``polish_min_images`` images get this many times ``iterations``
            more Adam steps on the best iterate at ``exchange.lr`` decaying to 0, without Langevin noise (0 = off).
            The runs end under-converged on multi-image batches: measured on mixed-label pairs from image sources
            the sample set does not use, 3x (3000 iterations at lr 0.01) lifted SSIM 0.68 -> 0.90 and 0.89 -> 0.99
            (attack loss 0.054 -> 0.013, 0.014 -> 0.004); 1.5x at lr 0.01 gave 0.81 and (another pair) 0.88 -> 0.94,
            1.5x at lr 0.02 gave 0.90 and 0.98.
        polish_min_images: smallest client the polish runs for (1-image clients converge within their runs).
        exchange: the region-exchange search for slots that share a label (:class:`ExchangeSearch`; off unless its
            ``rounds`` are set, as ``thorough`` does).
        time_budget_s: stop when this many seconds have passed and return the best iterate so far.
        compile: ``on`` runs each iteration as one ``torch.compile``-d graph (same objective and gradient,
            about 2x faster per iteration after a one-off compile of seconds to a minute), ``off`` runs it
            eagerly, ``auto`` compiles only attacks long enough to repay a cold compile
            (:func:`gradinv.attack.compiled.should_compile`). A compile that fails falls back to eager.
    """

    iterations: int = 1000
    iterations_per_image_cap: int = 2
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.9)
    warmup: int = 100
    update_cosine: float = 1.0
    update_l2: float = 0.0
    bn: float = 0.1
    bn_end: float | None = 0.3
    bn_mode: str = "exact"
    bn_scale: str = "absolute"
    update_layers: str = "joint"
    tv_l2: float = 3e-4
    chroma_detail: int = 3
    l2: float = 1e-5
    energy: float = 0.1
    init: str = "prior"
    init_noise: float = 0.02
    labels: str = "analytic"
    clamp: bool = True
    restarts: int = 3
    restart_init: str = "random"
    restart_min_images: int = 2
    coarse_to_fine: tuple[tuple[float, int], ...] = ((0.25, 4), (0.5, 2))
    polish: float = 3.0
    polish_min_images: int = 2
    exchange: ExchangeSearch = ExchangeSearch()
    time_budget_s: float | None = None
    compile: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        for name, minimum in _INTEGER_MINIMUMS.items():
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= minimum):
                problems.append(f"{name} must be an integer >= {minimum}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if not (
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(
                isinstance(beta, (int, float)) and not isinstance(beta, bool) and 0 <= beta < 1 for beta in self.betas
            )
        ):
            problems.append(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.init not in INIT_MODES:
            problems.append(f"init must be one of {INIT_MODES}, got {self.init!r}")
        if self.labels not in LABEL_MODES:
            problems.append(f"labels must be one of {LABEL_MODES}, got {self.labels!r}")
        if self.bn_mode not in BN_MODES:
            problems.append(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.update_layers not in UPDATE_LAYER_MODES:
            problems.append(f"update_layers must be one of {UPDATE_LAYER_MODES}, got {self.update_layers!r}")
        if self.bn_scale not in BN_SCALE_MODES:
            problems.append(f"bn_scale must be one of {BN_SCALE_MODES}, got {self.bn_scale!r}")
        if self.compile not in COMPILE_MODES:
            problems.append(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.restart_init not in INIT_MODES:
            problems.append(f"restart_init must be one of {INIT_MODES}, got {self.restart_init!r}")
        if not isinstance(self.exchange, ExchangeSearch):
            problems.append(f"exchange must be an ExchangeSearch, got {self.exchange!r}")
        problems += _coarse_to_fine_problems(self.coarse_to_fine)
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            problems.append(f"time_budget_s must be > 0 or None, got {self.time_budget_s!r}")
        for name in ("update_cosine", "update_l2", "bn", "tv_l2", "l2", "energy", "init_noise", "polish"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.bn_end is not None and not self.bn_end >= 0:
            problems.append(f"bn_end must be >= 0 or None, got {self.bn_end!r}")
        if self.update_cosine == 0 and self.update_l2 == 0 and not self.matches_bn:
            problems.append("at least one of update_cosine, update_l2 and bn must be > 0")
        if problems:
            raise AttackInputError("invalid attack configuration: " + "; ".join(problems))

    @property
    def matches_bn(self) -> bool:
        """Whether BatchNorm statistics are matched at any point of a run."""
        return self.bn > 0 or bool(self.bn_end)

    def bn_weight(self, iteration: int, total: int) -> float:
        """The BatchNorm matching weight at ``iteration`` (0-based) of a run of ``total`` iterations."""
        if self.bn_end is None:
            return self.bn
        return self.bn + (self.bn_end - self.bn) * iteration / max(total - 1, 1)

    def total_iterations(self, num_images: int) -> int:
        """Iterations of one run (restart)."""
        return self.iterations * min(num_images, self.iterations_per_image_cap)

    def runs(self, num_images: int, searched: bool = False) -> int:
        """How many independent runs an attack on ``num_images`` images makes (``searched``: the exchange search
        follows them)."""
        if num_images < self.restart_min_images:
            return 1
        return self.exchange.restarts if searched else self.restarts

    def polish_iterations(self, num_images: int) -> int:
        """Noise-free iterations on the best iterate after the runs (0 for clients below ``polish_min_images``)."""
        return round(self.polish * self.iterations) if num_images >= self.polish_min_images else 0

    def detail_factor(self, iteration: int, total: int) -> int:
        """How many times coarser than the input a coarse-to-fine run holds the images at ``iteration`` (1 = full)."""
        for fraction, factor in self.coarse_to_fine:
            if iteration < fraction * total:
                return factor
        return 1

    def init_of_run(self, run: int) -> str:
        return self.init if run == 0 else self.restart_init

    def replace(self, **overrides: Any) -> AttackConfig:
        """These settings with ``overrides``; ``exchange`` takes some of its keys (merged into the current ones)."""
        flat = {name: value for name, value in overrides.items() if name in _FLAT_EXCHANGE_NAMES}
        if flat:
            nested = {_FLAT_EXCHANGE_NAMES[name]: value for name, value in flat.items()}
            names = ", ".join(repr(name) for name in flat)
            raise AttackInputError(f"{names} {'is now a key' if len(flat) == 1 else 'are now keys'} of 'exchange': "
                                   f"pass {{'exchange': {nested!r}}}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise AttackInputError(f"unknown attack settings {unknown}")
        for name in ("betas", "coarse_to_fine"):
            if name in overrides:
                overrides[name] = _as_tuples(overrides[name])
        if "exchange" in overrides:
            overrides["exchange"] = self.exchange.merged(overrides["exchange"])
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _as_tuples(value: Any) -> Any:
    """Lists (as JSON gives them) as tuples, nested ones too; anything else as it is, for the checks to judge."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


def _coarse_to_fine_problems(phases: Any) -> list[str]:
    problem = (
        "coarse_to_fine must be a list of (fraction, factor) pairs with fractions increasing in (0, 1] and "
        f"integer factors >= 2, got {phases!r}"
    )
    try:
        fractions = [float(fraction) for fraction, _ in phases]
        factors = [factor for _, factor in phases]
    except (TypeError, ValueError):
        return [problem]
    increasing = all(a < b for a, b in zip([0.0] + fractions, fractions))
    if not (
        increasing
        and (not fractions or fractions[-1] <= 1)
        and all(isinstance(f, int) and not isinstance(f, bool) and f >= 2 for f in factors)
    ):
        return [problem]
    return []


PRESETS: dict[str, AttackConfig] = {
    "fast": AttackConfig(),
    "thorough": AttackConfig(exchange=ExchangeSearch(rounds=6)),
    "paper": AttackConfig(
        iterations=40000,
        iterations_per_image_cap=1,
        update_cosine=0.0,
        update_l2=1e-3,
        bn=0.1,
        tv_l2=1e-4,
        chroma_detail=1,
        bn_end=None,
        bn_mode="single_step",
        init_noise=0.0,
        labels="soft",
        clamp=False,
        restarts=1,
        coarse_to_fine=(),
        polish=0.0,
    ),
    "gpu": AttackConfig(iterations=20000, iterations_per_image_cap=1, restarts=1, coarse_to_fine=(), polish=0.0),
    # Global-average-pool heads (MONAI ResNet/DenseNet): every BatchNorm layer counts alike (bn_scale="relative";
    # with "absolute" the deep 512-channel layers are ~100x the update term), a 10x lower step size (at 0.1 the
    # losses only fall once the cosine decay has brought it down), sized to ~10 min of one CPU thread on
    # resnet18_monai at 64 px. It does NOT yet reconstruct such clients: see docs/architectures.md.
    "gap": AttackConfig(
        iterations=1500,
        lr=0.01,
        bn=1.0,
        bn_end=None,
        bn_scale="relative",
        tv_l2=1e-4,
        coarse_to_fine=(),
        polish=0.0,
    ),
}

def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> AttackConfig:
    """The named preset with optional overrides (e.g. ``{"iterations": 300}``)."""
    if name not in PRESETS:
        raise AttackInputError(f"unknown attack preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**dict(overrides or {}))


def head_kind(model: Any) -> str:
    """``"flatten"`` when the classifier's last Linear layer sees every position of the last feature map,
    ``"pooled"`` when the feature map is pooled over space before it (global average/max pooling).

    Decided by structure: a model with an ``AdaptiveAvgPool``/``AdaptiveMaxPool`` module is pooled; otherwise a
    model whose last Linear layer takes as many inputs as the last BatchNorm/conv layer has channels is pooled
    (a functional pooling in ``forward``); anything else is treated as a flatten head.
    """
    from torch import nn

    if any(
        isinstance(
            module,
            (
                nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d,
                nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d,
                nn.AdaptiveMaxPool3d,
            ),
        )
        for module in model.modules()
    ):
        return "pooled"
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    channels = [
        module.num_features if isinstance(module, nn.modules.batchnorm._BatchNorm) else module.out_channels
        for module in model.modules()
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd))
    ]
    if linears and channels and linears[-1].in_features == channels[-1]:
        return "pooled"
    return "flatten"


def preset_for_model(model: Any) -> str:
    """The preset to attack ``model`` with: ``"fast"`` for a flatten head (the last layer's update holds the
    image's layout), ``"gap"`` for a head that pools over space (see :func:`head_kind`)."""
    return "gap" if head_kind(model) == "pooled" else "fast"


#: The preset name that means "chosen by the model's structure" (:func:`preset_for_model`): the filter's and
#: ``gradinv attack``'s default.
AUTO_PRESET = "auto"
#: What :data:`AUTO_PRESET` can become; overrides are checked against each at construction.
_AUTO_CHOICES = ("fast", "gap")
#: Every name a user may give: ``auto`` and the presets.
PRESET_NAMES = (AUTO_PRESET, *PRESETS)


def resolve_preset(name: str, model: Any) -> str:
    """``name``, or for ``auto`` the preset :func:`preset_for_model` picks for ``model``."""
    return preset_for_model(model) if name == AUTO_PRESET else name


def check_preset(name: str, overrides: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`AttackInputError` when ``name`` is not a preset name or ``overrides`` do not apply to it (to
    each preset ``auto`` may become), before any model is known."""
    if name not in PRESET_NAMES:
        raise AttackInputError(f"unknown attack preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}")
    for choice in _AUTO_CHOICES if name == AUTO_PRESET else (name,):
        get_preset(choice, overrides)
