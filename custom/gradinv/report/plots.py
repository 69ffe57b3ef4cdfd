"""Matplotlib plots for the run report and the sweep report, returned as PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` directly (Agg canvas), not through ``pyplot``:
no global backend switch, no figure registry to leak, and safe to call from the filter's worker
threads. Every plot takes rows as mappings of column name to cell (text from a CSV or numbers), so
metrics.csv rows and sweep.csv rows feed the same helpers.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gradinv.report.artifacts import natural_key, to_float, to_int

Row = Mapping[str, object]

# two plots side by side fit the report's content width
_FIGURE_SIZE = (5.3, 3.6)
_DPI = 100
_BLOCKED_COLOR = "#c62828"


def figure_png(figure: Figure) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def site_colors(sites: Iterable[str]) -> dict[str, str]:
    """A stable colour per site (matplotlib's tab10 cycle in natural site order)."""
    palette = [f"C{i}" for i in range(10)]
    return {site: palette[i % len(palette)] for i, site in enumerate(sorted(set(sites), key=natural_key))}


def plot_metric_per_round(
    rows: Sequence[Row],
    column: str,
    *,
    title: str,
    ylabel: str,
    reference_y: float | None = None,
    reference_label: str = "",
    max_column: str | None = None,
    y_range: tuple[float, float] | None = None,
) -> bytes | None:
    """One line per site of ``column`` against round, an optional horizontal reference line, blocked updates marked.

    ``max_column`` adds the per-update maximum as a dotted line in the site's colour (averages hide a single
    well-reconstructed image). ``y_range`` is the least the y axis shows (e.g. 0–1 for SSIM, so the reference
    line sits where a reader expects it); the reference line is always in view. Returns ``None`` when no row has
    a value in ``column``.
    """
    colors = site_colors(str(row.get("site", "")) for row in rows)
    figure = Figure(figsize=_FIGURE_SIZE, layout="constrained")
    axes = figure.add_subplot()
    if reference_y is not None:
        axes.axhline(reference_y, color="#333333", linewidth=1.0, linestyle="--")
    plotted_any = plotted_max = blocked_any = False
    for site, site_rows in _rows_by_site(rows).items():
        mean_points = _round_points(site_rows, column)
        if mean_points:
            axes.plot([p.round for p in mean_points], [p.value for p in mean_points], marker="o",
                      color=colors[site], label=site)
            plotted_any = True
        if max_column:
            max_points = _round_points(site_rows, max_column)
            if max_points:
                axes.plot([p.round for p in max_points], [p.value for p in max_points], marker="^",
                          linestyle=":", color=colors[site], alpha=0.8)
                plotted_max = True
        blocked_points = [
            point for point in _round_points(site_rows, column, max_column) if _is_blocked(point.row)
        ]
        if blocked_points:
            axes.scatter([p.round for p in blocked_points], [p.value for p in blocked_points], s=140,
                         facecolors="none", edgecolors=_BLOCKED_COLOR, linewidths=2.0, zorder=5)
            blocked_any = True
    if not plotted_any:
        return None
    low, high = axes.get_ylim()
    for must_show in ([*y_range] if y_range else []) + ([reference_y] if reference_y is not None else []):
        low, high = min(low, must_show), max(high, must_show)
    margin = 0.03 * (high - low or 1.0)
    axes.set_ylim(low - margin, high + margin)
    handles, labels = axes.get_legend_handles_labels()
    if reference_y is not None:
        handles.append(Line2D([], [], color="#333333", linestyle="--"))
        labels.append(reference_label)
    if plotted_max:
        handles.append(Line2D([], [], color="#555555", linestyle=":", marker="^"))
        labels.append("best image of the update")
    if blocked_any:
        handles.append(Line2D([], [], marker="o", markersize=11, markerfacecolor="none",
                              markeredgecolor=_BLOCKED_COLOR, markeredgewidth=2, linestyle="none"))
        labels.append("blocked update")
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    axes.set_title(title)
    axes.set_xlabel("round")
    axes.set_ylabel(ylabel)
    _round_axis(axes, [to_int(row.get("round")) for row in rows])
    axes.grid(alpha=0.3)
    return figure_png(figure)


def plot_test_accuracy(points: Sequence[tuple[int, float]]) -> bytes | None:
    """Global-model test accuracy against round; ``None`` when there are no points."""
    if not points:
        return None
    figure = Figure(figsize=_FIGURE_SIZE, layout="constrained")
    axes = figure.add_subplot()
    rounds, accuracies = zip(*sorted(points))
    axes.plot(rounds, accuracies, marker="o", color="#2e7d4f")
    axes.set_title("Global model test accuracy")
    axes.set_xlabel("round")
    axes.set_ylabel("test accuracy")
    _round_axis(axes, list(rounds))
    axes.grid(alpha=0.3)
    return figure_png(figure)


def privacy_utility_figure(rows: Sequence[Row]) -> Figure:
    """RDLV per site against the noise level σ0, with global test accuracy on a second axis.

    Rows are sweep.csv rows (``filter, sigma0, site, round, rdlv, test_accuracy, ...``). Per filter, site and
    σ0 the line is the mean RDLV over that site's inverted rounds, the band its min–max. The accuracy line is,
    per filter and σ0, the highest test accuracy among its rows; a sweep gives every row of a run that run's final
    global-model accuracy, so this is the final model's accuracy at that noise level. Rows
    without σ0 (filters that have no noise level) have no place on this axis and are left out.
    """
    rdlv_by_series: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    accuracy_by_filter: dict[str, dict[float, float]] = defaultdict(dict)
    for row in rows:
        sigma0 = to_float(row.get("sigma0"))
        if sigma0 is None:
            continue
        filter_name = str(row.get("filter", "") or "")
        rdlv = to_float(row.get("rdlv"))
        if rdlv is not None:
            rdlv_by_series[(filter_name, str(row.get("site", "")))][sigma0].append(rdlv)
        accuracy = to_float(row.get("test_accuracy"))
        if accuracy is not None:
            best = accuracy_by_filter[filter_name].get(sigma0)
            accuracy_by_filter[filter_name][sigma0] = accuracy if best is None else max(best, accuracy)

    several_filters = len({name for name, _ in rdlv_by_series} | set(accuracy_by_filter)) > 1
    colors = site_colors(site for _, site in rdlv_by_series)
    figure = Figure(figsize=(8.0, 4.8), layout="constrained")
    rdlv_axes = figure.add_subplot()
    rdlv_axes.axhline(0.0, color="#333333", linewidth=1.0, linestyle="--", label="RDLV 0 = no better than the prior")
    for (filter_name, site), by_sigma in sorted(rdlv_by_series.items(), key=lambda item: natural_key(item[0][1])):
        sigmas = sorted(by_sigma)
        values = [by_sigma[s] for s in sigmas]
        label = f"{site} ({filter_name})" if several_filters else site
        rdlv_axes.plot(sigmas, [sum(v) / len(v) for v in values], marker="o", color=colors[site], label=label)
        rdlv_axes.fill_between(sigmas, [min(v) for v in values], [max(v) for v in values], color=colors[site],
                               alpha=0.15, linewidth=0)
    rdlv_axes.set_xlabel("noise level σ0")
    rdlv_axes.set_ylabel("RDLV (mean over rounds; band: min–max)")
    rdlv_axes.grid(alpha=0.3)

    handles, labels = rdlv_axes.get_legend_handles_labels()
    accuracy_series = {f"test accuracy ({name})" if several_filters else "test accuracy": by_sigma
                       for name, by_sigma in sorted(accuracy_by_filter.items())}
    add_accuracy_axis_and_legend(figure, rdlv_axes, accuracy_series, "global-model test accuracy", handles, labels)
    rdlv_axes.set_title("Leakage (RDLV) and utility against the noise level σ0")
    return figure


def add_accuracy_axis_and_legend(figure: Figure, axes, accuracy_series: Mapping[str, Mapping[float, float]],
                                 ylabel: str, handles: list, labels: list[str]) -> None:
    """Plot test accuracy against σ0 on a second y axis of ``axes`` (one black line per labelled series; none
    when ``accuracy_series`` is empty) and put one legend for both axes, ``handles``/``labels`` first, below
    the figure."""
    if accuracy_series:
        accuracy_axes = axes.twinx()
        for label, by_sigma in accuracy_series.items():
            sigmas = sorted(by_sigma)
            accuracy_axes.plot(sigmas, [by_sigma[s] for s in sigmas], color="black", marker="s", linestyle="-.",
                               label=label)
        accuracy_axes.set_ylabel(ylabel)
        more_handles, more_labels = accuracy_axes.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small", frameon=False)


def plot_privacy_utility(rows: Sequence[Row], out_png: str | Path) -> Path:
    """Write :func:`privacy_utility_figure` of ``rows`` to ``out_png``; returns the path."""
    out_path = Path(out_png)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(figure_png(privacy_utility_figure(rows)))
    return out_path


class _RoundPoint(NamedTuple):
    """One plotted value with the row it came from (to mark blocked updates)."""

    round: int
    value: float
    row: Row


def _round_axis(axes: Axes, rounds: Sequence[int | None]) -> None:
    """Integer round ticks: each inverted round when there are few, otherwise evenly spaced integers.

    A lone round would otherwise get fractional ticks around it.
    """
    distinct = sorted({r for r in rounds if r is not None})
    if len(distinct) == 1:
        axes.set_xlim(distinct[0] - 1, distinct[0] + 1)
    if 0 < len(distinct) <= 12:
        axes.set_xticks(distinct)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _rows_by_site(rows: Sequence[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[str(row.get("site", ""))].append(row)
    return {site: grouped[site] for site in sorted(grouped, key=natural_key)}


def _round_points(rows: Sequence[Row], column: str, fallback_column: str | None = None) -> list[_RoundPoint]:
    """(round, value) of rows that have both, sorted by round; ``fallback_column`` fills an empty ``column``."""
    points = []
    for row in rows:
        round_number = to_int(row.get("round"))
        value = to_float(row.get(column))
        if value is None and fallback_column:
            value = to_float(row.get(fallback_column))
        if round_number is not None and value is not None:
            points.append(_RoundPoint(round_number, value, row))
    return sorted(points, key=lambda p: p.round)


def _is_blocked(row: Row) -> bool:
    return str(row.get("decision", "")).strip().lower() == "block"
