"""Smoke test of the attack-quality benchmark: it builds its cases from the bundled test split, runs the real
``gradinv attack`` command on them and ends with the JSON contract. No quality assertions: 5 iterations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "attack_quality.py"


def test_quality_benchmark_runs_each_kind_and_prints_json_last():
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--cases", "1", "--seeds", "0", "--iterations", "5", "--threads", "1"],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"single", "pair-mixed", "pair-same", "runs_detail"}
    kinds = {run["kind"]: run for run in summary["runs_detail"]}
    assert len(kinds["single"]["per_image_ssim"]) == 1
    assert len(kinds["pair-mixed"]["per_image_ssim"]) == 2 and len(kinds["pair-same"]["per_image_ssim"]) == 2
    # The flat folder's documented rule gives a mixed pair labels 0 and 1; a class folder gives one label.
    assert kinds["pair-mixed"]["labels"] == [0, 1]
    assert len(set(kinds["pair-same"]["labels"])) == 1
    for kind in ("single", "pair-mixed", "pair-same"):
        assert isinstance(summary[kind]["pass"], bool) and 0 <= summary[kind]["ssim_mean"] <= 1
    assert "PASS" in completed.stdout or "FAIL" in completed.stdout


def test_quality_benchmark_rejects_an_unknown_kind():
    completed = subprocess.run([sys.executable, str(SCRIPT), "--kinds", "triple"], capture_output=True, text=True)
    assert completed.returncode == 2 and "unknown kind" in completed.stderr


def test_quality_benchmark_runs_on_images_the_sample_set_does_not_use():
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--images-from", "other", "--cases", "1", "--seeds", "0", "--iterations", "5",
         "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["images_from"] == "other"
    kinds = {run["kind"]: run for run in summary["runs_detail"]}
    assert set(kinds) == {"single", "pair-mixed", "pair-same"}
    assert kinds["pair-mixed"]["labels"] == [0, 1] and len(set(kinds["pair-same"]["labels"])) == 1
    assert "fundus" in kinds["pair-same"]["case"]


def test_quality_benchmark_multi_image_kinds_use_class_folders_and_several_steps():
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--kinds", "four-b4-4cls,eight-b4-2cls", "--cases", "1", "--seeds", "0",
         "--iterations", "3", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    kinds = {run["kind"]: run for run in summary["runs_detail"]}
    assert set(kinds) == {"four-b4-4cls", "eight-b4-2cls"}
    # Four classes, four images: one of each; two classes, eight images: four of each.
    assert kinds["four-b4-4cls"]["labels"] == [0, 1, 2, 3]
    assert kinds["eight-b4-2cls"]["labels"] == [0] * 4 + [1] * 4
    assert summary["four-b4-4cls"]["pass"] is None  # measured, no target
    assert isinstance(summary["eight-b4-2cls"]["pass"], bool) and summary["eight-b4-2cls"]["ssim_target"] == 0.5


def test_quality_benchmark_runs_another_registry_model_within_its_time_budget():
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "resnet18_monai", "--resolution", "32", "--kinds", "single",
         "--cases", "1", "--seeds", "0", "--iterations", "2", "--threads", "1"], capture_output=True, text=True,
        timeout=600)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (summary["model"], summary["resolution"], summary["time_budget_s"]) == ("resnet18_monai", 32, 600.0)
    (run,) = summary["runs_detail"]
    assert run["preset"] == "gap" and run["iterations"] == 2  # the global-average-pool head's preset
    assert 0 <= run["update_distance"] <= 2 and run["converged"] is False
    # The target on these models: one image at SSIM >= 0.6 within the time budget.
    assert summary["single"]["ssim_target"] == 0.6 and summary["single"]["pass"] is False
    assert "update distance mean" in completed.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--model", "vgg"], "unknown --model 'vgg'"),
    (["--model", "resnet18_monai", "--kinds", "rgb"], "the rgb kind attacks the example job's own model"),
    (["--time-budget", "0"], "--time-budget must be a positive number"),
])
def test_quality_benchmark_rejects_bad_model_options(arguments, message):
    completed = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True)
    assert completed.returncode == 2 and message in completed.stderr
