"""Shared test settings: deterministic, CPU-only, small thread count (the CI machine has 2 cores)."""

import os

import pytest
import torch

os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "False")


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def datalists(tmp_path) -> str:
    """A folder of two sites' (empty) datalists, as a job's ``datalists`` setting names it: enough to build and
    export a job without reading any image."""
    folder = tmp_path / "datalists"
    folder.mkdir()
    for site in ("site-1", "site-2"):
        (folder / f"{site}.json").write_text("{}")
    return str(folder)
