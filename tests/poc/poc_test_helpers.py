"""Helpers for the POC tests: run ``poc/poc.sh`` / ``poc/e2e.sh`` against one folder, and leak checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
POC_SH = REPO_ROOT / "poc" / "poc.sh"
E2E_SH = REPO_ROOT / "poc" / "e2e.sh"
HELPER = REPO_ROOT / "poc" / "poc_helper.py"
POC_PORT = 8002


def processes_mentioning(path: Path) -> list[str]:
    """``pid: command line`` of every process whose command line names ``path`` (read-only leak check).

    Every POC process (sub_start.sh daemons, server/client processes, job processes) carries its workspace
    path on its command line, and the path is unique to the test, so this finds leftovers of this test only.
    """
    needle = str(path) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()[:200]}")
    return found


def run_script(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a poc script in its own session; on timeout send SIGTERM to that session only (its traps then
    stop the POC), and give it a minute to do so before SIGKILL."""
    process = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, cwd=REPO_ROOT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the process group we created above, by its id
        try:
            output, _ = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"{' '.join(map(str, args[:3]))} ... did not finish within {timeout} s:\n{output[-6000:]}")
    print(output)  # shown by pytest for failing tests (and with -s)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


@dataclass
class Poc:
    """One POC under ``workdir``, driven through poc/poc.sh."""

    workdir: Path

    @property
    def project_dir(self) -> Path:
        return self.workdir / "nvflare" / "example_project" / "prod_00"

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = run_script(["bash", POC_SH, "--workdir", self.workdir, *args], timeout)
        if check and done.returncode != 0:
            pytest.fail(f"poc.sh {' '.join(args)} failed (rc {done.returncode}):\n{done.stdout[-6000:]}")
        return done

    def e2e(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return run_script(["bash", E2E_SH, "--workdir", self.workdir, *args], timeout)

    def results(self, job_id: str) -> Path:
        return self.workdir / "results" / job_id / "workspace"

    def last_job_id(self) -> str:
        for line in (self.workdir / "state" / "last_job.env").read_text().splitlines():
            if line.startswith("JOB_ID="):
                return line.split("=", 1)[1]
        raise AssertionError("no job id recorded")

    def live_pid_files(self) -> list[str]:
        """PID files whose process still runs (pid.fl / daemon_pid.fl of the server and every site)."""
        alive = []
        for pid_file in sorted(self.project_dir.glob("*/*pid.fl")):
            pid = pid_file.read_text().strip()
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(self.workdir) in cmdline:
                    alive.append(f"{pid_file.relative_to(self.workdir)}: {pid}")
        return alive


def nvflare_home_state() -> tuple | None:
    path = Path.home() / ".nvflare"
    if not path.exists():
        return None
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in [path, *path.rglob("*")]))


def require_free_port() -> None:
    """Fail (never skip) when port 8002 is taken: POC cannot run beside another server on it."""
    done = subprocess.run([sys.executable, str(HELPER), "port-check", "--port", str(POC_PORT)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(done.stderr.strip() or f"port {POC_PORT} is busy")
