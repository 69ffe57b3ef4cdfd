"""The leakage report of one FL run: ``<run_dir>/gradinv/`` → one self-contained ``report.html``.

Written for the people who decide whether a federation is safe to run (privacy officers, study leads),
so it leads with what was found and how to read it, then shows the evidence: each hospital's
originals beside what the server rebuilt from its updates, per round, with the numbers.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from gradinv import __version__
from gradinv.attack.presets import AUTO_PRESET
from gradinv.attack.scoring import CONVERGED_UPDATE_DISTANCE
from gradinv.metrics.evaluate import VISIBLY_LEAKED_SSIM
from gradinv.report.artifacts import (
    METRICS_COLUMNS,
    METRICS_CSV,
    TENSORBOARD_SUBDIR,
    RunArtifacts,
    SiteRoundArtifacts,
    find_gradinv_dir,
    load_run_artifacts,
    natural_key,
    to_bool,
    to_float,
    to_int,
)
from gradinv.report.html import (
    Html,
    HtmlPage,
    anchor_id,
    badge,
    element,
    image,
    join,
    key_value_table,
    paragraph,
    table,
)
from gradinv.report.plots import plot_metric_per_round, plot_test_accuracy

REPORT_FILENAME = "report.html"

EMPTY_CELL = "—"

# settings.json keys the summary quotes; the whole file is also shown in the settings section.
SETTING_MODE = "mode"
SETTING_PRIOR = "prior"  # the description of the prior image RDLV is relative to
SETTING_VERSION = "gradinv_version"
SETTING_PRESET = "preset"
SETTING_DEVICE = "device"

_MODE_EXPLANATIONS = {
    "gate": "gate: each update was attacked before aggregation; an update that crossed the blocking policy "
    "was blocked and contributed nothing to the global model.",
    "audit": "audit: updates were attacked in the background on copies; nothing was changed or blocked, "
    "the global model is exactly what it would have been without gradinv.",
}

_PER_IMAGE_COLUMNS = ("index", "reconstruction_index", "ssim", "psnr", "lpips", "rdlv", "label", "recovered_label")


def build_report(run_dir_or_gradinv_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the run's leakage report and return its path.

    Args:
        run_dir_or_gradinv_dir: the ``gradinv/`` folder, a run dir holding it, or any folder with exactly one
            ``gradinv/metrics.csv`` at most four levels down (simulator workspace, POC job download).
        out_path: where to write; defaults to ``<gradinv dir>/report.html``.

    The file is written with mode 0600: it embeds reconstructions of (potentially) patient images.

    Raises:
        GradinvError: no (or more than one) ``gradinv/metrics.csv`` was found.
    """
    gradinv_dir = find_gradinv_dir(run_dir_or_gradinv_dir)
    run = load_run_artifacts(gradinv_dir)
    page = HtmlPage(
        title="Gradient-inversion leakage report",
        subtitle=f"Run: {gradinv_dir.parent} · generated {datetime.now().astimezone():%Y-%m-%d %H:%M %Z} "
        f"by gradinv {__version__}",
    )
    page.add_section("Summary", _summary(run))
    if run.rows:
        page.add_section("Per-site overview", _site_overview(run))
        page.add_section("Plots", _plots(run))
        for site, site_rows in _rows_by_site(run.rows).items():
            page.add_section(f"{site}: originals and reconstructions", _site_reconstructions(run, site_rows),
                             section_id=anchor_id("site", site))
        page.add_section("Recovered labels", _recovered_labels(run))
        page.add_section(f"All metrics ({METRICS_CSV})", _metrics_table(run))
    page.add_section("Run settings", _settings(run))
    return page.write(Path(out_path) if out_path else gradinv_dir / REPORT_FILENAME)


# ---------------------------------------------------------------- summary


def _summary(run: RunArtifacts) -> Html:
    parts = [
        paragraph(
            "During this federated-learning run the server tried to rebuild each site's (hospital's) training "
            "images from the weight update that site shared, round by round: a gradient-inversion attack after "
            "Hatamizadeh et al., \u201cDo Gradient Inversion Attacks Make Federated Learning Unsafe?\u201d "
            "(IEEE TMI 2023). This report shows how much was recovered. It measures one attack: a stronger "
            "attack may recover more, so a low score is not a proof of safety."
        )
    ]
    if not run.rows:
        parts.append(paragraph(
            f"{METRICS_CSV} in {run.gradinv_dir} has no rows yet: no client update has been inverted. If the run "
            "is still going, build the report again later; if it has finished, look for "
            "GradInversionAggregatorFilter lines in the server's log.txt.", css_class="warning"))
    blocked = [row for row in run.rows if _is_blocked(row)]
    if blocked:
        parts.append(_boxed_list(f"{len(blocked)} update(s) blocked", "alert", [
            f"{_update_name(row)}" + (f": {row['reason']}" if row.get("reason") else "") for row in blocked]))
    problems = [row for row in run.rows if _status(row) != "ok"]
    if problems:
        parts.append(_boxed_list(f"{len(problems)} update(s) not fully measured", "warning", [
            f"{_update_name(row)}: status {_status(row) or 'missing'}"
            + (f" ({row['reason']})" if row.get("reason") else "") for row in problems]))
    unconverged = [row for row in run.rows if _not_converged(row)]
    if unconverged:
        parts.append(_boxed_list(
            f"{len(unconverged)} attack(s) did not converge", "warning",
            [f"{_update_name(row)}: update distance {_cell(row, 'update_distance')}" for row in unconverged],
            note="The attack found no images that reproduce these updates (final update distance above "
            f"{CONVERGED_UPDATE_DISTANCE:g}). Their scores measure how far this attack got, not what the updates "
            "hold: a low score here is not evidence that the site is safe, and a longer or stronger attack may "
            "recover more."))
    parts.append(key_value_table(_key_facts(run)))
    parts.append(_how_to_read())
    return join(parts)


def _boxed_list(title: str, tone: str, items: Sequence[str], note: str | None = None) -> Html:
    return element("div", join([element("strong", title), paragraph(note) if note else Html(""),
                                element("ul", join(element("li", i) for i in items))]), class_=tone)


def _update_name(row: Mapping[str, str]) -> str:
    return f"{row.get('site', '')}, round {row.get('round', '')}"


def _key_facts(run: RunArtifacts) -> list[tuple[str, object]]:
    settings = run.settings or {}
    rows = run.rows
    sites = sorted({row.get("site", "") for row in rows}, key=natural_key)
    rounds = sorted({r for r in (to_int(row.get("round")) for row in rows) if r is not None})
    mode = str(_lookup(settings, SETTING_MODE) or "")
    facts: list[tuple[str, object]] = [
        ("Run folder", str(run.gradinv_dir.parent)),
        ("Mode", _MODE_EXPLANATIONS.get(mode, mode) if mode else "not recorded in settings.json"),
        ("Prior used by RDLV", _prior_text(run)),
        ("Sites", ", ".join(sites) or EMPTY_CELL),
        ("Rounds inverted", _round_list(rounds)),
        ("Updates inverted", f"{sum(_status(row) == 'ok' for row in rows)} of {len(rows)} measured without problems"),
        ("Ground truth (audit)", "yes: SSIM, PSNR, LPIPS and RDLV against the real images"
         if _audited(rows) else "no: only the attacker-side diagnostics (update distance, BN residual, leak score) "
         "could be computed; SSIM/RDLV need the sites' images (the filter's audit configuration)"),
    ]
    verdicts = [to_bool(row.get("converged")) for row in rows]
    if any(verdict is not None for verdict in verdicts):
        facts.append((f"Attacks that converged (update distance \u2264 {CONVERGED_UPDATE_DISTANCE:g})",
                      f"{sum(verdict is True for verdict in verdicts)} of "
                      f"{sum(verdict is not None for verdict in verdicts)} attacked updates"))
    best = max(rows, key=lambda row: to_float(row.get("ssim_max")) or -1.0, default=None)
    if best is not None and to_float(best.get("ssim_max")) is not None:
        facts.append(("Best-reconstructed image", f"SSIM {_fmt(to_float(best.get('ssim_max')))} "
                      f"({best.get('site', '')}, round {best.get('round', '')})"))
    leaking = [row for row in rows if (to_float(row.get("visibly_leaked_fraction")) or 0.0) > 0.0]
    if _audited(rows):
        facts.append((f"Updates with a visibly leaked image (SSIM \u2265 {VISIBLY_LEAKED_SSIM})",
                      f"{len(leaking)} of {len(rows)}"
                      + (": " + ", ".join(f"{r.get('site', '')} r{r.get('round', '')}" for r in leaking)
                         if leaking else "")))
    accuracy = _test_accuracy_points(run)
    if accuracy:
        last_round, last_accuracy = accuracy[-1]
        facts.append(("Global test accuracy", f"{_fmt(last_accuracy)} after round {last_round} "
                      f"(best {_fmt(max(a for _, a in accuracy))})"))
    for label, key in (("Attack preset", SETTING_PRESET), ("Device", SETTING_DEVICE),
                       ("gradinv version (run)", SETTING_VERSION)):
        value = _lookup(settings, key)
        if key == SETTING_PRESET and value == AUTO_PRESET:  # resolved per model at the first update: rows name it
            used = sorted({str(row["preset"]) for row in rows if row.get("preset") not in (None, "", AUTO_PRESET)})
            value = f"{AUTO_PRESET} ({', '.join(used)})" if used else value
        if value not in (None, ""):
            facts.append((label, str(value)))
    if (run.gradinv_dir / TENSORBOARD_SUBDIR).is_dir():
        facts.append(("TensorBoard", element("code", f"tensorboard --logdir {run.gradinv_dir / TENSORBOARD_SUBDIR}")))
    return facts


def _how_to_read() -> Html:
    items = [
        f"SSIM (structural similarity, 1 = identical): at SSIM \u2265 {VISIBLY_LEAKED_SSIM} a reconstruction is "
        "clearly recognisable (\u201cvisibly leaked\u201d); below about 0.3 nothing is recognisable.",
        "RDLV = (SSIM(reconstruction, original) \u2212 SSIM(prior, original)) / SSIM(prior, original): how much "
        "closer to the patient image the attack got than the prior, an image the attacker has without any update. "
        "0 = no better than the prior, below 0 = worse than the prior, 1 = twice the prior's similarity.",
        "RDLV depends on the prior: with a poor prior (low SSIM to the originals) even an unrecognisable "
        "reconstruction scores a high RDLV, with a well-matched prior a recognisable one can score near 0. "
        "Read it together with SSIM, LPIPS and the visibly-leaked fraction.",
        "LPIPS (learned perceptual distance): 0 = identical, lower = more similar.",
        "Per update, ssim / rdlv / psnr / lpips are averages over the update's images; ssim_max / rdlv_max are the "
        "best-reconstructed single image. An average can hide one near-perfect reconstruction.",
        "visibly_leaked_fraction: the share of the update's images reconstructed at SSIM \u2265 "
        f"{VISIBLY_LEAKED_SSIM}. Empty cells (\u201c{EMPTY_CELL}\u201d) are metrics that could not be "
        "computed, e.g. without ground truth; they are never filled in.",
        "converged: whether the attack found images that reproduce the update (final cosine distance between the "
        f"replayed and the observed update \u2264 {CONVERGED_UPDATE_DISTANCE:g}); it needs no ground truth. An "
        "update marked \u201cnot converged\u201d was not explained by the attack: its low scores measure the "
        "attack's failure, not the site's safety. A converged attack with a low SSIM found other images that "
        "explain the update equally well (several images per step allow that); that is no proof of safety either.",
    ]
    return element("div", element("strong", "How to read the numbers")
                   + element("ul", join(element("li", item) for item in items)), class_="note")


def _prior_text(run: RunArtifacts) -> str:
    description = _lookup(run.settings or {}, SETTING_PRIOR)
    prior_ssims = [
        value for value in (to_float(_lookup(a.details or {}, "prior_ssim")) for a in _unique_site_rounds(run))
        if value is not None
    ]
    text = str(description) if description not in (None, "") else "not recorded in settings.json"
    if prior_ssims:
        text += (f"; SSIM(prior, original) mean {_fmt(sum(prior_ssims) / len(prior_ssims))}, "
                 f"range {_fmt(min(prior_ssims))}\u2013{_fmt(max(prior_ssims))}")
    return text


# ---------------------------------------------------------------- overview and plots


def _site_overview(run: RunArtifacts) -> Html:
    headers = ("site", "updates", "images", "mean SSIM", "best-image SSIM", "best-image RDLV",
               f"updates with an image at SSIM \u2265 {VISIBLY_LEAKED_SSIM}", "blocked", "not fully measured",
               "attack not converged")
    body, classes = [], []
    for site, rows in _rows_by_site(run.rows).items():
        ssims = [v for v in (to_float(r.get("ssim")) for r in rows) if v is not None]
        blocked = sum(_is_blocked(r) for r in rows)
        problems = sum(_status(r) != "ok" for r in rows)
        body.append((
            element("a", site, href=f"#{anchor_id('site', site)}"),
            len(rows),
            _fmt(max((v for v in (to_float(r.get("num_images")) for r in rows) if v is not None), default=None)),
            _fmt(sum(ssims) / len(ssims) if ssims else None),
            _fmt(_max_of(rows, "ssim_max")),
            _fmt(_max_of(rows, "rdlv_max")),
            sum((to_float(r.get("visibly_leaked_fraction")) or 0.0) > 0.0 for r in rows) if _audited(rows)
            else EMPTY_CELL,
            blocked,
            problems,
            sum(_not_converged(r) for r in rows),
        ))
        classes.append("block-row" if blocked else "problem-row" if problems else None)
    return join([table(headers, body, classes, numeric_columns=range(1, len(headers))),
                 paragraph("Blocked updates are shaded red, updates with errors or timeouts yellow. An attack that "
                           "did not converge says nothing about its site's safety.")])


def _plots(run: RunArtifacts) -> Html:
    rows = run.rows
    figures: list[Html] = []
    rdlv_png = plot_metric_per_round(rows, "rdlv", max_column="rdlv_max", title="RDLV per round",
                                     ylabel="RDLV", reference_y=0.0, reference_label="0 = no better than the prior")
    ssim_png = plot_metric_per_round(rows, "ssim", max_column="ssim_max", title="SSIM per round", ylabel="SSIM",
                                     reference_y=VISIBLY_LEAKED_SSIM, y_range=(0.0, 1.0),
                                     reference_label=f"visibly leaked (SSIM \u2265 {VISIBLY_LEAKED_SSIM})")
    notes: list[Html] = []
    for png, alt in ((rdlv_png, "RDLV per round per site"), (ssim_png, "SSIM per round per site")):
        if png:
            figures.append(image(png, alt, "plot"))
    if not rdlv_png:
        notes.append(paragraph("RDLV and SSIM were not computed for any update (no ground truth configured). "
                               "The attacker-side leak score is plotted instead; it is an estimate made without the "
                               "real images.", css_class="warning"))
        leak_png = plot_metric_per_round(rows, "leak_score", title="Leak score per round (no ground truth)",
                                         ylabel="leak score")
        if leak_png:
            figures.append(image(leak_png, "leak score per round per site", "plot"))
    accuracy_png = plot_test_accuracy(_test_accuracy_points(run))
    if accuracy_png:
        figures.append(image(accuracy_png, "global test accuracy per round", "plot"))
    else:
        notes.append(paragraph("No global_metrics.csv: test accuracy per round is not shown."))
    caption = paragraph("Solid lines: the average over an update's images; dotted: its best-reconstructed image. "
                        "Red rings mark blocked updates.")
    return join([*notes, element("div", join(figures), class_="plots"), caption])


# ---------------------------------------------------------------- per site and round


def _site_reconstructions(run: RunArtifacts, rows: Sequence[Mapping[str, str]]) -> Html:
    ordered = sorted(rows, key=lambda row: (to_int(row.get("round")) is None, to_int(row.get("round")) or 0))
    return join(_update_card(row, run.for_row(row)) for row in ordered)


def _update_card(row: Mapping[str, str], artifacts: SiteRoundArtifacts | None) -> Html:
    status = _status(row)
    blocked = _is_blocked(row)
    heading = element("h3", join([
        f"Round {row.get('round', '') or '?'} ",
        badge("BLOCKED", "bad") if blocked else badge("passed", "good") if row.get("decision") else Html(""),
        " ",
        Html("") if status == "ok" else badge(status or "no status", "warn"),
        " ",
        badge("not converged", "warn") if _not_converged(row) else Html(""),
    ]))
    reason = paragraph("Reason: ", row["reason"]) if row.get("reason") else Html("")
    details = artifacts.details if artifacts else None
    problem = artifacts.details_problem if artifacts else None
    unconverged = paragraph(
        f"Not converged: the attack's final update distance is {_cell(row, 'update_distance')} (converged at "
        f"\u2264 {CONVERGED_UPDATE_DISTANCE:g}). The reconstruction does not explain the update, so a low score "
        "here is not evidence that this site is safe.", css_class="warning") if _not_converged(row) else Html("")
    body = element("div", join([
        element("div", _grid_figure(row, artifacts)),
        element("div", key_value_table(_update_facts(row, details))),
    ]), class_="card-body")
    per_image = _per_image_table(details) if details else Html("")
    notes = paragraph(problem, css_class="warning") if problem else Html("")
    css = "card blocked" if blocked else "card problem" if status != "ok" else "card"
    card_id = anchor_id("update", row.get("site", ""), row.get("round", ""))
    return element("div", join([heading, reason, unconverged, notes, body, per_image]), class_=css, id=card_id)


def _grid_figure(row: Mapping[str, str], artifacts: SiteRoundArtifacts | None) -> Html:
    if artifacts is None or artifacts.grid_png is None:
        if artifacts is not None and artifacts.grid_problem:
            why = artifacts.grid_problem
        elif _status(row) != "ok":
            why = f"the attack did not finish (status {_status(row) or 'missing'})"
        else:
            why = "image saving is switched off, or the file was not written"
        return paragraph(f"No reconstruction image for this update: {why}.", css_class="note")
    png = artifacts.grid_png
    if _has_originals(row, artifacts.details):
        caption = ("Top row: the site's training images (originals). Bottom row: the reconstruction matched "
                   "to each original (one-to-one assignment by SSIM).")
    else:
        caption = ("Reconstructions only: no ground truth was configured for this update, so there are no "
                   "originals to compare with.")
    alt = f"reconstructions, {row.get('site', '')} round {row.get('round', '')}"
    return element("figure", image(png, alt, "grid", width_px=_display_width(png)) + element("figcaption", caption))


def _update_facts(row: Mapping[str, str], details: Mapping[str, object] | None) -> list[tuple[str, object]]:
    images = to_int(row.get("num_images"))
    fraction = to_float(row.get("visibly_leaked_fraction"))
    leaked = EMPTY_CELL
    if fraction is not None:
        leaked = f"{round(fraction * images)} of {images}" if images else _fmt(fraction)
    facts: list[tuple[str, object]] = [
        ("images / local steps", f"{_cell(row, 'num_images')} / {_cell(row, 'num_steps')}"),
        ("SSIM mean / best image", f"{_cell(row, 'ssim')} / {_cell(row, 'ssim_max')}"),
        ("RDLV mean / best image", f"{_cell(row, 'rdlv')} / {_cell(row, 'rdlv_max')}"),
        ("PSNR (dB) / LPIPS", f"{_cell(row, 'psnr')} / {_cell(row, 'lpips')}"),
        (f"visibly leaked (SSIM \u2265 {VISIBLY_LEAKED_SSIM})", leaked),
        ("label accuracy", _cell(row, "label_accuracy")),
        ("update distance / BN residual", f"{_cell(row, 'update_distance')} / {_cell(row, 'bn_residual')}"),
        ("attack converged", _converged_text(row)),
        ("leak score (no ground truth needed)", _cell(row, "leak_score")),
        ("iterations / seconds", f"{_cell(row, 'iterations')} / {_cell(row, 'seconds')}"),
    ]
    prior_ssim = to_float(_lookup(details, "prior_ssim")) if details else None
    if prior_ssim is not None:
        facts.append(("SSIM(prior, original)", _fmt(prior_ssim)))
    return facts


def _per_image_table(details: Mapping[str, object]) -> Html:
    per_image = _lookup(details, "per_image")
    if not isinstance(per_image, list) or not per_image:
        return Html("")
    headers = ("image", "matched reconstruction", "SSIM", "PSNR", "LPIPS", "RDLV", "label", "recovered label",
               "visibly leaked")
    body = []
    for entry in per_image:
        entry = entry if isinstance(entry, Mapping) else {}
        ssim = to_float(entry.get("ssim"))
        body.append([_fmt_value(entry.get(key)) for key in _PER_IMAGE_COLUMNS]
                    + ["yes" if ssim is not None and ssim >= VISIBLY_LEAKED_SSIM else "no" if ssim is not None
                       else EMPTY_CELL])
    return element("details", element("summary", f"Per image ({len(body)})")
                   + table(headers, body, numeric_columns=range(0, 6)), open="open")


# ---------------------------------------------------------------- labels, table, settings


def _recovered_labels(run: RunArtifacts) -> Html:
    body = []
    for row in sorted(run.rows, key=lambda r: (natural_key(r.get("site", "")), to_int(r.get("round")) or 0)):
        artifacts = run.for_row(row)
        details = artifacts.details if artifacts and artifacts.details else {}
        recovered, true = _lookup(details, "recovered_labels"), _lookup(details, "true_labels")
        if recovered is None and true is None and not row.get("label_accuracy"):
            continue
        body.append((row.get("site", ""), row.get("round", ""), _label_list(recovered), _label_list(true),
                     _cell(row, "label_accuracy")))
    if not body:
        return paragraph("No update recorded recovered labels (the per-update metrics.json files are missing "
                         "or hold none).", css_class="note")
    intro = paragraph("Labels the attack inferred from each update, beside the true labels when the run was "
                      "audited. Recovered labels alone already disclose, e.g., how many of a site's patients in "
                      "that round had the condition.")
    return join([intro, table(("site", "round", "recovered labels", "true labels", "label accuracy"), body,
                              numeric_columns=(1, 4))])


def _metrics_table(run: RunArtifacts) -> Html:
    columns = [c for c in METRICS_COLUMNS if c in run.columns] + [c for c in run.columns if c not in METRICS_COLUMNS]
    missing = [c for c in METRICS_COLUMNS if c not in run.columns]
    body = [[_cell(row, column) for column in columns] for row in run.rows]
    classes = ["block-row" if _is_blocked(row) else "problem-row" if _status(row) != "ok" or _not_converged(row)
               else None for row in run.rows]
    numeric = [i for i, column in enumerate(columns)
               if any(to_float(row.get(column)) is not None for row in run.rows)]
    parts = [paragraph(f"Every row of {run.gradinv_dir / METRICS_CSV}. Blocked updates are shaded red, "
                       f"updates with errors, timeouts or attacks that did not converge yellow; {EMPTY_CELL} = not "
                       "computed.")]
    if missing:
        parts.append(paragraph(f"{METRICS_CSV} lacks the columns: {', '.join(missing)}.", css_class="warning"))
    parts.append(table(columns, body, classes, numeric_columns=numeric, nowrap=True))
    return join(parts)


def _settings(run: RunArtifacts) -> Html:
    if run.settings is None:
        return paragraph(f"No run settings: {run.settings_problem}.", css_class="warning")
    return key_value_table((key, _fmt_value(value)) for key, value in _flatten(run.settings))


# ---------------------------------------------------------------- small helpers


def _rows_by_site(rows: Sequence[Mapping[str, str]]) -> dict[str, list[Mapping[str, str]]]:
    grouped: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row.get("site", ""), []).append(row)
    return {site: grouped[site] for site in sorted(grouped, key=natural_key)}


def _unique_site_rounds(run: RunArtifacts) -> list[SiteRoundArtifacts]:
    # a folder is indexed under both its folder name and the site recorded in it
    return list({id(a): a for a in run.site_rounds.values()}.values())


def _status(row: Mapping[str, str]) -> str:
    return row.get("status", "").strip().lower()


def _not_converged(row: Mapping[str, str]) -> bool:
    return to_bool(row.get("converged")) is False


def _converged_text(row: Mapping[str, str]) -> str:
    verdict = to_bool(row.get("converged"))
    if verdict is None:
        return EMPTY_CELL
    return "yes" if verdict else f"no: not converged (update distance {_cell(row, 'update_distance')})"


def _is_blocked(row: Mapping[str, str]) -> bool:
    return row.get("decision", "").strip().lower() == "block"


def _audited(rows: Sequence[Mapping[str, str]]) -> bool:
    return any(to_float(row.get("ssim")) is not None or to_float(row.get("ssim_max")) is not None for row in rows)


def _has_originals(row: Mapping[str, str], details: Mapping[str, object] | None) -> bool:
    return _audited([row]) or bool(details and _lookup(details, "true_labels") is not None)


def _max_of(rows: Sequence[Mapping[str, str]], column: str) -> float | None:
    return max((v for v in (to_float(r.get(column)) for r in rows) if v is not None), default=None)


def _test_accuracy_points(run: RunArtifacts) -> list[tuple[int, float]]:
    points = [(to_int(row.get("round")), to_float(row.get("test_accuracy"))) for row in run.global_metrics]
    return sorted((r, a) for r, a in points if r is not None and a is not None)


def _lookup(mapping: Mapping[str, object], key: str) -> object:
    """``mapping[key]`` at the top level, else one level down (settings.json nests the filter's constructor
    arguments; a metrics.json may group fields, e.g. under its ground-truth scores); ``None`` if absent."""
    if key in mapping:
        return mapping[key]
    for value in mapping.values():
        if isinstance(value, Mapping) and key in value:
            return value[key]
    return None


def _flatten(mapping: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def _round_list(rounds: Sequence[int]) -> str:
    return ", ".join(str(r) for r in rounds) if rounds else EMPTY_CELL


def _label_list(labels: object) -> str:
    if labels is None:
        return EMPTY_CELL
    if isinstance(labels, list):
        return ", ".join(_fmt_value(label) for label in labels) or EMPTY_CELL
    return str(labels)


def _cell(row: Mapping[str, str], column: str) -> str:
    """A metrics.csv cell for display: numbers shortened, empty cells as the em dash."""
    text = (row.get(column) or "").strip()
    if not text:
        return EMPTY_CELL
    number = to_float(text)
    if number is None or column in ("round", "site"):
        return text
    return _fmt(number)


def _fmt_value(value: object) -> str:
    """A JSON value for display."""
    if value is None or value == "":
        return EMPTY_CELL
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return _fmt(float(value))


def _fmt(value: float | None) -> str:
    """A number with as many digits as a reader needs: 0.623, -0.0612, 18.2, 2.31e-05."""
    if value is None:
        return EMPTY_CELL
    if float(value).is_integer():
        return str(int(value))
    magnitude = abs(value)
    if magnitude < 1e-3:
        return f"{value:.2e}"
    if magnitude < 0.1:
        return f"{value:.4f}".rstrip("0")
    if magnitude < 10:
        return f"{value:.3f}"
    if magnitude < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _display_width(png: bytes) -> int | None:
    """Integer upscaling so that small (32–64 px) reconstructions are big enough to judge, pixels kept sharp.

    At most 4×, and no larger than about 600 × 400 px, so a card stays on one screen.
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return None
    width, height = struct.unpack(">II", png[16:24])
    if width <= 0 or height <= 0:
        return None
    return width * max(1, min(4, 600 // width, 400 // height))
