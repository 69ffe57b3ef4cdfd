"""``sweep_report.html`` and the sweep's plots (RDLV and SSIM against σ0), calibration, rank correlation.

Built from the sweep's run outcomes (see :mod:`gradinv.sweep.runner`) with the page helpers of
:mod:`gradinv.report.html`: one self-contained page (plots embedded as data URIs, no scripts, no external
references), written 0600. The only links are relative ones to each run's own report.html next to it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradinv.attack.presets import AUTO_PRESET, resolve_preset
from gradinv.metrics.evaluate import VISIBLY_LEAKED_SSIM
from gradinv.models import MODEL_NAMES, build_model
from gradinv.report.artifacts import load_run_artifacts, natural_key, to_bool, to_float, to_int
from gradinv.report.html import (
    Html,
    HtmlPage,
    element,
    image,
    join,
    key_value_table,
    paragraph,
    table,
)
from gradinv.report.plots import add_accuracy_axis_and_legend, figure_png, plot_privacy_utility, site_colors
from gradinv.sweep.analysis import (
    CRITERIA,
    GAUSSIAN,
    SWEEP_COLUMNS,
    Calibration,
    calibrate,
    format_sigma,
    rank_correlation,
    run_site_points,
    site_points,
    sort_rows,
)

REPORT_NAME = "sweep_report.html"
PRIVACY_UTILITY_PNG = "privacy_utility.png"
SSIM_PNG = "ssim_vs_sigma0.png"
EMPTY = "\u2014"


def write_sweep_report(out_dir: Path, outcomes: Sequence, meta) -> dict[str, Path]:
    """Write the plots and sweep_report.html under ``out_dir``; returns their paths by name."""
    out_dir = Path(out_dir)
    rows = [row for outcome in outcomes for row in outcome.rows]
    paths: dict[str, Path] = {}
    gaussian_rows = [r for r in rows if r.get("filter") == GAUSSIAN and to_float(r.get("sigma0")) is not None]
    plots: list[tuple[bytes, str]] = []
    if gaussian_rows:
        paths["plot (RDLV)"] = plot_privacy_utility(gaussian_rows, out_dir / PRIVACY_UTILITY_PNG)
        plots.append((paths["plot (RDLV)"].read_bytes(), "RDLV per site and test accuracy against \u03c30"))
        ssim_png = figure_png(ssim_utility_figure(gaussian_rows))
        (out_dir / SSIM_PNG).write_bytes(ssim_png)
        paths["plot (SSIM)"] = out_dir / SSIM_PNG
        plots.append((ssim_png, "SSIM per site and test accuracy against \u03c30"))

    page = HtmlPage("gradinv privacy\u2013utility sweep",
                    f"Leakage per site against the Gaussian filter's noise level \u03c30 "
                    f"\u2014 started {meta.started_at}")
    prior = _prior_description(outcomes)
    page.add_section("Summary", _summary(outcomes, meta, prior, rows))
    if plots:
        page.add_section("Privacy\u2013utility", _plots_section(plots, gaussian_rows, prior))
        page.add_section("Calibrated noise", _calibration_section(rows, meta))
    others = [o for o in outcomes if o.spec.filter != GAUSSIAN and o.rows]
    if others:
        page.add_section("NVFlare filters", _other_filters_section(others, rows))
    page.add_section("No-ground-truth score", _correlation_section(rows))
    page.add_section("Runs", _runs_section(outcomes, out_dir))
    page.add_section("All rows (sweep.csv)", _rows_table(rows))
    paths["report"] = page.write(out_dir / REPORT_NAME)
    return paths


# ---------------------------------------------------------------- plots


def ssim_utility_figure(rows: Sequence[Mapping[str, object]]) -> Figure:
    """Per site against σ0: mean SSIM over rounds (band: min–max of the rounds), the worst round's best-image SSIM
    (dotted), the visual line 0.5, and the final global test accuracy on a second axis."""
    per_site: dict[str, dict[float, list[Mapping[str, object]]]] = defaultdict(lambda: defaultdict(list))
    accuracy: dict[float, float] = {}
    for row in rows:
        sigma0 = to_float(row.get("sigma0"))
        if sigma0 is None:
            continue
        per_site[str(row.get("site", ""))][sigma0].append(row)
        value = to_float(row.get("test_accuracy"))
        if value is not None:
            accuracy[sigma0] = max(value, accuracy.get(sigma0, value))
    colors = site_colors(per_site)
    figure = Figure(figsize=(8.0, 4.8), layout="constrained")
    axes = figure.add_subplot()
    axes.axhline(VISIBLY_LEAKED_SSIM, color="#333333", linewidth=1.0, linestyle="--",
                 label=f"SSIM {VISIBLY_LEAKED_SSIM}: visibly leaked above")
    for site in sorted(per_site, key=natural_key):
        sigmas = sorted(per_site[site])
        means, lows, highs, bests = [], [], [], []
        for sigma0 in sigmas:
            ssims = [v for v in (to_float(r.get("ssim")) for r in per_site[site][sigma0]) if v is not None]
            best = [v for v in (to_float(r.get("ssim_max")) for r in per_site[site][sigma0]) if v is not None]
            means.append(sum(ssims) / len(ssims) if ssims else float("nan"))
            lows.append(min(ssims) if ssims else float("nan"))
            highs.append(max(ssims) if ssims else float("nan"))
            bests.append(max(best) if best else float("nan"))
        axes.plot(sigmas, means, marker="o", color=colors[site], label=site)
        axes.fill_between(sigmas, lows, highs, color=colors[site], alpha=0.15, linewidth=0)
        axes.plot(sigmas, bests, marker="^", linestyle=":", color=colors[site], alpha=0.8)
    low, high = axes.get_ylim()
    axes.set_ylim(min(low, 0.0), max(high, 1.0))
    axes.set_xlabel("noise level \u03c30")
    axes.set_ylabel("SSIM (mean over rounds; band: min\u2013max)")
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#555555", linestyle=":", marker="^"))
    labels.append("best image, worst round")
    add_accuracy_axis_and_legend(figure, axes, {"test accuracy": accuracy} if accuracy else {},
                                 "global test accuracy (final model)", handles, labels)
    axes.set_title("Reconstruction SSIM and utility against the noise level \u03c30")
    return figure


# ---------------------------------------------------------------- sections


def _preset_text(preset: object, model: object, resolution: object) -> str:
    """The preset's name; for ``auto`` with a registry model (every run of a sweep trains the same one), also what
    it picks for that model."""
    if preset != AUTO_PRESET or model not in MODEL_NAMES or not isinstance(resolution, int):
        return str(preset)
    return f"auto ({resolve_preset(AUTO_PRESET, build_model(model, resolution=resolution))} for {model})"


def _summary(outcomes: Sequence, meta, prior: str, rows: Sequence[Mapping[str, object]]) -> Html:
    settings = meta.settings
    training, attack = settings.get("training") or {}, settings.get("filter") or {}
    ok = sum(o.succeeded for o in outcomes)
    failed = [o for o in outcomes if not o.succeeded]
    prior_ssims = [v for v in (to_float(r.get("prior_ssim")) for r in rows) if v is not None]
    prior_text = prior
    if prior_ssims:
        prior_text += (f"; SSIM(prior, original) over the sweep's updates: mean "
                       f"{sum(prior_ssims) / len(prior_ssims):.3f}, range {min(prior_ssims):.3f}\u2013"
                       f"{max(prior_ssims):.3f}")
    grid = ", ".join(format_sigma(s) for s in meta.sigmas) if GAUSSIAN in meta.filters else "(no gaussian runs)"
    items = [
        ("Noise levels \u03c30 (gaussian grid)", grid),
        ("Filters", ", ".join(meta.filters)),
        ("Bisection runs (--calibrate)", ", ".join(format_sigma(s) for s in meta.bisection_runs)
         if meta.bisection_runs else ("none needed" if meta.calibrate else "not asked (no --calibrate)")),
        ("Runs", f"{len(outcomes)} ({ok} completed, {len(failed)} failed)"),
        ("Sites (images each)", ", ".join(f"{s}" for s in _site_images(rows)) or EMPTY),
        ("Rounds per run", settings.get("num_rounds")),
        ("Model / resolution", f"{settings.get('model')} / {settings.get('resolution')} px"),
        ("Client training", f"lr {training.get('lr')}, {training.get('epochs')} epoch(s), batch "
                            f"{training.get('batch_size') or 'all images'}, seed {training.get('seed')}"),
        ("Attack", f"preset {_preset_text(attack.get('preset'), settings.get('model'), settings.get('resolution'))}, "
                   f"overrides {attack.get('attack_overrides') or 'none'}; "
                   f"{meta.iterations_note}"),
        ("Gaussian noise seed", f"{settings.get('seed')} (the same seed for every \u03c30, mixed with the site name)"),
        ("Prior RDLV is relative to", prior_text),
        ("Wall time", f"{meta.wall_seconds:.0f} s ({meta.wall_seconds / 60:.1f} min)" + (
            f"; this invocation only: {sum(o.status == 'reused' for o in outcomes)} run(s) reused from an "
            f"earlier one (--resume), their own times are under Runs" if any(o.status == "reused" for o in outcomes)
            else "")),
        ("Machine load (1/5/15-min load average)",
         f"before {_load(meta.load_before)}, after {_load(meta.load_after)}, on {meta.cpu_count} CPUs"),
        ("Command", meta.command),
    ]
    notes = paragraph(
        "test_accuracy is each run's final global model on the server's test split (the max round of its "
        "global_metrics.csv). Every run repeats the same job with only the privacy filter changed; each \u03c30 is "
        "one run with one noise draw, so differences between neighbouring \u03c30 are partly chance.",
        css_class="note")
    body = key_value_table(items) + notes
    if failed:
        body += paragraph("Failed runs: " + "; ".join(f"{o.spec.describe()}: {o.message}" for o in failed),
                          css_class="warning")
    return body


def _plots_section(plots: Sequence[tuple[bytes, str]], rows: Sequence[Mapping[str, object]], prior: str) -> Html:
    figures = join(element("figure", image(png, caption, "plot") + element("figcaption", caption))
                   for png, caption in plots)
    explanation = paragraph(
        "RDLV = (SSIM(reconstruction, original) \u2212 SSIM(prior, original)) / SSIM(prior, original) depends on the "
        f"prior ({prior}). With a prior of low SSIM to the originals, RDLV is large even for reconstructions "
        f"nobody would recognise; read it with SSIM, whose visual line is {VISIBLY_LEAKED_SSIM} (clearly recognisable "
        f"at {VISIBLY_LEAKED_SSIM}, nothing "
        "recognisable below about 0.3). Lines: mean over the attacked rounds; bands: "
        "min\u2013max over rounds.", css_class="note")
    return element("div", figures, class_="plots") + explanation + _site_table(rows)


def _site_table(rows: Sequence[Mapping[str, object]]) -> Html:
    headers = ("\u03c30", "site", "images", "rounds", "RDLV mean", "RDLV worst round", "SSIM mean",
               "best-image SSIM, worst round", "leak_score mean", "test accuracy")
    body = []
    points = site_points(rows)
    for sigma0 in sorted({s for by_sigma in points.values() for s in by_sigma}):
        for site, by_sigma in points.items():
            point = by_sigma.get(sigma0)
            if point is None:
                continue
            body.append((format_sigma(sigma0), site, _text(point.num_images), point.rounds, _fmt(point.mean_rdlv),
                         _fmt(point.worst_rdlv), _fmt(point.mean_ssim), _fmt(point.worst_ssim_max),
                         _fmt(point.leak_score), _fmt(point.test_accuracy)))
    return element("h3", "Per site and \u03c30") + table(headers, body, numeric_columns=(0, 2, 3, 4, 5, 6, 7, 8, 9),
                                                        nowrap=True)


def _calibration_section(rows: Sequence[Mapping[str, object]], meta) -> Html:
    if meta.calibrate:
        method = (f"Grid values, then {meta.calibrate_steps} bisection round(s) between each site's last failing and "
                  f"first passing \u03c30 (--calibrate): {len(meta.bisection_runs)} extra run(s)"
                  + (f" at \u03c30 = {', '.join(format_sigma(s) for s in meta.bisection_runs)}."
                     if meta.bisection_runs else "."))
    else:
        method = ("Grid values only (no --calibrate): the calibrated \u03c30 is exact only to the grid spacing; "
                  "--calibrate refines it by bisection.")
    body = paragraph(
        "For each site, the smallest measured \u03c30 at which the site passes, with the final test accuracy at "
        "that \u03c30 against the accuracy at \u03c30 = 0 (cost = accuracy lost). Two criteria, reported separately:",
        css_class=None)
    body += element("ul", join(element("li", element("strong", name) + f": {text}") for name, text in CRITERIA.items()))
    body += paragraph(method + " Noise is random: a site may fail again at a larger \u03c30 (listed in remarks); "
                      "each point is a single run.", css_class="note")
    body += paragraph(f"These values hold for this attack ({meta.iterations_note}). A stronger attack (more "
                      "iterations, another preset) can reconstruct images at a \u03c30 where this one did not, so "
                      "read a calibrated \u03c30 as a lower bound on the noise needed, not as a guarantee.",
                      css_class="warning")
    for criterion, text in CRITERIA.items():
        results = calibrate(rows, criterion)
        body += element("h3", f"Criterion {criterion}: {text}")
        body += table(("site", "images", "calibrated \u03c30", "test accuracy there", "at \u03c30 = 0",
                       "accuracy cost (negative: gained)", "remarks"),
                      [_calibration_row(result, rows) for result in results],
                      numeric_columns=(1, 3, 4, 5), nowrap=True)
    return body


def _calibration_row(result: Calibration, rows: Sequence[Mapping[str, object]]) -> tuple:
    images = {str(r.get("site")): to_int(r.get("num_images")) for r in rows}
    remarks = []
    if result.failing_above:
        remarks.append("fails again at \u03c30 = " + ", ".join(format_sigma(s) for s in result.failing_above))
    if result.not_measured:
        remarks.append("not measured at \u03c30 = " + ", ".join(format_sigma(s) for s in result.not_measured))
    if result.baseline_accuracy is None:
        remarks.append("\u03c30 = 0 was not run: no baseline accuracy")
    unconverged = sum(r.get("filter") == GAUSSIAN and r.get("site") == result.site
                      and result.sigma0 is not None and to_float(r.get("sigma0")) == result.sigma0
                      and to_bool(r.get("converged")) is False for r in rows)
    if unconverged:
        remarks.append(f"the attack did not converge in {unconverged} update(s) at the calibrated \u03c30: "
                       "a pass there is no evidence of safety")
    return (result.site, _text(images.get(result.site)), result.verdict(), _fmt(result.accuracy),
            _fmt(result.baseline_accuracy), _fmt(result.accuracy_cost, signed=True), "; ".join(remarks) or EMPTY)


def _other_filters_section(outcomes: Sequence, rows: Sequence[Mapping[str, object]]) -> Html:
    baseline = site_points(rows).copy()
    headers = ("filter", "site", "images", "RDLV mean", "RDLV worst round", "SSIM mean",
               "best-image SSIM, worst round", "test accuracy", "gaussian \u03c30=0: RDLV mean / best SSIM / accuracy")
    body = []
    for outcome in outcomes:
        for site, point in run_site_points(outcome.rows).items():
            zero = baseline.get(site, {}).get(0.0)
            reference = (f"{_fmt(zero.mean_rdlv)} / {_fmt(zero.worst_ssim_max)} / {_fmt(zero.test_accuracy)}"
                         if zero else "not run")
            body.append((outcome.spec.filter, site, _text(point.num_images), _fmt(point.mean_rdlv),
                         _fmt(point.worst_rdlv), _fmt(point.mean_ssim), _fmt(point.worst_ssim_max),
                         _fmt(point.test_accuracy), reference))
    note = paragraph("NVFlare's PercentilePrivacy (truncation, not DP) and SVTPrivacy (sparse vector technique) at "
                     "their default settings; they have no noise level \u03c30, so they are not on the plots "
                     "(sigma0 is empty in sweep.csv).", css_class="note")
    return note + table(headers, body, numeric_columns=(2, 3, 4, 5, 6, 7), nowrap=True)


def _correlation_section(rows: Sequence[Mapping[str, object]]) -> Html:
    results = [rank_correlation(rows, "leak_score", "rdlv"), rank_correlation(rows, "leak_score", "ssim"),
               rank_correlation(rows, "leak_score", "ssim_max")]
    body = paragraph(
        "leak_score is what the filter can compute without ground truth ((1 \u2212 cosine distance of the "
        "replayed update) / (1 + BN residual) / images per step). Spearman's rank correlation with the true "
        "leakage over every sweep row (run \u00d7 site \u00d7 round) that has both values, all filters pooled; "
        "as measured, whatever it is. Rows are not independent (the same site and images recur across "
        "\u03c30 and rounds), so the p-value overstates the evidence.", css_class="note")
    body += element("ul", join(element("li", r.text()) for r in results))
    table_rows = [(f"leak_score vs {r.y}", r.n, EMPTY if r.rho is None else f"{r.rho:+.3f}",
                   EMPTY if r.p_value is None else f"{r.p_value:.3g}", r.note or EMPTY) for r in results]
    return body + table(("pair", "n", "Spearman \u03c1", "p-value", "note"), table_rows, numeric_columns=(1, 2, 3))


def _runs_section(outcomes: Sequence, out_dir: Path) -> Html:
    headers = ("run", "filter", "\u03c30", "origin", "status", "seconds", "final test accuracy (round)",
               "run report", "log", "message")
    body, classes = [], []
    for outcome in outcomes:
        report_link: object = EMPTY
        if outcome.gradinv_dir is not None and (outcome.gradinv_dir / "report.html").is_file():
            report_link = element("a", "report.html", href=_relative(outcome.gradinv_dir / "report.html", out_dir))
        log = outcome.workspace / "simulation.log"
        log_link: object = element("a", "simulation.log", href=_relative(log, out_dir)) if log.is_file() else EMPTY
        accuracy = next((r for r in outcome.rows if r.get("test_accuracy")), None)
        accuracy_text = f"{_fmt(to_float(accuracy['test_accuracy']))} ({accuracy.get('test_accuracy_round')})" \
            if accuracy else EMPTY
        body.append((outcome.spec.label, outcome.spec.filter, format_sigma(outcome.spec.sigma0) or EMPTY,
                     outcome.spec.origin, outcome.status,
                     EMPTY if outcome.seconds is None else f"{outcome.seconds:.0f}", accuracy_text, report_link,
                     log_link, outcome.message or EMPTY))
        classes.append(None if outcome.succeeded else "problem-row")
    return table(headers, body, row_classes=classes, numeric_columns=(2, 5, 6))


def _rows_table(rows: Sequence[Mapping[str, object]]) -> Html:
    columns = [c for c in SWEEP_COLUMNS if c != "run_dir"]
    body = [[_cell(row.get(c)) for c in columns] for row in sort_rows(rows)]
    text_columns = ("filter", "site", "status", "decision", "origin", "converged")
    numeric = [i for i, c in enumerate(columns) if c not in text_columns]
    return paragraph("The same rows as sweep.csv (run_dir left out here; see Runs).") + table(
        columns, body, numeric_columns=numeric, nowrap=True)


# ---------------------------------------------------------------- helpers


def _prior_description(outcomes: Sequence) -> str:
    """The prior each run's settings.json names (they should all agree)."""
    descriptions = []
    for outcome in outcomes:
        if outcome.gradinv_dir is None:
            continue
        try:
            settings = load_run_artifacts(outcome.gradinv_dir).settings or {}
        except Exception:  # noqa: BLE001 - a report must still be written
            continue
        text = settings.get("prior")
        if text and text not in descriptions:
            descriptions.append(str(text))
    return "; ".join(descriptions) if descriptions else "not recorded by the runs"


def _site_images(rows: Sequence[Mapping[str, object]]) -> list[str]:
    images: dict[str, int | None] = {}
    for row in rows:
        images.setdefault(str(row.get("site", "")), to_int(row.get("num_images")))
    return [f"{site} ({images[site]})" for site in sorted(images, key=natural_key)]


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _load(load) -> str:
    return "n/a" if not load else " / ".join(f"{v:.2f}" for v in load)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return EMPTY
    return f"{value:+.3f}" if signed else (f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}")


def _text(value: object) -> str:
    return EMPTY if value is None else str(value)


def _cell(value: object) -> str:
    number = to_float(value)
    if number is None or isinstance(value, str) and not _looks_numeric(value):
        return EMPTY if value in (None, "") else str(value)
    return f"{number:.4g}"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
