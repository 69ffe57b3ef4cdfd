"""Fixtures for the POC tests: drive ``poc/poc.sh`` / ``poc/e2e.sh`` in a private folder under tmp_path.

Whatever a test does, the fixture stops the POC it started (through NVFlare, then by the PIDs in the
daemon_pid.fl / pid.fl files: poc.sh never kills by name), deletes its folder, and fails the test if a
process of that POC is still running or if the user's ~/.nvflare was touched.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .poc_test_helpers import Poc, nvflare_home_state, processes_mentioning, require_free_port


@pytest.fixture
def poc(tmp_path: Path):
    """A POC folder under tmp_path, torn down (stop + clean + leak checks) whatever the test did."""
    require_free_port()
    home_before = nvflare_home_state()
    workdir = tmp_path / "poc"
    instance = Poc(workdir)
    yield instance
    problems = []
    if workdir.exists():
        stop = instance.run("stop", timeout=300, check=False)
        if stop.returncode != 0:
            problems.append(f"poc.sh stop failed:\n{stop.stdout[-3000:]}")
        live = instance.live_pid_files()
        if live:
            problems.append(f"processes still running from the PID files: {live}")
        clean = instance.run("clean", timeout=300, check=False)
        if clean.returncode != 0:
            problems.append(f"poc.sh clean failed:\n{clean.stdout[-3000:]}")
    time.sleep(1)
    leftovers = processes_mentioning(workdir)
    if leftovers:
        problems.append("POC processes left running:\n" + "\n".join(leftovers))
    if nvflare_home_state() != home_before:
        problems.append(f"{Path.home() / '.nvflare'} changed during the test: POC was not isolated")
    if problems:
        pytest.fail("POC teardown: " + "\n".join(problems))
