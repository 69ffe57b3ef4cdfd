"""`gradinv data build` and `gradinv data datalists` through the real dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradinv.cli import main


def test_build_prints_location_and_counts(sample_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "build"]) == 0
    out = capsys.readouterr().out
    assert str(sample_dir) in out
    assert "train" in out and "mri 24, xray_ct 24" in out and "public" in out and "test" in out


def test_datalists_from_the_sample(sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "datalists", "--images-per-site", "1,2,4", "--out", str(tmp_path / "lists")]) == 0
    assert sorted(path.name for path in (tmp_path / "lists").iterdir()) == ["site-1.json", "site-2.json", "site-3.json"]
    assert "48 held-out images" in capsys.readouterr().out


def test_datalists_from_a_flat_folder_mentions_assigned_labels(flat_folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "datalists", "--source", str(flat_folder), "--images-per-site", "2,2",
                 "--out", str(tmp_path / "lists"), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "labels" in out and "assigned" in out
    site = json.loads((tmp_path / "lists" / "site-1.json").read_text())
    assert len(site["training"]) == 2 and len(site["test"]) == 2  # the 2 images the sites left over


def test_datalists_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["data", "datalists", "--source", str(tmp_path / "missing"), "--images-per-site", "1",
                 "--out", str(tmp_path / "lists")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradinv data datalists: error: ")
    assert "missing: not found" in lines[0]


def test_images_per_site_must_be_positive_integers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["data", "datalists", "--images-per-site", "1,x", "--out", str(tmp_path)])
    assert "positive integers" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, words", [
    ([], ["required", "--images-per-site", "--out"]),
    (["--images-per-site", "0", "--out", "x"], ["--images-per-site", "positive integers", "'0'"]),
    (["--images-per-site", "1", "--out", "x", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["--source", "", "--images-per-site", "1", "--out", "x"], ["--source", "empty path"]),
    (["--images-per-site", "1", "--out", ""], ["--out", "empty path"]),
    (["--images-per-site", "1", "--out", "x", "--cache", " "], ["--cache", "empty path"]),
])
def test_argument_errors_are_one_line_named_after_the_subcommand(arguments: list[str], words: list[str],
                                                                 capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["data", "datalists", *arguments])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradinv data datalists: error: ")
    for word in words:
        assert word in lines[0]


def test_a_closed_stdout_ends_quietly(flat_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code = main(["data", "datalists", "--source", str(flat_folder), "--images-per-site", "1",
                 "--out", str(tmp_path / "lists")])
    assert code == 141
    assert capsys.readouterr().err == ""
    assert (tmp_path / "lists" / "site-1.json").is_file()  # the files were written before the output failed
