"""The arithmetic of ``gradinv sweep``: sweep.csv rows, calibrated noise, bisection points, rank correlation.

Pure functions over plain rows (mappings of column name to a CSV cell or a number), so that they can be
tested on synthetic run folders without running NVFlare. No plotting, no HTML.

Definitions used throughout (the sweep report quotes them):

- A site's **worst-round RDLV** at a noise level is the maximum over the attacked rounds of the site's
  ``rdlv`` (the mean RDLV over the update's images, Hungarian pairs).
- A site's **worst-round best-image SSIM** is the maximum over the rounds of ``ssim_max`` (the best
  reconstructed image of the update).
- Criterion ``rdlv`` (the paper's): the site passes at σ0 when its worst-round RDLV < 0, i.e. in no attacked
  round did the reconstructions beat the prior on average. It depends on the prior.
- Criterion ``ssim`` (the visual line: at SSIM 0.5 a reconstruction is clearly recognisable): the site passes at
  σ0 when its worst-round best-image SSIM < 0.5, i.e. no image of any attacked round was reconstructed recognisably.
- A site whose metric is missing in some round (attack failed, no ground truth, RDLV undefined) is *not
  measured* at that σ0 unless a measured round already fails it: a gap never counts as a pass.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gradinv.errors import GradinvError
from gradinv.metrics.evaluate import VISIBLY_LEAKED_SSIM
from gradinv.report.artifacts import natural_key, read_csv_rows, to_float, to_int

Row = Mapping[str, object]

# The filters a sweep can run. Gaussian has a noise level; NVFlare's two run once with their defaults.
SWEEP_FILTERS = ("gaussian", "percentile", "svt")
GAUSSIAN = "gaussian"


SWEEP_COLUMNS = (
    "filter", "sigma0", "site", "round", "num_images", "rdlv", "ssim", "lpips", "test_accuracy",
    "leak_score", "update_distance", "converged", "ssim_max", "rdlv_max", "psnr", "visibly_leaked_fraction",
    "prior_ssim", "status", "decision", "test_accuracy_round", "origin", "run_dir",
)  # fmt: skip
"""sweep.csv columns. ``test_accuracy`` is the run's final global model (the max-round row of its
global_metrics.csv; ``test_accuracy_round`` says which round that was), repeated on each of the run's rows.
``converged`` is metrics.csv's (``false``: the attack did not reproduce the update, so its low scores are no
evidence of safety). ``origin`` is ``grid`` or ``bisection``; ``run_dir`` is relative to the sweep folder."""

CRITERIA = {
    "rdlv": "RDLV < 0 in every attacked round (max over rounds of the site's mean RDLV < 0): the paper's "
            "criterion, relative to the prior",
    "ssim": f"no image visibly leaked: best-image SSIM < {VISIBLY_LEAKED_SSIM} in every attacked round "
            f"(max over rounds of ssim_max < {VISIBLY_LEAKED_SSIM})",
}


# ---------------------------------------------------------------- parsing


def parse_sigma_grid(text: str) -> list[float]:
    """``"0,10,30"`` → ``[0.0, 10.0, 30.0]`` (sorted, duplicates removed); each value finite and ≥ 0."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise GradinvError(f"--sigma0 takes comma-separated numbers, got {part!r}") from None
        if not math.isfinite(value) or value < 0:
            raise GradinvError(f"--sigma0 values must be finite and >= 0, got {part!r}")
        values.append(value)
    if not values:
        raise GradinvError("--sigma0 needs at least one value, e.g. 0,10,30")
    return sorted(set(values))


def parse_filters(text: str) -> list[str]:
    """``"gaussian,svt"`` → ``["gaussian", "svt"]`` in :data:`SWEEP_FILTERS` order, validated."""
    names = {part.strip().lower() for part in str(text).split(",") if part.strip()}
    unknown = sorted(names - set(SWEEP_FILTERS))
    if unknown:
        raise GradinvError(f"--filters: unknown filter {', '.join(unknown)}; choose from {', '.join(SWEEP_FILTERS)}")
    if not names:
        raise GradinvError(f"--filters needs at least one of {', '.join(SWEEP_FILTERS)}")
    return [name for name in SWEEP_FILTERS if name in names]


def format_sigma(sigma0: float | None) -> str:
    """σ0 as written in labels and tables: ``10`` rather than ``10.0``, ``12.5`` as is; empty for None."""
    if sigma0 is None:
        return ""
    return f"{sigma0:g}" if abs(sigma0) < 1e6 else repr(sigma0)


# ---------------------------------------------------------------- runs → rows


@dataclass(frozen=True)
class RunSpec:
    """One simulation of a sweep."""

    filter: str
    sigma0: float | None = None
    origin: str = "grid"

    @property
    def label(self) -> str:
        """Folder name and display name of the run, e.g. ``gaussian_sigma0_10`` or ``svt``."""
        return self.filter if self.sigma0 is None else f"{self.filter}_sigma0_{format_sigma(self.sigma0)}"

    def describe(self) -> str:
        """``gaussian σ0=10`` / ``svt (NVFlare defaults)``."""
        if self.sigma0 is None:
            return f"{self.filter} (NVFlare defaults)"
        return f"{self.filter} \u03c30={format_sigma(self.sigma0)}"

    def privacy_args(self, seed: int) -> dict:
        """Constructor arguments of the run's privacy filter: σ0 and a fixed seed for gaussian, defaults otherwise."""
        if self.filter == GAUSSIAN:
            return {"sigma0": float(self.sigma0 or 0.0), "seed": int(seed)}
        return {}


def plan_runs(sigmas: Sequence[float], filters: Sequence[str]) -> list[RunSpec]:
    """The grid: gaussian once per σ0, then each other filter once (no noise level)."""
    runs = [RunSpec(GAUSSIAN, float(s)) for s in sigmas] if GAUSSIAN in filters else []
    return runs + [RunSpec(name) for name in filters if name != GAUSSIAN]


def final_test_accuracy(global_rows: Iterable[Row]) -> tuple[int | None, float | None]:
    """(round, accuracy) of the max-round row of global_metrics.csv that has an accuracy; (None, None) if none."""
    best: tuple[int, float] | None = None
    for row in global_rows:
        round_number, accuracy = to_int(row.get("round")), to_float(row.get("test_accuracy"))
        if round_number is not None and accuracy is not None and (best is None or round_number > best[0]):
            best = (round_number, accuracy)
    return best if best is not None else (None, None)


def collect_run_rows(spec: RunSpec, gradinv_dir: Path, sweep_dir: Path) -> tuple[list[dict[str, str]], int]:
    """sweep.csv rows of one finished run, and how many repeated (round, site) rows were dropped.

    Each row is a metrics.csv row plus filter, σ0, final test accuracy and run dir. ``prior_ssim`` (mean
    SSIM(prior, original) of the update, what RDLV is relative to) comes from the update's metrics.json when the
    filter wrote one. A client whose result submission timed out re-sends it and the filter attacks it again; such
    repeats would count one update twice, so only the first row per (round, site) is kept.
    """
    from gradinv.report.artifacts import load_run_artifacts

    run = load_run_artifacts(gradinv_dir)
    accuracy_round, accuracy = final_test_accuracy(run.global_metrics)
    run_dir = gradinv_dir.parent
    try:
        run_dir_text = str(run_dir.resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        run_dir_text = str(run_dir.resolve())
    rows, seen = [], set()
    for metrics_row in run.rows:
        key = (metrics_row.get("round", ""), metrics_row.get("site", ""))
        if key in seen:
            continue
        seen.add(key)
        artifacts = run.for_row(metrics_row)
        details = (artifacts.details or {}) if artifacts else {}
        ground_truth = details.get("ground_truth") if isinstance(details.get("ground_truth"), Mapping) else {}
        row = {column: "" for column in SWEEP_COLUMNS}
        row.update({key: metrics_row.get(key, "") for key in SWEEP_COLUMNS if key in metrics_row})
        row.update({
            "filter": spec.filter,
            "sigma0": format_sigma(spec.sigma0),
            "prior_ssim": _cell(to_float(ground_truth.get("prior_ssim"))),
            "test_accuracy": _cell(accuracy),
            "test_accuracy_round": "" if accuracy_round is None else str(accuracy_round),
            "origin": spec.origin,
            "run_dir": run_dir_text,
        })
        rows.append(row)
    return sorted(rows, key=lambda r: (to_int(r["round"]) or 0, natural_key(r["site"]))), len(run.rows) - len(rows)


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Filter order, then σ0, then round, then site."""
    def key(row: Row):
        name = str(row.get("filter", ""))
        order = SWEEP_FILTERS.index(name) if name in SWEEP_FILTERS else len(SWEEP_FILTERS)
        sigma0 = to_float(row.get("sigma0"))
        return (order, name, -1.0 if sigma0 is None else sigma0, to_int(row.get("round")) or 0,
                natural_key(str(row.get("site", ""))))
    return sorted(rows, key=key)


def sweep_csv_text(rows: Iterable[Row]) -> str:
    """sweep.csv as text (columns :data:`SWEEP_COLUMNS`; extra keys are left out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SWEEP_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sort_rows(rows):
        writer.writerow({column: "" if row.get(column) is None else row.get(column) for column in SWEEP_COLUMNS})
    return buffer.getvalue()


def read_sweep_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a sweep.csv."""
    return read_csv_rows(path)[1]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# ---------------------------------------------------------------- per-site summaries and calibration


@dataclass
class SitePoint:
    """One site at one noise level of the gaussian sweep (aggregated over the attacked rounds)."""

    site: str
    sigma0: float
    num_images: int | None
    rdlv_by_round: list[float | None]  # the site's mean RDLV per attacked round (None: not measured)
    ssim_max_by_round: list[float | None]  # the best-image SSIM per attacked round
    mean_ssim: float | None  # mean over rounds of the update's mean SSIM
    test_accuracy: float | None  # the run's final global model
    leak_score: float | None  # mean over rounds

    @property
    def rounds(self) -> int:
        return len(self.rdlv_by_round)

    @property
    def worst_rdlv(self) -> float | None:
        """Max over the measured rounds of the mean RDLV."""
        return _max(self.rdlv_by_round)

    @property
    def mean_rdlv(self) -> float | None:
        return _mean(self.rdlv_by_round)

    @property
    def worst_ssim_max(self) -> float | None:
        """Max over the measured rounds of the best-image SSIM."""
        return _max(self.ssim_max_by_round)

    def passes(self, criterion: str) -> bool | None:
        """True/False for criterion ``rdlv`` or ``ssim``; None when not measured.

        A measured round at or above the line fails the site whatever the other rounds; otherwise a round
        without the metric leaves the answer open (a gap never counts as a pass).
        """
        if criterion == "rdlv":
            values, line = self.rdlv_by_round, 0.0
        else:
            values, line = self.ssim_max_by_round, VISIBLY_LEAKED_SSIM
        measured = [v for v in values if v is not None]
        if any(v >= line for v in measured):
            return False
        if not measured or len(measured) < len(values):
            return None
        return True


def site_points(rows: Iterable[Row], filter_name: str = GAUSSIAN) -> dict[str, dict[float, SitePoint]]:
    """Per site and σ0, the rows of ``filter_name`` aggregated over rounds (see the module docstring)."""
    grouped: dict[tuple[str, float], list[Row]] = defaultdict(list)
    for row in rows:
        sigma0 = to_float(row.get("sigma0"))
        if str(row.get("filter", "")) != filter_name or sigma0 is None:
            continue
        grouped[(str(row.get("site", "")), sigma0)].append(row)
    points: dict[str, dict[float, SitePoint]] = defaultdict(dict)
    for (site, sigma0), group in grouped.items():
        points[site][sigma0] = _site_point(site, sigma0, group)
    return {site: dict(sorted(points[site].items())) for site in sorted(points, key=natural_key)}


def run_site_points(rows: Iterable[Row]) -> dict[str, SitePoint]:
    """Per site, one run's rows aggregated over rounds, whatever its filter (σ0 is NaN when it has none)."""
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[str(row.get("site", ""))].append(row)
    points = {}
    for site in sorted(grouped, key=natural_key):
        sigma0 = to_float(grouped[site][0].get("sigma0"))
        points[site] = _site_point(site, math.nan if sigma0 is None else sigma0, grouped[site])
    return points


def _site_point(site: str, sigma0: float, group: Sequence[Row]) -> SitePoint:
    group = sorted(group, key=lambda r: to_int(r.get("round")) or 0)
    accuracies = [a for a in (to_float(r.get("test_accuracy")) for r in group) if a is not None]
    images = [n for n in (to_int(r.get("num_images")) for r in group) if n is not None]
    return SitePoint(
        site=site, sigma0=sigma0, num_images=max(images) if images else None,
        rdlv_by_round=[to_float(r.get("rdlv")) for r in group],
        ssim_max_by_round=[to_float(r.get("ssim_max")) for r in group],
        mean_ssim=_mean([to_float(r.get("ssim")) for r in group]),
        test_accuracy=max(accuracies) if accuracies else None,
        leak_score=_mean([to_float(r.get("leak_score")) for r in group]),
    )


def _max(values: Sequence[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return max(measured) if measured else None


def _mean(values: Sequence[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return sum(measured) / len(measured) if measured else None


@dataclass
class Calibration:
    """The calibrated noise level of one site under one criterion."""

    site: str
    criterion: str
    sigma0: float | None  # smallest σ0 measured passing; None: no measured σ0 passes
    accuracy: float | None  # final test accuracy at sigma0
    baseline_accuracy: float | None  # final test accuracy at σ0 = 0 (None when 0 was not run)
    max_sigma0: float | None  # largest σ0 measured
    failing_above: list[float] = field(default_factory=list)  # σ0 > sigma0 that fail again (noise is random)
    not_measured: list[float] = field(default_factory=list)
    passes_at_zero: bool = False
    best_ssim_at_max_sigma0: float | None = None  # the worst round's best-image SSIM at max_sigma0

    @property
    def accuracy_cost(self) -> float | None:
        """Test accuracy at σ0 = 0 minus at the calibrated σ0 (positive = accuracy lost)."""
        if self.accuracy is None or self.baseline_accuracy is None:
            return None
        return self.baseline_accuracy - self.accuracy

    def verdict(self) -> str:
        """One line, e.g. ``σ0 = 10`` or ``> 30 (no σ0 up to 30 suffices)``."""
        if self.sigma0 is None:
            if self.max_sigma0 is None:
                return "not measured"
            text = f"> {format_sigma(self.max_sigma0)} (no \u03c30 up to {format_sigma(self.max_sigma0)} suffices)"
            best = self.best_ssim_at_max_sigma0
            if self.criterion == "rdlv" and best is not None and best < VISIBLY_LEAKED_SSIM:
                # RDLV > 0 only says that a reconstruction is closer to its image than the prior is; with a prior
                # far from an image (SSIM of a few hundredths) noise passes that line.
                text += (f"; yet at \u03c30 = {format_sigma(self.max_sigma0)} no image is visibly leaked (best SSIM "
                         f"{best:.2f}): RDLV > 0 there means a reconstruction beats a prior far from its image; "
                         "read the SSIM criterion")
            return text
        text = f"\u03c30 = {format_sigma(self.sigma0)}"
        if self.passes_at_zero:
            text += " (passes without noise)"
        return text


def calibrate(rows: Iterable[Row], criterion: str) -> list[Calibration]:
    """Per site, the smallest σ0 of the gaussian runs at which the site passes ``criterion`` (``rdlv``/``ssim``)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}")
    results = []
    for site, by_sigma in site_points(rows).items():
        baseline = by_sigma.get(0.0)
        passing = [s for s, p in by_sigma.items() if p.passes(criterion) is True]
        first = min(passing) if passing else None
        results.append(Calibration(
            site=site, criterion=criterion, sigma0=first,
            accuracy=by_sigma[first].test_accuracy if first is not None else None,
            baseline_accuracy=baseline.test_accuracy if baseline else None,
            max_sigma0=max(by_sigma) if by_sigma else None,
            failing_above=[s for s, p in by_sigma.items() if first is not None and s > first
                           and p.passes(criterion) is False],
            not_measured=[s for s, p in by_sigma.items() if p.passes(criterion) is None],
            passes_at_zero=first == 0.0,
            best_ssim_at_max_sigma0=_max(by_sigma[max(by_sigma)].ssim_max_by_round) if by_sigma else None,
        ))
    return results


def bracket(by_sigma: Mapping[float, SitePoint], criterion: str) -> tuple[float, float] | None:
    """(last failing σ0 below the first passing one, first passing σ0), or None when there is nothing to refine."""
    passing = [s for s, p in by_sigma.items() if p.passes(criterion) is True]
    if not passing:
        return None
    first = min(passing)
    failing_below = [s for s, p in by_sigma.items() if s < first and p.passes(criterion) is False]
    return (max(failing_below), first) if failing_below else None


def bisection_points(rows: Iterable[Row], criteria: Sequence[str], min_gap: float = 0.25) -> list[float]:
    """The midpoints of every site's bracket under each criterion (deduplicated, sorted): one bisection step.

    Brackets narrower than ``min_gap`` are left alone (σ0 finer than that is below the run-to-run noise).
    """
    points = site_points(list(rows))
    midpoints = set()
    for by_sigma in points.values():
        for criterion in criteria:
            found = bracket(by_sigma, criterion)
            if found and found[1] - found[0] >= min_gap:
                midpoints.add(round((found[0] + found[1]) / 2.0, 4))
    return sorted(midpoints)


# ---------------------------------------------------------------- the no-ground-truth score


@dataclass
class RankCorrelation:
    """Spearman's ρ between two columns over the rows that have both."""

    x: str
    y: str
    n: int
    rho: float | None
    p_value: float | None
    note: str = ""

    def text(self) -> str:
        if self.rho is None:
            note = f"; {self.note}" if self.note else ""
            return f"Spearman \u03c1({self.x}, {self.y}) undefined (n = {self.n}{note})"
        return f"Spearman \u03c1({self.x}, {self.y}) = {self.rho:+.3f} (p = {self.p_value:.3g}, n = {self.n})"


def rank_correlation(rows: Iterable[Row], x: str, y: str) -> RankCorrelation:
    """:func:`scipy.stats.spearmanr` of columns ``x`` and ``y`` over rows with both values finite.

    Undefined (``rho`` None) with fewer than 3 pairs or a constant column, rather than a NaN in a table.
    """
    pairs = [(to_float(r.get(x)), to_float(r.get(y))) for r in rows]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if len(pairs) < 3:
        return RankCorrelation(x, y, len(pairs), None, None, "fewer than 3 rows with both values")
    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return RankCorrelation(x, y, len(pairs), None, None, "one of the columns is constant")
    from scipy.stats import spearmanr

    result = spearmanr(xs, ys)
    rho, p_value = float(result.statistic), float(result.pvalue)
    if not math.isfinite(rho):
        return RankCorrelation(x, y, len(pairs), None, None, "scipy returned NaN")
    return RankCorrelation(x, y, len(pairs), rho, p_value)
