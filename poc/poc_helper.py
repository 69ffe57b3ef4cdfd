#!/usr/bin/env python3
"""Python side of ``poc/poc.sh``: the steps that are easier and safer in Python than in bash.

Each subcommand prints what it did on stdout, errors as ``poc: error: ...`` on stderr, and exits non-zero on
failure. Only ``poc.sh`` and the tests call it; the environment (isolated HOME, NVFLARE_POC_WORKSPACE, the
venv's python first on PATH) is set by ``poc.sh``.

Subcommands:
  port-check     fail clearly when a TCP port (8002: NVFlare's FL + admin port in POC) is taken
  configure-server  set the server's heart_beat_timeout (how soon a killed client is dropped)
  export         write the gradinv job folder for POC from the prepared datalists
  wait-ready     wait until the server answers, the sites are connected and the job store works
  api-submit / api-wait / api-download            FLARE API route (new_secure_session)
  console-submit / console-wait / console-download admin console route (fl_admin.sh driven through stdin)
  cli-field      read one field of `nvflare --format json ...` output (stdin)
  check-metrics  verify <workspace>/gradinv/metrics.csv has one row per expected round x site
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Terminal states of an NVFlare job (nvflare.apis.job_def.RunStatus); anything else is still pending/running.
FINISHED_OK = "FINISHED:COMPLETED"
ADMIN_USER = "admin@nvidia.com"  # the POC project_admin: may submit BYOC jobs (lead too, org_admin may not)


class PocError(Exception):
    """A failure with a message meant for the user (no traceback)."""


def _is_terminal(status: str | None) -> bool:
    return bool(status) and (status.startswith("FINISHED") or status.startswith("FAILED") or status == "ABANDONED")


# --------------------------------------------------------------------------------------------------- port check
def port_check(args: argparse.Namespace) -> None:
    """Fail when something listens on the port, or when we could not listen on it ourselves.

    Both checks are needed: gRPC binds with SO_REUSEPORT, so a second POC server may start "successfully"
    on a port that another one already serves, and clients would then be load-balanced between the two.
    """
    port = args.port
    holder = None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            holder = "a process is listening on it"
    if holder is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT from a previous run
            try:
                server.bind(("0.0.0.0", port))
            except OSError as exc:
                holder = f"cannot bind it: {exc.strerror}"
    if holder is not None:
        who = ""
        if shutil.which("ss"):
            listing = subprocess.run(["ss", "-ltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
            who = "\n" + listing.strip() if listing.strip() else ""
        raise PocError(
            f"port {port} is busy ({holder}). NVFlare POC serves both the FL and the admin connections on "
            f"{port}. Stop whatever uses it (another POC: `poc/poc.sh --workdir <its dir> stop`) and retry.{who}"
        )
    print(f"port {port} is free")


# ------------------------------------------------------------------------------------------------------ export
def export(args: argparse.Namespace) -> None:
    """Export the gradinv FedAvg job for the prepared sites, optionally with a lower meta.json min_clients.

    ``min_clients`` in meta.json is NVFlare's deployment floor (``job.min_sites``): the job is deployed if at
    least that many sites are up, and the server aborts it when fewer stay alive. FedAvg's own ``num_clients``
    (the sites targeted each round) stays at the number of sites: lowering it would make FedAvg sample a
    random subset every round, and the leakage metrics would then miss rounds of some sites.
    """
    from gradinv.errors import GradinvError
    from gradinv.fl.job import JobSettings, export_job

    datalists = Path(args.datalists).resolve()
    sites = sorted(p.stem for p in datalists.glob("*.json"))
    if not sites:
        raise PocError(f"no <site>.json datalists in {datalists}; run `poc.sh prepare` first")
    audit_filter = {"attack_overrides": {"iterations": args.iterations} if args.iterations else None}
    if args.audit_workers is not None:
        audit_filter.update(mode="audit", audit_workers=args.audit_workers)
    try:
        settings = JobSettings(name=args.name, datalists=str(datalists), num_rounds=args.rounds, filter=audit_filter)
    except GradinvError as exc:
        raise PocError(str(exc)) from None
    out = Path(args.out).resolve()
    target = out / args.name
    if target.exists():
        shutil.rmtree(target)  # a stale export of another configuration must not be submitted by mistake
    job_dir = export_job(settings, out)
    meta_path = job_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    if args.min_clients is not None:
        if not 1 <= args.min_clients <= len(sites):
            raise PocError(f"--min-clients must be between 1 and the number of sites ({len(sites)})")
        meta["min_clients"] = args.min_clients
        meta_path.write_text(json.dumps(meta, indent=4))
    print(f"job folder: {job_dir}")
    print(f"  sites: {', '.join(sites)}; rounds: {args.rounds}; attack iterations: "
          f"{args.iterations or 'preset default'}; meta.json min_clients: {meta['min_clients']}")


# ------------------------------------------------------------------------------------------- server settings
def configure_server(args: argparse.Namespace) -> None:
    """Set ``heart_beat_timeout`` in the POC server's fed_server.json (NVFlare's default when absent: 600 s).

    It is how long the server keeps a client that sent no heartbeat (clients send one every 10 s) before it
    drops it and reports its jobs as dead; a killed client holds up FedAvg's round at least that long.
    POC kits carry no signature.json, so the server accepts the edited file. The value must be an int: with
    a float (30.0) the NVFlare 2.9.0 server starts without its job manager ("There's no Job Manager defined")
    and every submission then fails with "TypeError: job_def_manager in engine is not of type ...".
    """
    path = Path(args.fed_server_json)
    config = json.loads(path.read_text())
    config["servers"][0]["heart_beat_timeout"] = args.heartbeat_timeout
    path.write_text(json.dumps(config, indent=2))
    print(f"{path}: heart_beat_timeout = {args.heartbeat_timeout} s")


# ------------------------------------------------------------------------------------------------- FLARE API
def _session(kit: str, timeout: float):
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    try:
        return new_secure_session(ADMIN_USER, kit, timeout=timeout)
    except Exception as exc:  # NoConnection, timeouts: the POC server is not reachable
        raise PocError(f"cannot open a FLARE API session with the POC server within {timeout:.0f} s "
                       f"({type(exc).__name__}: {exc}). Is POC running? Check `poc.sh status`.") from None


def ready_probe(args: argparse.Namespace) -> None:
    """One readiness look, in its own process (``wait-ready`` bounds it): connected clients and the job store."""
    session = _session(args.kit, args.connect_timeout)
    try:
        connected = sorted(client.name for client in session.get_system_info().client_info)
        try:
            session.list_jobs()
        except Exception as exc:  # e.g. a server that started without its job manager
            print(json.dumps({"clients": connected, "job_store": f"{type(exc).__name__}: {exc}"}))
            return
    finally:
        session.close()
    print(json.dumps({"clients": connected, "job_store": "ok"}))


def wait_ready(args: argparse.Namespace) -> None:
    """Wait until the server answers, every expected site is connected, and the job store works.

    Replaces the readiness wait of `nvflare poc start`, which once hung for minutes past its --timeout in a
    login that never completed. Each probe runs in a child process under a hard timeout, so a hanging login
    only costs one attempt.
    """
    expected = [site for site in args.sites.split(",") if site]
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PocError(f"POC was not ready within {args.timeout:.0f} s: {last}")
        probe = [sys.executable, __file__, "ready-probe", "--kit", args.kit,
                 "--connect-timeout", str(max(1.0, min(10.0, remaining)))]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=max(5.0, min(30.0, remaining)))
            answer = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            answer = None
            last = "the admin login did not complete"
        else:
            if answer is None:
                last = (done.stderr.strip().splitlines() or ["server not reachable"])[-1]
        if answer is not None:
            if answer["job_store"] != "ok":
                raise PocError(f"the POC server runs but its job store does not: {answer['job_store']}")
            missing = [site for site in expected if site not in answer["clients"]]
            if not missing:
                print(f"ready: server and {', '.join(expected)} connected")
                return
            last = f"waiting for {', '.join(missing)} (connected: {', '.join(answer['clients']) or 'none'})"
        time.sleep(1.0)


def api_submit(args: argparse.Namespace) -> None:
    session = _session(args.kit, args.connect_timeout)
    try:
        job_id = session.submit_job(str(Path(args.job).resolve()))
    finally:
        session.close()
    print(job_id)


def api_wait(args: argparse.Namespace) -> None:
    from nvflare.fuel.flare_api.api_spec import JobTimeout

    session = _session(args.kit, args.connect_timeout)
    try:
        meta = session.wait_for_job(args.job_id, timeout=args.timeout, poll_interval=2.0)
    except JobTimeout:
        raise PocError(f"job {args.job_id} did not finish within {args.timeout} s") from None
    finally:
        session.close()
    _report_status(args.job_id, meta.get("status"))


def api_download(args: argparse.Namespace) -> None:
    session = _session(args.kit, args.connect_timeout)
    destination = Path(args.out).resolve()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        path = session.download_job_result(args.job_id, destination=str(destination))
    finally:
        session.close()
    print(path)


def _report_status(job_id: str, status: str | None) -> None:
    print(f"job {job_id}: {status}")
    if status != FINISHED_OK:
        raise PocError(f"job {job_id} ended with status {status} (expected {FINISHED_OK}); "
                       f"download it and read workspace/log.txt")


# --------------------------------------------------------------------------------------------- admin console
def _run_console(script: Path, stdin: str, timeout: float) -> tuple[int, str]:
    """Run fl_admin.sh in its own session; on timeout end that whole session (bash and the python console it
    started), by the process-group id we created, so no console process outlives the call."""
    process = subprocess.Popen(["bash", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(stdin, timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired as timeout_error:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        raise TimeoutError(output or "") from timeout_error


def _console(kit: str, commands: list[str], connect_timeout: float) -> str:
    """Run the POC admin console non-interactively: commands on stdin, one per line, then ``bye``.

    Login is certificate-based, so there is no password prompt. The console gives up connecting after 10 s
    by itself; the hard limit (connection time + 60 s for the commands) guards against a hanging login.
    """
    timeout = connect_timeout + 60.0
    script = Path(kit) / "startup" / "fl_admin.sh"
    if not script.is_file():
        raise PocError(f"no admin console at {script}; run `poc.sh prepare` first")
    stdin = "\n".join([*commands, "bye"]) + "\n"
    try:
        _, output = _run_console(script, stdin, timeout)
    except TimeoutError as exc:
        raise PocError(f"the admin console did not finish {commands} within {timeout:.0f} s; is POC running? "
                       f"Console output:\n{str(exc).strip()[-2000:]}") from None
    if "Trying to login" not in output and "Type ?" not in output:
        raise PocError(f"the admin console could not log in to the POC server (is POC running? check "
                       f"`poc.sh status`). Console output:\n{output.strip()[-2000:]}")
    return output


def console_submit(args: argparse.Namespace) -> None:
    kit = Path(args.kit)
    job = Path(args.job).resolve()
    transfer = kit / "transfer"
    transfer.mkdir(parents=True, exist_ok=True)
    staged = transfer / job.name
    if staged.resolve() != job:
        # submit_job takes a folder name relative to the admin kit's transfer/ folder.
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(job, staged)
    output = _console(str(kit), [f"submit_job {job.name}"], args.connect_timeout)
    match = re.search(r"Submitted job:\s*([0-9a-f-]{36})", output)
    if not match:
        raise PocError(f"the admin console did not confirm the submission:\n{output.strip()[-2000:]}")
    print(match.group(1))


def _console_job_status(kit: str, job_id: str, timeout: float) -> str | None:
    output = _console(kit, [f"list_jobs -d {job_id}"], timeout)
    match = re.search(r'"status":\s*"([^"]+)"', output)
    return match.group(1) if match else None


def console_wait(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    status = None
    while time.monotonic() < deadline:
        status = _console_job_status(args.kit, args.job_id, args.connect_timeout)
        if _is_terminal(status):
            break
        time.sleep(5)
    else:
        raise PocError(f"job {args.job_id} did not finish within {args.timeout} s (last status {status})")
    _report_status(args.job_id, status)


def console_download(args: argparse.Namespace) -> None:
    kit = Path(args.kit)
    output = _console(str(kit), [f"download_job {args.job_id}"], args.connect_timeout)
    downloaded = kit / "transfer" / args.job_id  # where download_job puts it (relative to the kit)
    if not (downloaded / "workspace").is_dir():
        raise PocError(f"download_job did not produce {downloaded}/workspace:\n{output.strip()[-2000:]}")
    destination = Path(args.out).resolve() / args.job_id
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(downloaded), destination)
    print(destination)


# ------------------------------------------------------------------------------------------------------- CLI
def cli_field(args: argparse.Namespace) -> None:
    """Print one field of `nvflare --format json` output; on an error envelope, print its message and fail."""
    text = sys.stdin.read()
    try:
        document = json.loads(text[text.index("{"):])
    except ValueError:
        raise PocError(f"nvflare printed no JSON:\n{text.strip()[-2000:]}") from None
    value = document
    for key in args.path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None or document.get("status") not in (None, "ok"):
        message = document.get("message") or document.get("error") or document.get("hint") or text.strip()
        raise PocError(f"nvflare reported: {message}")
    print(value)


# ----------------------------------------------------------------------------------------------- check metrics
def check_metrics(args: argparse.Namespace) -> None:
    """Every expected (round, site) has a row in metrics.csv; rounds/sites listed as optional may be missing."""
    workspace = Path(args.workspace)
    metrics = workspace / "gradinv" / "metrics.csv"
    if not metrics.is_file():
        found = sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*"))[:30] if workspace.is_dir() else []
        raise PocError(f"no {metrics} in the downloaded job; the workspace holds: {found}")
    with open(metrics, newline="") as handle:
        rows = list(csv.DictReader(handle))
    have: dict[tuple[int, str], int] = {}
    for row in rows:
        key = (int(row["round"]), row["site"])
        have[key] = have.get(key, 0) + 1
    sites = args.sites.split(",")
    optional = set(args.optional_sites.split(",")) if args.optional_sites else set()
    required = [(r, s) for r in range(args.rounds) for s in sites if s not in optional]
    missing = [f"round {r} {s}" for r, s in required if (r, s) not in have]
    duplicated = [f"round {r} {s} x{n}" for (r, s), n in sorted(have.items()) if n > 1]
    unexpected = [f"round {r} {s}" for (r, s) in sorted(have) if s not in sites or not 0 <= r < args.rounds]
    problems = []
    if missing:
        problems.append("missing rows: " + ", ".join(missing))
    if duplicated:
        problems.append("duplicated rows: " + ", ".join(duplicated))
    if unexpected:
        problems.append("unexpected rows: " + ", ".join(unexpected))
    if problems:
        raise PocError(f"{metrics}: " + "; ".join(problems))
    got_optional = sorted(f"round {r} {s}" for (r, s) in have if s in optional)
    print(f"{metrics}: {len(rows)} rows, every round x site present "
          f"({args.rounds} rounds x {len(sites) - len(optional)} sites)"
          + (f"; from the optional sites: {', '.join(got_optional) or 'none'}" if optional else ""))


# --------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poc_helper.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("port-check", help="fail clearly when the TCP port is taken")
    p.add_argument("--port", type=int, default=8002)
    p.set_defaults(func=port_check)

    p = commands.add_parser("configure-server", help="set heart_beat_timeout in the server's fed_server.json")
    p.add_argument("--fed-server-json", required=True)
    p.add_argument("--heartbeat-timeout", type=int, required=True)
    p.set_defaults(func=configure_server)

    p = commands.add_parser("export", help="export the gradinv job for the prepared sites")
    p.add_argument("--datalists", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="gradinv_poc")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--min-clients", type=int, default=None)
    p.add_argument("--audit-workers", type=int, default=None,
                   help="run the filter in audit mode with this many attack processes beside the server")
    p.set_defaults(func=export)

    def with_kit(sub, *, job=False, job_id=False, out=False, timeout=False):
        sub.add_argument("--kit", required=True, help="admin startup kit folder")
        sub.add_argument("--connect-timeout", type=float,
                         default=float(os.environ.get("GRADINV_POC_CONNECT_TIMEOUT") or 30.0),
                         help="seconds to reach the server (default 30, or $GRADINV_POC_CONNECT_TIMEOUT)")
        if job:
            sub.add_argument("--job", required=True)
        if job_id:
            sub.add_argument("--job-id", required=True)
        if out:
            sub.add_argument("--out", required=True)
        if timeout:
            sub.add_argument("--timeout", type=float, default=600.0)
        return sub

    with_kit(commands.add_parser("ready-probe")).set_defaults(func=ready_probe)
    p = with_kit(commands.add_parser("wait-ready", help="wait until the server and the sites are ready"),
                 timeout=True)
    p.add_argument("--sites", required=True, help="comma-separated sites that must be connected")
    p.set_defaults(func=wait_ready)
    with_kit(commands.add_parser("api-submit"), job=True).set_defaults(func=api_submit)
    with_kit(commands.add_parser("api-wait"), job_id=True, timeout=True).set_defaults(func=api_wait)
    with_kit(commands.add_parser("api-download"), job_id=True, out=True).set_defaults(func=api_download)
    with_kit(commands.add_parser("console-submit"), job=True).set_defaults(func=console_submit)
    with_kit(commands.add_parser("console-wait"), job_id=True, timeout=True).set_defaults(func=console_wait)
    with_kit(commands.add_parser("console-download"), job_id=True, out=True).set_defaults(func=console_download)

    p = commands.add_parser("cli-field", help="read a field (dotted path) of nvflare JSON output on stdin")
    p.add_argument("path")
    p.set_defaults(func=cli_field)

    p = commands.add_parser("check-metrics", help="verify metrics.csv holds every round x site")
    p.add_argument("--workspace", required=True, help="downloaded job workspace (holds gradinv/)")
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--sites", required=True, help="comma-separated site names")
    p.add_argument("--optional-sites", default="", help="sites whose rows may be missing (killed clients)")
    p.set_defaults(func=check_metrics)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except PocError as exc:
        print(f"poc: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # an NVFlare API error (JobNotDone, InternalError, ...): one line, not a traceback
        if os.environ.get("GRADINV_POC_DEBUG"):
            raise
        print(f"poc: error: {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
