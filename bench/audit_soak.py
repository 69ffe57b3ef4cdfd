#!/usr/bin/env python
"""Audit mode under load: a simulator run of many rounds x sites with an attack slower than a round.

Two runs of the same FedAvg job (``gradinv.fl.job``) in fresh processes, one with the filter in ``audit`` mode
(spilling beyond ``--max-pending`` updates, draining for ``--drain-timeout`` s at the end) and one without it. Each
run reports its server process's peak RSS (the simulator runs the server in a child process, the clients in further
processes; the peak is that process's VmHWM, Linux only, sampled every 0.5 s) and its mean round time (between the
first and last round's start, from the server's log). The last line is JSON: peak RSS of both, the model size, the
spill size, the audit run's rows by status (every update must have exactly one), the round-time ratio
audit / no filter (goal <= 1.1) and how long the filter held each result on FedAvg's path.

Not a test (minutes of CPU): ``python bench/audit_soak.py [--rounds 20 --sites 4 ...]``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) ")
_ROUND_START = re.compile(r"^\s*Round (\d+) started")
_RESULT_IN = re.compile(r"got result from client (\S+) for task")
_QUEUED = re.compile(r"gradinv: round \d+ (\S+): queued for a background attack after ([\d.]+) s in the filter")


def _one_run(args: argparse.Namespace) -> dict:
    """One job in this process; returns its measurements."""
    import torch

    from gradinv.fl.filter import GradInversionAggregatorFilter
    from gradinv.fl.job import JobSettings, build_recipe

    torch.set_num_threads(1)
    settings = JobSettings(name=f"soak_{args.one}", images_per_site=(2,) * args.sites, num_rounds=args.rounds,
                           model=args.model, resolution=args.resolution, attack=False)
    recipe, sites = build_recipe(settings)
    if args.one == "audit":
        recipe.add_server_input_filter(
            GradInversionAggregatorFilter(
                mode="audit", attack_overrides={"iterations": args.iterations}, audit_max_pending=args.max_pending,
                drain_timeout_s=args.drain_timeout, audit_workers=args.workers, num_threads=1, progress=False,
                report=False, time_budget_s=600.0,
            ),
            tasks=["train"],
        )
    from nvflare.recipe import SimEnv

    workspace = Path(args.workspace)
    peaks: dict[int, int] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_server_peak, args=(peaks, done), daemon=True)
    watcher.start()
    started = time.monotonic()
    recipe.execute(SimEnv(clients=sites, num_threads=len(sites), workspace_root=str(workspace)))
    wall = time.monotonic() - started
    done.set()
    watcher.join()
    run_dir = workspace / settings.name / "server" / "simulate_job"
    model_bytes = sum(p.numel() * p.element_size() for p in _model(settings).state_dict().values())
    result = {"peak_rss_mb": max(peaks.values(), default=0) / 1024, "wall_s": wall,
              "round_s": _mean_round_seconds(workspace), "model_mb": model_bytes / 2**20,
              **_filter_hold_seconds(workspace)}
    out_dir = run_dir / "gradinv"
    if out_dir.exists():
        with open(out_dir / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        result["rows_by_status"] = dict(collections.Counter(row["status"] for row in rows))
        result["updates_with_one_row"] = len({(r["round"], r["site"]) for r in rows}) == len(rows)
        result["rows"] = len(rows)
        result["spill_mb"] = sum(p.stat().st_size for p in (out_dir / "pending").glob("*")) / 2**20
    return result


def _watch_server_peak(peaks: dict[int, int], done: threading.Event) -> None:
    """Peak RSS (VmHWM, kB) of the simulator's server process: the simulator process that is no client worker.

    The simulator runs the server (and the filter) in a child process of the caller, so the caller's own rusage
    would miss it; the largest of the simulator's non-worker processes is the server (the others are launchers).
    """
    import psutil

    me = psutil.Process()
    while not done.wait(0.5):
        for process in me.children(recursive=True):
            try:
                command = " ".join(process.cmdline())
                if "simulator" not in command or "simulator_worker" in command:
                    continue
                status = Path(f"/proc/{process.pid}/status").read_text()
            except (psutil.Error, OSError):
                continue
            hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
            if hwm:
                peaks[process.pid] = max(peaks.get(process.pid, 0), int(hwm[1]))


def _model(settings):
    from gradinv.fl.job import _initial_model

    return _initial_model(settings)


def _server_log(workspace: Path):
    """(time stamp of the record, line) for every line of the server's log; continuation lines get their record's."""
    last_stamp = None
    for log in workspace.glob("*/server/log.txt"):
        for line in log.read_text(errors="replace").splitlines():
            stamp = _TIMESTAMP.match(line)
            if stamp:
                last_stamp = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f")
            if last_stamp is not None:
                yield last_stamp, line


def _mean_round_seconds(workspace: Path) -> float | None:
    """From the server's log: FedAvg logs a time-stamped record whose message's last line is "Round N started"."""
    starts: dict[int, datetime] = {}
    for stamp, line in _server_log(workspace):
        match = _ROUND_START.match(line)
        if match:
            starts.setdefault(int(match[1]), stamp)
    if len(starts) < 2:
        return None
    first, last = min(starts), max(starts)
    return (starts[last] - starts[first]).total_seconds() / (last - first)


def _filter_hold_seconds(workspace: Path) -> dict[str, float | None]:
    """How long the filter holds each result on FedAvg's path (audit mode; None without the filter): the mean time
    from the server's "got result from client X" to the filter's "X: queued" (``filter_hold_s``), and the mean and
    largest time the filter itself reports in that line (``filter_own_s``, ``filter_own_max_s``)."""
    received: dict[str, datetime] = {}
    holds, own = [], []
    for stamp, line in _server_log(workspace):
        if match := _RESULT_IN.search(line):
            received[match[1]] = stamp
        elif (match := _QUEUED.search(line)) and match[1] in received:
            holds.append((stamp - received.pop(match[1])).total_seconds())
            own.append(float(match[2]))
    return {"filter_hold_s": sum(holds) / len(holds) if holds else None,
            "filter_own_s": sum(own) / len(own) if own else None, "filter_own_max_s": max(own, default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--model", default="resnet18", help="a registry model of >= 10 MB")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=300, help="attack iterations (one attack > a round)")
    parser.add_argument("--max-pending", type=int, default=2)
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="audit_workers (0: the in-process thread)")
    parser.add_argument("--one", choices=["audit", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one_run(args)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for which in ("baseline", "audit"):
            command = [sys.executable, __file__, "--one", which, "--workspace", str(Path(root) / which)]
            for name in ("rounds", "sites", "model", "resolution", "iterations", "max_pending", "drain_timeout",
                         "workers"):
                command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode:
                sys.exit(f"the {which} run failed:\n{done.stderr[-3000:]}")
            results[which] = json.loads(done.stdout.strip().splitlines()[-1])
            print(which, results[which], flush=True)
    audit, baseline = results["audit"], results["baseline"]
    summary = {
        "rounds": args.rounds, "sites": args.sites, "model": args.model, "model_mb": round(audit["model_mb"], 1),
        "max_pending": args.max_pending, "workers": args.workers,
        "peak_rss_mb": {"audit": round(audit["peak_rss_mb"]), "no_filter": round(baseline["peak_rss_mb"])},
        "rss_over_baseline_in_model_copies": round(
            (audit["peak_rss_mb"] - baseline["peak_rss_mb"]) / audit["model_mb"], 1
        ),
        "spill_mb_left": round(audit.get("spill_mb", 0.0), 1),
        "rows_by_status": audit.get("rows_by_status"), "rows": audit.get("rows"),
        "expected_rows": args.rounds * args.sites, "one_row_per_update": audit.get("updates_with_one_row"),
        "round_s": {"audit": audit["round_s"], "no_filter": baseline["round_s"]},
        "round_time_ratio": audit["round_s"] / baseline["round_s"] if audit["round_s"] and baseline["round_s"] else 0,
        "filter_hold_s_per_update": audit["filter_hold_s"],
        "filter_own_s_per_update": {"mean": audit["filter_own_s"], "max": audit["filter_own_max_s"]},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
