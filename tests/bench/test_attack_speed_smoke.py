"""Smoke test of the attack-speed benchmark: it runs end to end and its last line is the JSON contract.

No timing assertions: the figures depend on the machine and its load.
"""

import json
import subprocess
import sys
from pathlib import Path

from gradinv.cli import main

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "attack_speed.py"
RATIOS = ("iteration_over_training_pass", "reference_loop_over_gradinv")
MINIMAL = ["--resolution", "16", "--reps", "1", "--warmup", "0", "--inner", "1"]


def test_benchmark_script_prints_json_with_the_ratios_last():
    completed = subprocess.run([sys.executable, str(SCRIPT), *MINIMAL, "--num-images", "1,2"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    for key in RATIOS:
        assert summary[key] > 0
        assert isinstance(summary["pass"][key], bool)
    assert [case["num_images"] for case in summary["cases"]] == [1, 2]
    for case in summary["cases"]:
        assert case["batch_size"] == case["num_images"] and case["resolution"] == 16
        assert all(case[key] > 0 for key in RATIOS)
        assert case["same_math_max_rel_diff"] < 1e-4  # the reference-style loop optimises the same objective
    assert "PASS" in completed.stdout or "FAIL" in completed.stdout


def test_bench_case_command_prints_one_case_as_json(capsys):
    assert main(["bench-case", *MINIMAL, "--num-images", "2", "--batch-size", "1", "--keep-denormals"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_images"] == 2 and result["batch_size"] == 1 and result["local_steps"] == 2
    assert all(result[key] > 0 for key in RATIOS)
    assert result["same_math_max_rel_diff"] < 1e-4


def test_bench_case_rejects_bad_input_in_one_line(capsys):
    assert main(["bench-case", *MINIMAL, "--model", "nope"]) == 2
    error = capsys.readouterr().err
    assert "unknown model 'nope'" in error and "bn_cnn" in error and "Traceback" not in error
