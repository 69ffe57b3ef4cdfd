"""The run report: self-contained, complete, private, and usable on partial or odd runs."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gradinv.cli import main as gradinv_main
from gradinv.errors import GradinvError
from gradinv.report import build_report
from gradinv.report.artifacts import METRICS_COLUMNS
from gradinv.report.html import png_data_uri

SITES = ("site-1", "site-2")  # the synthetic run of conftest.py
ROUNDS = (0, 1)

def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert all(source.startswith("data:") for source in re.findall(r'src="([^"]*)"', page))
    assert "url(" not in page  # no CSS fetches either


def test_report_is_self_contained_complete_and_private(run_dir: Path) -> None:
    path = build_report(run_dir)

    assert path == run_dir / "gradinv" / "report.html"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    for site in SITES:
        for round_number in ROUNDS:
            assert f'id="update-{site}-{round_number}"' in page
    assert "BLOCKED" in page and "ssim_max 0.5 &gt;= block threshold 0.5" in page
    assert 'class="card blocked"' in page and "block-row" in page
    assert "RuntimeError: inversion diverged" in page and "problem-row" in page
    assert "mean of 10 held-out chest X-rays (64 px)" in page  # the prior RDLV used
    # plots: RDLV, SSIM, test accuracy; grids: the three updates that wrote one
    assert page.count('class="plot"') == 3
    assert page.count('class="grid"') == 3
    grid_png = (run_dir / "gradinv" / "round_000" / "site-2" / "reconstruction.png").read_bytes()
    assert png_data_uri(grid_png) in page
    assert page.count("<tr") >= 1 + 2 * len(ROUNDS)  # the metrics table has every row
    assert "—" in page  # empty metric cells of the failed update


def test_out_path_and_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elsewhere" / "leakage.html"
    assert gradinv_main(["report", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not (run_dir / "gradinv" / "report.html").exists()


def test_poc_download_layout_is_found(tmp_path: Path, make_gradinv_dir) -> None:
    download = tmp_path / "download"
    gradinv_dir = make_gradinv_dir(download / "a1b2c3-job" / "workspace" / "gradinv")

    assert build_report(download) == gradinv_dir / "report.html"
    assert build_report(gradinv_dir) == gradinv_dir / "report.html"


def test_missing_metrics_names_the_folder_and_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run" / "gradinv").mkdir(parents=True)
    with pytest.raises(GradinvError, match=re.escape(str(tmp_path / "run"))) as error:
        build_report(tmp_path / "run")
    assert "metrics.csv" in str(error.value) and "nvflare job download" in str(error.value)

    assert gradinv_main(["report", str(tmp_path / "run")]) == 2
    assert "gradinv report: error: no gradinv/metrics.csv" in capsys.readouterr().err


def test_several_runs_below_the_folder_are_listed(tmp_path: Path, make_gradinv_dir) -> None:
    first = make_gradinv_dir(tmp_path / "job-a" / "workspace" / "gradinv")
    second = make_gradinv_dir(tmp_path / "job-b" / "workspace" / "gradinv")
    with pytest.raises(GradinvError, match="several gradinv runs") as error:
        build_report(tmp_path)
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_empty_metrics_without_settings_or_images_still_reports(tmp_path: Path) -> None:
    gradinv_dir = tmp_path / "gradinv"
    gradinv_dir.mkdir()
    (gradinv_dir / "metrics.csv").write_text(",".join(METRICS_COLUMNS) + "\n")

    page = build_report(gradinv_dir).read_text(encoding="utf-8")

    assert "has no rows yet" in page
    assert "settings.json not found" in page
    assert_self_contained(page)


def test_reconstructions_without_ground_truth_or_image_files(run_dir: Path) -> None:
    gradinv_dir = run_dir / "gradinv"
    for png in gradinv_dir.glob("round_*/*/reconstruction.png"):
        png.unlink()
    lines = (gradinv_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    blank = {header.index(c) for c in ("ssim", "psnr", "lpips", "rdlv", "rdlv_max", "ssim_max",
                                       "visibly_leaked_fraction", "label_accuracy")}
    rows = [",".join("" if i in blank else cell for i, cell in enumerate(line.split(","))) for line in lines[1:]]
    (gradinv_dir / "metrics.csv").write_text("\n".join([lines[0], *rows]) + "\n")

    page = build_report(run_dir).read_text(encoding="utf-8")

    assert "No reconstruction image for this update: image saving is switched off" in page
    assert "RDLV and SSIM were not computed" in page and 'alt="leak score per round per site"' in page


def test_client_controlled_text_is_escaped(tmp_path: Path) -> None:
    gradinv_dir = tmp_path / "gradinv"
    gradinv_dir.mkdir()
    header = ",".join(METRICS_COLUMNS)
    cells = {c: "" for c in METRICS_COLUMNS}
    cells.update(round="0", site="<script>alert(1)</script>", status="invalid", decision="pass",
                 reason='"><img src=x onerror=alert(1)>')
    (gradinv_dir / "metrics.csv").write_text(header + "\n" + ",".join(cells[c] for c in METRICS_COLUMNS) + "\n")

    page = build_report(gradinv_dir).read_text(encoding="utf-8")

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert_self_contained(page)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_renders_the_report_offline(run_dir: Path, tmp_path: Path) -> None:
    report = build_report(run_dir)
    screenshot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={screenshot}", "--window-size=1280,2000", report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_an_attack_that_did_not_converge_is_marked_and_its_low_score_not_read_as_safe(run_dir: Path) -> None:
    page = build_report(run_dir).read_text(encoding="utf-8")

    summary = page[:page.index('id="per-site-overview"')]
    assert "1 attack(s) did not converge" in summary and "site-2, round 0: update distance 0.640" in summary
    assert "a low score here is not evidence that the site is safe" in summary
    assert "2 of 3 attacked updates" in summary  # the failed update has no verdict
    card = page[page.index('id="update-site-2-0"'):page.index('id="update-site-2-1"')]
    assert 'class="badge warn">not converged' in card and "not evidence that this site is safe" in card
    assert "no: not converged (update distance 0.640)" in card
    assert page.count('class="badge warn">not converged') == 1


def test_an_auto_preset_is_shown_with_the_presets_the_rows_used(run_dir: Path) -> None:
    settings_path = run_dir / "gradinv" / "settings.json"
    settings = json.loads(settings_path.read_text())
    settings_path.write_text(json.dumps({**settings, "preset": "auto"}))
    metrics = run_dir / "gradinv" / "metrics.csv"
    metrics.write_text(metrics.read_text().replace("cpu-fast", "gap"))
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "auto (gap)" in page
