"""One run of ``gradinv sweep`` in its own process: ``python -m gradinv.sweep.worker SETTINGS_JSON WORKSPACE``.

``SETTINGS_JSON`` holds :meth:`gradinv.fl.job.JobSettings.to_dict`'s data. Each simulation gets a fresh
interpreter, so NVFlare's process-wide state (logging, ports, threads) cannot leak from one run into the
next, and its console output goes to the run's log file instead of burying the sweep's progress lines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m gradinv.sweep.worker SETTINGS_JSON WORKSPACE", file=sys.stderr)
        return 2
    from gradinv.fl.job import JobSettings, simulate

    settings = JobSettings.from_mapping(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    run_dir = simulate(settings, args[1])
    print(f"gradinv sweep worker: run dir {run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
