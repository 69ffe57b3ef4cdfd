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
