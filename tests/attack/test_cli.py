"""``gradinv attack`` end to end, in process: real images in a folder built per test, the JSON contract,
private output files, and one-line errors (exit 2, no traceback) for every kind of bad input."""

import json
import stat

import numpy as np
import pytest
from PIL import Image
from skimage import data

from gradinv.cli import main

PICTURES = {"camera": data.camera, "moon": data.moon, "coins": data.coins}
METRICS = ("ssim", "psnr", "lpips", "rdlv", "label_accuracy")
SMALL = ["--resolution", "32", "--no-progress", "--threads", "1"]  # 1 thread: robust on a shared CPU


def _save(picture: str, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(PICTURES[picture]())).save(path)
    return path


@pytest.fixture
def flat_folder(tmp_path):
    """Three real grayscale pictures as PNGs in one folder (no labels: they are assigned)."""
    folder = tmp_path / "flat"
    for index, picture in enumerate(PICTURES):
        _save(picture, folder / f"{index:02d}_{picture}.png")
    return folder


@pytest.fixture
def class_folder(tmp_path):
    """Class subfolders: a/ holds one picture, b/ two (sorted listing: a's, then b's)."""
    folder = tmp_path / "classes"
    _save("camera", folder / "a" / "camera.png")
    _save("moon", folder / "b" / "moon.png")
    _save("coins", folder / "b" / "coins.png")
    return folder


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _private(path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_json_contract_files_and_a_leaked_single_image(flat_folder, tmp_path, capsys):
    out = tmp_path / "out" / "run"
    code = main(["attack", "--images", str(flat_folder), "--num-images", "1", "--iterations", "300",
                 "--out", str(out), "--json", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = _last_json(captured.out)

    for key in (*METRICS, "seconds", "iterations", "num_images", "per_image"):
        assert key in result
    assert result["num_images"] == 1 and result["iterations"] == 300 and result["seconds"] > 0
    assert result["batch_size"] == 1 and result["local_steps"] == 1 and result["preset"] == "fast"
    assert len(result["per_image"]) == 1
    for entry in result["per_image"]:
        assert set(METRICS) <= set(entry)
    # top level = mean over the images of the Hungarian pairs
    for key in METRICS:
        assert result[key] == pytest.approx(np.mean([entry[key] for entry in result["per_image"]]))
    assert result["ssim"] > 0.9  # one image, one full-batch step: the update gives the image away
    assert result["converged"] is True
    assert result["lpips"] is not None and result["rdlv"] is not None  # 32 px suffices for LPIPS; prior = sample mean
    assert result["labels"] == [0]  # flat folder: image i gets (i + seed) % 2

    grid, metrics = out / "reconstruction.png", out / "metrics.json"
    assert _private(grid) and _private(metrics)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert Image.open(grid).size[0] > 0
    written = json.loads(metrics.read_text())
    assert written["ssim"] == pytest.approx(result["ssim"])
    assert written["labels_known"] is False and "bundled public sample set mean" in written["prior"]
    assert written["recipe"]["batch_size"] == 1 and written["attack_config"]["iterations"] == 300
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "reconstruction.png"]


def test_class_folders_give_labels_and_multi_step_clients_run(class_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["attack", "--images", str(class_folder), "--num-images", "2", "--batch-size", "1", "--epochs", "2",
                 "--iterations", "20", "--lr", "0.005", "--seed", "3", "--out", str(out), "--json", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = _last_json(captured.out)
    assert result["num_images"] == 2 and result["local_steps"] == 4  # 2 epochs x 2 batches of 1
    # fast preset: K x min(N, 2) per run, 3 runs for N >= 2, then a 3 K polish (the labels differ: no exchanges)
    assert result["iterations"] == 3 * 40 + 60
    assert result["labels"] == [0, 1]  # a/camera, b/coins (sorted within the class folder)
    assert sorted(entry["index"] for entry in result["per_image"]) == [0, 1]
    assert all(entry["label_accuracy"] in (0.0, 1.0) for entry in result["per_image"])
    assert json.loads((out / "metrics.json").read_text())["labels_known"] is True


def test_a_time_budget_stops_the_attack_warns_with_the_budget_needed_and_reports_it(flat_folder, tmp_path, capsys,
                                                                                     caplog):
    # 5 s: room for the projection's measuring window (iterations 5-25) on a loaded CPU.
    code = main(["attack", "--images", str(flat_folder), "--iterations", "100000", "--time-budget", "5",
                 "--out", str(tmp_path / "out"), "--json", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = _last_json(captured.out)
    assert result["stopped"] == "time_budget" and result["time_budget_s"] == 5.0
    assert 0 < result["iterations"] < 100000 and result["converged"] is False
    # Projected from the first iterations' speed: far beyond the budget, and the warning names what would suffice.
    assert result["projected_seconds"] > 50
    assert "time budget is 5 s" in caplog.text and "--time-budget" in caplog.text
    assert "stopped early (time_budget)" in captured.err


def test_the_default_preset_follows_the_models_head(flat_folder, tmp_path, capsys):
    code = main(["attack", "--images", str(flat_folder), "--model", "resnet18_monai", "--iterations", "1",
                 "--out", str(tmp_path / "out"), "--json", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = _last_json(captured.out)
    assert result["preset"] == "gap"  # a global-average-pool head (bn_cnn's flatten head gets "fast", tested above)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["attack_config"]["bn_scale"] == "relative"


def test_human_summary_without_json_and_prior_option(flat_folder, tmp_path, capsys):
    prior = _save("moon", tmp_path / "prior.png")
    out = tmp_path / "out"
    assert main(["attack", "--images", str(flat_folder), "--iterations", "5", "--prior", str(prior),
                 "--out", str(out), *SMALL]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("client: 1 image(s), bn_cnn at 32 px")
    assert lines[1].endswith("(not converged: low scores are no evidence that nothing leaks)")  # 5 iterations
    assert lines[-1].startswith("wrote ")
    assert f"image: {prior}" in json.loads((out / "metrics.json").read_text())["prior"]


def _bad(tmp_path, flat_folder):
    """(arguments, words the one-line error must contain) for every kind of bad input."""
    empty = tmp_path / "empty"
    empty.mkdir()
    not_images = tmp_path / "notes"
    not_images.mkdir()
    (not_images / "readme.txt").write_text("no pictures here")
    broken = tmp_path / "broken"
    broken.mkdir()
    _save("camera", broken / "a.png")
    (broken / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    newline_name = tmp_path / "newline"
    newline_name.mkdir()
    (newline_name / "bad\nname.png").write_text("a text file with a newline in its name")
    nan_prior = tmp_path / "nan.tif"
    Image.fromarray(np.full((16, 16), np.nan, dtype=np.float32), mode="F").save(nan_prior)
    folder = str(flat_folder)
    return {
        "missing folder": (["--images", str(tmp_path / "nowhere")], ["nowhere", "not found"]),
        "empty folder": (["--images", str(empty)], ["empty"]),
        "only non-image files": (["--images", str(not_images)], ["readme.txt", "no images"]),
        "fewer images than N": (["--images", folder, "--num-images", "5"], ["holds 3 image(s)", "5"]),
        "unreadable image": (["--images", str(broken), "--num-images", "2"], ["b.png", "not a readable image"]),
        "N < 1": (["--images", folder, "--num-images", "0"], ["--num-images", "at least 1"]),
        "B < 1": (["--images", folder, "--batch-size", "0"], ["--batch-size", "at least 1"]),
        "E < 1": (["--images", folder, "--epochs", "0"], ["--epochs", "at least 1"]),
        "lr <= 0": (["--images", folder, "--lr", "-1"], ["--lr"]),
        "iterations < 1": (["--images", folder, "--iterations", "0"], ["--iterations"]),
        "unknown model": (["--images", folder, "--model", "vgg"], ["unknown model 'vgg'", "bn_cnn", "densenet121"]),
        "unknown preset": (["--images", folder, "--preset", "turbo"],
                           ["unknown preset 'turbo'", "fast", "paper", "gpu"]),
        "resolution not divisible": (["--images", folder, "--resolution", "30"],
                                     ["--resolution 30", "bn_cnn", "divisible"]),
        "resolution too small": (["--images", folder, "--resolution", "4"], ["--resolution", "at least 7"]),
        "resolution too small for the model": (["--images", folder, "--model", "resnet18", "--resolution", "8"],
                                               ["--resolution 8", "resnet18"]),
        "unreadable prior": (["--images", folder, "--prior", str(broken / "b.png")], ["--prior", "b.png"]),
        "out is a file": (["--images", folder, "--out", str(a_file)], ["--out", "not a folder"]),
        "no CUDA": (["--images", folder, "--device", "cuda:7"], ["--device"]),
        "not a device": (["--images", folder, "--device", "toaster"], ["--device", "toaster"]),
        "not a number": (["--images", folder, "--num-images", "two"], ["--num-images", "two"]),
        "unknown option": (["--images", folder, "--bogus", "1"], ["unrecognized arguments", "--bogus 1"]),
        "newline in a file name": (["--images", str(newline_name)], ["bad name.png", "not a readable image"]),
        "empty images path": (["--images", ""], ["--images", "empty path"]),
        "empty out path": (["--images", folder, "--out", ""], ["--out", "empty path"]),
        "empty prior path": (["--images", folder, "--prior", ""], ["--prior", "empty path"]),
        "out is the images folder": (["--images", folder, "--out", folder], ["--out", "inside --images", "outside"]),
        "out inside the images folder": (["--images", folder, "--out", str(flat_folder / "run")],
                                         ["run is inside --images", "reconstruction.png"]),
        "seed out of range": (["--images", folder, "--seed", str(2**63 - 1)], ["--seed", "-2147483648 to 2147483647"]),
        "resolution too large": (["--images", folder, "--resolution", "100000"], ["--resolution", "at most 1024"]),
        "unsupported device": (["--images", folder, "--device", "mps"],
                               ["--device 'mps'", "auto, cpu, cuda or cuda:N"]),
        "training diverged": (["--images", folder, "--lr", "1e30"], ["training diverged", "smaller --lr"]),
        "prior with NaN pixels": (["--images", folder, "--prior", str(nan_prior)], ["--prior", "nan.tif", "NaN"]),
        "prior folder without images": (["--images", folder, "--prior", str(empty)], ["--prior", "is empty"]),
        "time budget <= 0": (["--images", folder, "--time-budget", "0"], ["--time-budget", "positive"]),
        "time budget not finite": (["--images", folder, "--time-budget", "nan"], ["--time-budget", "nan"]),
    }


CASES = ["missing folder", "empty folder", "only non-image files", "fewer images than N", "unreadable image", "N < 1",
         "B < 1", "E < 1", "lr <= 0", "iterations < 1", "unknown model", "unknown preset", "resolution not divisible",
         "resolution too small", "resolution too small for the model", "unreadable prior", "out is a file", "no CUDA",
         "not a device", "not a number", "unknown option", "newline in a file name", "empty images path",
         "empty out path", "empty prior path", "out is the images folder", "out inside the images folder",
         "seed out of range", "resolution too large", "unsupported device", "training diverged",
         "prior with NaN pixels", "prior folder without images", "time budget <= 0", "time budget not finite"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2(case, flat_folder, tmp_path, capsys):
    arguments, words = _bad(tmp_path, flat_folder)[case]
    if case == "no CUDA":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    extra = [] if "--out" in arguments else ["--out", str(tmp_path / "out")]
    if "--iterations" not in arguments:
        extra += ["--iterations", "1"]  # should a check be missing, the run stays short and the test still fails
    try:
        code = main(["attack", *SMALL, *arguments, *extra])
    except SystemExit as exc:  # argparse's own parse errors exit directly
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gradinv attack: error: ")
    assert "Traceback" not in captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert captured.out == ""
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert sorted(path.name for path in flat_folder.iterdir()) == ["00_camera.png", "01_moon.png", "02_coins.png"]


def test_a_cuda_index_beyond_the_machines_devices_is_refused(monkeypatch):
    torch = pytest.importorskip("torch")
    from gradinv.cli.common import parse_device
    from gradinv.errors import GradinvError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert str(parse_device("cuda:1")) == "cuda:1" and str(parse_device("cuda")) == "cuda"
    with pytest.raises(GradinvError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        parse_device("cuda:2")
    assert str(parse_device("cpu")) == "cpu"


def test_every_bad_input_case_is_tested(flat_folder, tmp_path):
    assert sorted(_bad(tmp_path, flat_folder)) == sorted(CASES)
