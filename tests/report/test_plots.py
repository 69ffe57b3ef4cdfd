"""Plot helpers shared by the run report and the sweep report."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradinv.report import plot_metric_per_round, plot_privacy_utility, privacy_utility_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sweep_rows() -> list[dict[str, str]]:
    """sweep.csv-like rows (text cells): two sites, three noise levels, two rounds, plus a filter without σ0."""
    rows = []
    for sigma0, accuracy in (("0", "0.96"), ("10", "0.95"), ("50", "0.88")):
        for site, leak in (("site-9", 0.6), ("site-1", -0.05)):
            for round_number in ("20", "40"):
                rdlv = leak - float(sigma0) / 50 + (0.05 if round_number == "40" else 0.0)
                rows.append({"filter": "gaussian", "sigma0": sigma0, "site": site, "round": round_number,
                             "num_images": "1", "rdlv": f"{rdlv:.3f}", "ssim": "", "lpips": "",
                             "test_accuracy": accuracy})
    rows.append({"filter": "percentile", "sigma0": "", "site": "site-9", "round": "20", "rdlv": "0.3",
                 "test_accuracy": "0.9"})
    return rows


def test_privacy_utility_plot_has_rdlv_per_site_and_accuracy_axis(tmp_path: Path) -> None:
    figure = privacy_utility_figure(sweep_rows())
    rdlv_axes, accuracy_axes = figure.axes
    site_lines = {line.get_label(): line for line in rdlv_axes.get_lines() if line.get_label().startswith("site")}
    assert set(site_lines) == {"site-1", "site-9"}  # one filter with σ0: labels without the filter name
    assert list(site_lines["site-9"].get_xdata()) == [0.0, 10.0, 50.0]
    assert site_lines["site-9"].get_ydata()[0] == pytest.approx((0.6 + 0.65) / 2)  # mean over rounds
    (accuracy_line,) = accuracy_axes.get_lines()
    assert list(accuracy_line.get_ydata()) == [0.96, 0.95, 0.88]

    out = plot_privacy_utility(sweep_rows(), tmp_path / "plots" / "privacy_utility.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_metric_per_round_is_none_without_values() -> None:
    rows = [{"site": "site-1", "round": "0", "rdlv": ""}]
    assert plot_metric_per_round(rows, "rdlv", title="RDLV", ylabel="RDLV", reference_y=0.0) is None
    rows[0]["rdlv"] = "0.4"
    png = plot_metric_per_round(rows, "rdlv", title="RDLV", ylabel="RDLV", reference_y=0.0)
    assert png is not None and png[:8] == PNG_SIGNATURE
