#!/usr/bin/env bash
# End-to-end check of gradinv in NVFlare POC: prepare -> start -> submit -> wait -> download -> check -> report
# -> stop -> clean. Stops whatever it started on any exit (trap) and verifies that no POC process is left.
set -euo pipefail

POC_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POC="$POC_SCRIPTS/poc.sh"

usage() {
  cat <<'EOF'
Usage: poc/e2e.sh [--route api|cli|console] [--workdir DIR] [--sites N] [--rounds R] [--iterations K]
                  [--audit-workers W] [--keep]

Runs the gradinv job in a fresh NVFlare POC (server + N client processes) and checks the downloaded
result: <job workspace>/gradinv/metrics.csv must hold a row for every round x site.

  --route       how the job is submitted, waited for and downloaded (default api):
                  api      FLARE API (new_secure_session)
                  cli      nvflare job submit / wait / download
                  console  admin console (fl_admin.sh) driven non-interactively
  --workdir     folder for the POC, its HOME and results (default ./workspace/poc-e2e); must be new or
                empty: it is deleted at the end
  --sites       number of hospitals (default 2, 1 image each)
  --rounds      FedAvg rounds (default 2)
  --iterations  attack iterations per image (default 50, to keep it quick)
  --audit-workers  run the filter in audit mode with W attack processes beside the server (default: gate mode)
  --keep        keep the workdir (logs, downloaded result) instead of deleting it at the end

Exit status 0 when every step passed; otherwise the failing step is named and the POC is stopped.
Port 8002 must be free. Wall time with the defaults: about 1.5-2 minutes on 2 CPU cores.
EOF
}

main() {
  route=api workdir=./workspace/poc-e2e sites=2 rounds=2 iterations=50 keep=0 audit_workers=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --route) route="$2"; shift 2 ;;
      --workdir) workdir="$2"; shift 2 ;;
      --sites) sites="$2"; shift 2 ;;
      --rounds) rounds="$2"; shift 2 ;;
      --iterations) iterations="$2"; shift 2 ;;
      --audit-workers) audit_workers="$2"; shift 2 ;;
      --keep) keep=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; echo "e2e: error: unknown option $1" >&2; exit 2 ;;
    esac
  done
  case "$route" in api|cli|console) ;; *) echo "e2e: error: --route must be api, cli or console" >&2; exit 2 ;; esac
  for value in "$sites" "$rounds" "$iterations"; do
    [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "e2e: error: --sites/--rounds/--iterations must be positive integers" >&2; exit 2; }
  done
  workdir=$(realpath -m -- "$workdir")
  # A fresh folder only: the trap stops and deletes what is in it, which must be nothing but what this run made.
  if [[ -n "$(ls -A "$workdir" 2>/dev/null)" ]]; then
    echo "e2e: error: $workdir is not empty; pass a new --workdir (or remove it: $POC --workdir $workdir clean)" >&2
    exit 2
  fi

  trap finish EXIT
  trap 'exit 130' INT TERM   # run finish (stop + clean) on Ctrl-C too

  echo "[e2e] route $route; $sites sites; $rounds rounds; $iterations attack iterations; workdir $workdir"
  prepared=1   # from here on the trap stops and cleans (the workdir was empty: all in it is ours)
  step "prepare" poc prepare --sites "$sites"
  step "start" poc start
  local submit_args=(--route "$route" --rounds "$rounds" --iterations "$iterations")
  [[ -z "$audit_workers" ]] || submit_args+=(--audit-workers "$audit_workers")
  step "submit ($route${audit_workers:+, audit mode, $audit_workers attack processes})" poc submit "${submit_args[@]}"
  step "wait" poc wait
  step "download" poc download
  step "check metrics" poc check
  step "report" poc report
  step "stop" poc stop
  succeeded=1
}

poc() { "$POC" --workdir "$workdir" "$@"; }

step_name="" started_at=$SECONDS prepared=0 succeeded=0 route="" sites="" rounds="" keep=0 workdir=""
step() {  # run one named step; the trap reports the name if it fails
  step_name="$1"; shift
  local t0=$SECONDS
  printf '\n[e2e] == %s\n' "$step_name"
  "$@"
  printf '[e2e]    %s: ok (%d s)\n' "$step_name" $((SECONDS - t0))
}

finish() {
  local status=$?
  trap - EXIT INT TERM
  if [[ $prepared -eq 1 ]]; then
    # Always stop what was started, whatever failed; stop itself verifies by the PID files that nothing is left.
    if ! poc stop; then
      echo "[e2e] error: could not stop every POC process; see '$POC --workdir $workdir status'" >&2
      status=1
    fi
    if [[ $status -ne 0 ]]; then
      local log
      for log in "$workdir"/nvflare/example_project/prod_00/server/log.txt "$workdir"/logs/*.log; do
        [[ -f "$log" ]] || continue
        printf '\n[e2e] --- last lines of %s\n' "$log" >&2
        tail -n 15 "$log" >&2
      done
    fi
    if [[ $keep -eq 1 ]]; then
      echo "[e2e] kept $workdir (remove it with: $POC --workdir $workdir clean)"
    elif [[ $status -eq 0 ]]; then
      poc clean >/dev/null || { echo "[e2e] error: clean failed" >&2; status=1; }
    else
      if poc clean >/dev/null; then
        echo "[e2e] removed $workdir; rerun with --keep to inspect the logs and results" >&2
      fi
    fi
  fi
  if [[ $status -eq 0 && $succeeded -eq 1 ]]; then
    printf '\n[e2e] PASSED: route %s, %s sites, %s rounds in %d s\n' "$route" "$sites" "$rounds" $((SECONDS - started_at))
  else
    [[ $status -ne 0 ]] || status=1
    printf '\n[e2e] FAILED at step "%s" (route %s) after %d s\n' "$step_name" "$route" $((SECONDS - started_at)) >&2
  fi
  exit "$status"
}

# On one line: bash reads a script as it runs it, so nothing after this line is read once main has started
# (editing the file while it runs cannot make bash execute a fragment of the new text).
main "$@"; exit
