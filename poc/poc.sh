#!/usr/bin/env bash
# NVFlare POC (one server and N client processes on this machine) for gradinv, isolated under one folder.
# Run `poc/poc.sh --help`. Why the steps look the way they do: see poc/README.md and the shared NVFlare reference §8.
set -euo pipefail

POC_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$POC_SCRIPTS/.." && pwd)
VENV_BIN="$REPO_ROOT/.venv/bin"
HELPER="$POC_SCRIPTS/poc_helper.py"
POC_PORT=8002                    # NVFlare POC serves the FL and the admin connections on this one port
ADMIN_USER="admin@nvidia.com"    # POC's project_admin: allowed to submit BYOC jobs
MARKER_NAME=".gradinv-poc"       # marks a folder made by `prepare`; `clean` deletes only such folders

usage() {
  cat <<'EOF'
Usage: poc/poc.sh [--workdir DIR] COMMAND [OPTIONS]

NVFlare POC for gradinv: a server and N hospital clients as separate processes on this machine, with the
gradinv job submitted through NVFlare's job store. Everything lives under --workdir (default ./workspace/poc):
its own HOME (NVFlare's ~/.nvflare config), NVFLARE_POC_WORKSPACE, datalists, job folders and downloads.
The POC processes run the repository's .venv python (its bin/ is put first on PATH).

Commands:
  prepare   [--sites N] [--images-per-site K] [--heartbeat-timeout S] [--dead-client-grace S]
            provision N sites (site-1..site-N; default 2) and write their datalists (K images each, default 1);
            fails if port 8002 is taken. --heartbeat-timeout / --dead-client-grace shorten how long the
            server waits before it drops a killed client (NVFlare defaults: 600 s and 60 s).
  start     [--timeout S]             start server + clients; returns once all are connected (default 90 s)
  submit    [--route api|cli|console] [--job DIR] [--rounds R] [--iterations K] [--min-clients M]
            [--no-running-check] [--connect-timeout S]
            export the gradinv job for the prepared sites (unless --job is given) and submit it:
              api      FLARE API, new_secure_session(...).submit_job (default)
              cli      nvflare job submit
              console  admin console: `submit_job` typed into startup/fl_admin.sh (non-interactive)
            --rounds: FedAvg rounds (default 2); --iterations: attack iterations per image (default 50, fast;
            0 = the preset's own); --min-clients lowers meta.json min_clients (sites that must stay alive); FedAvg still targets
            every site each round. Checks first that POC runs; --no-running-check skips that, to see the
            route's own error; --connect-timeout S bounds the api/console connection attempt (default 30).
  wait      [--route R] [--job-id ID] [--timeout S]   wait until the job ends (default at most 900 s);
                                        fails unless FINISHED:COMPLETED
  download  [--route R] [--job-id ID]   fetch the job result to <workdir>/results/<job_id>/workspace
  abort     [--job-id ID]               abort a running job (nvflare job abort --force)
  check     [--job-id ID] [--rounds R] [--optional-sites a,b]
            the download holds gradinv/metrics.csv with a row for every round x site
  report    [--job-id ID]               build report.html from the download (gradinv report)
  status                                participants, their PIDs, port 8002, last job
  kill-site SITE [--round N] [--keep-daemon]
            fault injection: SIGKILL a client by its PID files (daemon_pid.fl, pid.fl) and its job
            processes, like a crashed machine; --round N first waits until round N of the last submitted
            job has started; --keep-daemon kills only the pid.fl process, so NVFlare's sub_start.sh daemon
            restarts the client (the server then never learns the job died there: see poc/README.md)
  stop      [--timeout S]               nvflare poc stop, wait for the daemons; then kill leftovers by the
                                        PIDs in daemon_pid.fl / pid.fl (never by name); verify none is left
  clean                                 stop, nvflare poc clean, delete the workdir (only one made by prepare)
  env                                   print the exports that point nvflare commands at this POC:
                                          eval "$(poc/poc.sh --workdir DIR env)"; nvflare job list

wait/download/check/report default to the job and route of the last submit.
Environment: GRPC_POLL_STRATEGY=poll and GRPC_ENABLE_FORK_SUPPORT=False are set for all NVFlare processes.
EOF
}

say() { printf '[poc] %s\n' "$*"; }
die() { printf 'poc: error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------------ layout
set_layout() {
  WORKDIR=$(realpath -m -- "$1")
  # nvflare poc start splits the service command lines on spaces, so a path with blanks cannot work.
  [[ "$WORKDIR" != *[[:space:]]* ]] || die "--workdir must not contain spaces: '$WORKDIR'"
  POC_HOME="$WORKDIR/home"                 # HOME for NVFlare: `nvflare poc prepare` writes ~/.nvflare/config.conf
  POC_WS="$WORKDIR/nvflare"                # NVFLARE_POC_WORKSPACE
  PROJECT_DIR="$POC_WS/example_project/prod_00"
  ADMIN_KIT="$PROJECT_DIR/$ADMIN_USER"
  DATALISTS="$WORKDIR/datalists"
  JOBS_DIR="$WORKDIR/jobs"
  RESULTS_DIR="$WORKDIR/results"
  STATE_DIR="$WORKDIR/state"
  LOG_DIR="$WORKDIR/logs"
  MARKER="$WORKDIR/$MARKER_NAME"
}

use_poc_env() {
  [[ -x "$VENV_BIN/python" ]] || die "no virtual environment at $REPO_ROOT/.venv; run scripts/bootstrap.sh first"
  export HOME="$POC_HOME" NVFLARE_POC_WORKSPACE="$POC_WS" NVFLARE_STARTUP_KIT_DIR="$ADMIN_KIT"
  export PATH="$VENV_BIN:$PATH"            # sub_start.sh runs the first python3 on PATH: it must be the venv's
  export GRPC_POLL_STRATEGY=poll GRPC_ENABLE_FORK_SUPPORT=False
  # Read by NVFlare's ConfigService in the server job process (see prepare --dead-client-grace).
  if [[ -n "${DEAD_CLIENT_GRACE:-}" ]]; then export NVFLARE_DEAD_CLIENT_GRACE_PERIOD="$DEAD_CLIENT_GRACE"; fi
  mkdir -p "$POC_HOME"
}

load_settings() {
  [[ -f "$STATE_DIR/settings.env" ]] || die "POC is not prepared in $WORKDIR; run: poc/poc.sh --workdir $WORKDIR prepare"
  # shellcheck source=/dev/null
  source "$STATE_DIR/settings.env"
}

load_last_job() {
  if [[ -f "$STATE_DIR/last_job.env" ]]; then
    # shellcheck source=/dev/null
    source "$STATE_DIR/last_job.env"
  fi
}

helper() { "$VENV_BIN/python" "$HELPER" "$@"; }

# Run a logged command; on failure show the end of its log.
run_logged() {
  local log="$1"; shift
  mkdir -p "$LOG_DIR"
  if ! "$@" >"$log" 2>&1 </dev/null; then
    tail -n 30 "$log" >&2
    return 1
  fi
}

# --------------------------------------------------------------------------------------------------- processes
participants() {  # server first, then the sites, as provisioned
  [[ -d "$PROJECT_DIR/server" ]] && echo server
  local site
  for site in ${SITE_NAMES:-}; do echo "$site"; done
}

# A PID from our PID files is only trusted while its command line still names our POC workspace: PIDs get reused.
is_ours() {
  local pid="$1"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$POC_WS/"
}

pid_from_file() { [[ -f "$1" ]] && tr -dc '0-9' <"$1" || true; }

descendants() {  # all descendants of the given PIDs (job processes under a POC parent), from /proc
  local pid child
  for pid in "$@"; do
    # Per thread: NVFlare launches job processes from worker threads, not from the main one.
    for child in $(cat "/proc/$pid"/task/*/children 2>/dev/null); do
      echo "$child"; descendants "$child"
    done
  done
}

# Live PIDs of one participant: daemon (sub_start.sh), parent (server_train / client_train) and job processes.
participant_pids() {
  local dir="$PROJECT_DIR/$1" daemon parent pid
  daemon=$(pid_from_file "$dir/daemon_pid.fl")
  parent=$(pid_from_file "$dir/pid.fl")
  live_pids $daemon $parent $(descendants $daemon $parent)
}

live_pids() {  # those of the given PIDs that are still running and ours
  local pid
  for pid in "$@"; do is_ours "$pid" && echo "$pid"; done
  return 0
}

all_pids() {
  local name
  for name in $(participants); do participant_pids "$name"; done
  # PIDs recorded at start cover a daemon that exited and deleted its PID files while a child lived on.
  if [[ -f "$STATE_DIR/started.pids" ]]; then
    live_pids $(cat "$STATE_DIR/started.pids")
  fi
  return 0
}

participant_running() {  # the parent process (pid.fl) is alive
  local parent
  parent=$(pid_from_file "$PROJECT_DIR/$1/pid.fl")
  [[ -n "$parent" ]] && is_ours "$parent"
}

kill_pids() {  # SIGTERM, then SIGKILL what is left after a grace period; only PIDs that are still ours
  local signal_wait="$1"; shift
  local pid left=()
  for pid in "$@"; do is_ours "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 "$signal_wait"); do
    left=(); for pid in "$@"; do is_ours "$pid" && left+=("$pid"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    sleep 1
  done
  for pid in "${left[@]}"; do is_ours "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
  sleep 1
}

# ---------------------------------------------------------------------------------------------------- commands
cmd_prepare() {
  local sites=2 images=1 heartbeat="" grace=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --sites) sites="$2"; shift 2 ;;
      --images-per-site) images="$2"; shift 2 ;;
      --heartbeat-timeout) heartbeat="$2"; shift 2 ;;
      --dead-client-grace) grace="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "prepare: unknown option $1" ;;
    esac
  done
  [[ "$sites" =~ ^[1-9][0-9]*$ ]] || die "--sites must be a positive integer, got '$sites'"
  [[ "$images" =~ ^[1-9][0-9]*$ ]] || die "--images-per-site must be a positive integer, got '$images'"
  [[ -z "$heartbeat" || "$heartbeat" =~ ^[1-9][0-9]*$ ]] || die "--heartbeat-timeout must be whole seconds, got '$heartbeat'"
  [[ -z "$grace" || "$grace" =~ ^[0-9]+$ ]] || die "--dead-client-grace must be whole seconds, got '$grace'"
  if [[ -f "$STATE_DIR/settings.env" ]]; then
    load_settings
    [[ -z "$(all_pids)" ]] || die "POC in $WORKDIR is running; run 'poc/poc.sh --workdir $WORKDIR stop' first"
  fi
  if [[ -n "$(ls -A "$WORKDIR" 2>/dev/null)" && ! -f "$MARKER" ]]; then
    die "$WORKDIR is not empty and was not made by 'poc.sh prepare'; choose another --workdir"
  fi
  mkdir -p "$WORKDIR" && touch "$MARKER"   # before anything else is written, so that `clean` may remove it
  DEAD_CLIENT_GRACE="$grace"
  use_poc_env
  helper port-check --port "$POC_PORT" >/dev/null || exit 1
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  rm -f "$STATE_DIR/last_job.env" "$STATE_DIR/started.pids"

  say "provisioning $sites sites in $POC_WS (HOME=$POC_HOME)"
  run_logged "$LOG_DIR/prepare.log" nvflare poc prepare -n "$sites" --force \
    || die "nvflare poc prepare failed (log: $LOG_DIR/prepare.log)"
  local names=() i
  for i in $(seq 1 "$sites"); do
    [[ -d "$PROJECT_DIR/site-$i" ]] || die "nvflare poc prepare made no site-$i under $PROJECT_DIR"
    names+=("site-$i")
  done

  # One datalist per provisioned site, named like it: the client script reads <datalists>/<site>.json.
  say "writing datalists for ${names[*]} ($images image(s) each) to $DATALISTS"
  rm -rf "$DATALISTS"
  local counts
  counts=$(printf "$images,%.0s" $(seq 1 "$sites")); counts=${counts%,}
  run_logged "$LOG_DIR/datalists.log" "$VENV_BIN/gradinv" data datalists --images-per-site "$counts" --out "$DATALISTS" \
    || die "gradinv data datalists failed (log: $LOG_DIR/datalists.log)"
  local listed
  listed=$(cd "$DATALISTS" && ls -1 ./*.json | sed 's|^\./||; s|\.json$||' | sort | tr '\n' ' ')
  [[ "$listed" == "$(printf '%s\n' "${names[@]}" | sort | tr '\n' ' ')" ]] \
    || die "datalists ($listed) do not match the POC sites (${names[*]})"

  if [[ -n "$heartbeat" ]]; then
    helper configure-server --fed-server-json "$PROJECT_DIR/server/startup/fed_server.json" \
      --heartbeat-timeout "$heartbeat" >/dev/null
  fi
  cat >"$STATE_DIR/settings.env" <<EOF
SITES=$sites
SITE_NAMES="${names[*]}"
HEARTBEAT_TIMEOUT=${heartbeat:-600}
DEAD_CLIENT_GRACE=$grace
EOF
  say "prepared: sites ${names[*]}; server heartbeat timeout ${heartbeat:-600} s," \
      "dead-client grace ${grace:-60} s (NVFlare defaults: 600 and 60)"
}

cmd_start() {
  local timeout=90
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --timeout) timeout="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  load_settings
  use_poc_env
  local name down=()
  for name in $(participants); do participant_running "$name" || down+=("$name"); done
  if [[ ${#down[@]} -eq 0 ]]; then
    say "POC is already running in $WORKDIR"; return 0
  fi
  # A participant counts as down when its process is gone; its daemon may still live (and would make
  # sub_start.sh refuse to start a second one): clear such leftovers by PID first.
  local leftovers=() pid
  for name in "${down[@]}"; do
    for pid in $(participant_pids "$name"); do leftovers+=("$pid"); done
  done
  if [[ ${#leftovers[@]} -gt 0 ]]; then
    say "stopping leftover processes of ${down[*]} by PID: ${leftovers[*]}"
    kill_pids 5 "${leftovers[@]}"
  fi
  local service_args=()
  if [[ ${#down[@]} -lt $((SITES + 1)) ]]; then
    # Some participants run (e.g. after kill-site): start only the missing ones.
    for name in "${down[@]}"; do service_args+=(-p "$name"); done
    say "starting ${down[*]} (the others are running)"
  else
    helper port-check --port "$POC_PORT" >/dev/null || exit 1
    say "starting server and ${SITES} clients (python: $(command -v python3))"
  fi
  local started=$SECONDS
  # --no-wait, then our own readiness check: the wait built into `nvflare poc start` once hung for minutes,
  # far past its --timeout, in an admin login that never completed.
  if ! run_logged "$LOG_DIR/start.log" timeout 120 nvflare poc start "${service_args[@]}" --no-wait; then
    say "start failed; stopping what was started"
    cmd_stop >&2 || true
    die "nvflare poc start failed (logs: $LOG_DIR/start.log, $PROJECT_DIR/<participant>/poc_console.log)"
  fi
  if ! helper wait-ready --kit "$ADMIN_KIT" --sites "$(tr ' ' ',' <<<"$SITE_NAMES")" --timeout "$timeout" \
       >>"$LOG_DIR/start.log"; then
    say "not ready; stopping what was started"
    cmd_stop >&2 || true
    die "POC did not get ready (logs: $LOG_DIR/start.log, $PROJECT_DIR/<participant>/log.txt)"
  fi
  for name in $(participants); do
    participant_running "$name" || { cmd_stop >&2 || true; die "$name is not running after start (see $PROJECT_DIR/$name/log.txt)"; }
  done
  all_pids | sort -u >"$STATE_DIR/started.pids"
  say "POC running: server + ${SITE_NAMES} ready in $((SECONDS - started)) s (port $POC_PORT)"
}

require_running() {
  participant_running server || die "POC is not running in $WORKDIR (no live server process in" \
    "$PROJECT_DIR/server/pid.fl). Start it with: poc/poc.sh --workdir $WORKDIR start"
}

cmd_submit() {
  local route=api job="" rounds=2 iterations=50 min_clients="" name="gradinv_poc" check_running=1 audit_workers=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --route) route="$2"; shift 2 ;;
      --job) job="$2"; shift 2 ;;
      --rounds) rounds="$2"; shift 2 ;;
      --iterations) iterations="$2"; shift 2 ;;
      --min-clients) min_clients="$2"; shift 2 ;;
      --audit-workers) audit_workers="$2"; shift 2 ;;
      --name) name="$2"; shift 2 ;;
      --no-running-check) check_running=0; shift ;;   # for tests of each route's own error when POC is down
      --connect-timeout) export GRADINV_POC_CONNECT_TIMEOUT="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "submit: unknown option $1" ;;
    esac
  done
  case "$route" in api|cli|console) ;; *) die "--route must be api, cli or console, got '$route'" ;; esac
  load_settings
  use_poc_env
  [[ $check_running -eq 0 ]] || require_running
  if [[ -z "$job" ]]; then
    local export_args=(--datalists "$DATALISTS" --out "$JOBS_DIR" --name "$name" --rounds "$rounds")
    [[ -n "$iterations" && "$iterations" != 0 ]] && export_args+=(--iterations "$iterations")
    [[ -n "$min_clients" ]] && export_args+=(--min-clients "$min_clients")
    [[ -n "$audit_workers" ]] && export_args+=(--audit-workers "$audit_workers")
    helper export "${export_args[@]}" || die "could not export the job"
    job="$JOBS_DIR/$name"
  else
    job=$(cd "$job" && pwd) || die "no job folder $job"
    [[ -f "$job/meta.json" ]] || die "$job is not an NVFlare job folder (no meta.json)"
    rounds=$(sed -n 's/.*"num_rounds": *\([0-9]*\).*/\1/p' "$job/gradinv_job.json" 2>/dev/null | head -1)
  fi
  local job_id output
  case "$route" in
    api) job_id=$(helper api-submit --kit "$ADMIN_KIT" --job "$job") || die "FLARE API submission failed" ;;
    cli)
      output=$(nvflare --format json job submit -j "$job" --startup-kit "$ADMIN_KIT" 2>&1 </dev/null) || true
      job_id=$(helper cli-field data.job_id <<<"$output") || die "nvflare job submit failed"
      ;;
    console) job_id=$(helper console-submit --kit "$ADMIN_KIT" --job "$job") || die "admin console submission failed" ;;
  esac
  job_id=$(tail -n 1 <<<"$job_id")
  [[ "$job_id" =~ ^[0-9a-f-]{36}$ ]] || die "the $route route returned no job id (got '$job_id')"
  cat >"$STATE_DIR/last_job.env" <<EOF
JOB_ID=$job_id
JOB_ROUTE=$route
JOB_DIR="$job"
JOB_ROUNDS=${rounds:-}
EOF
  say "submitted $job via $route: job id $job_id"
  echo "$job_id"
}

job_args() {  # parse [--route R] [--job-id ID] [--timeout S] with defaults from the last submit
  load_last_job
  ROUTE="${JOB_ROUTE:-api}"; ID="${JOB_ID:-}"; TIMEOUT=900; EXTRA=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --route) ROUTE="$2"; shift 2 ;;
      --job-id) ID="$2"; shift 2 ;;
      --timeout) TIMEOUT="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) EXTRA+=("$1"); shift ;;
    esac
  done
  [[ -n "$ID" ]] || die "no job id: pass --job-id or submit a job first"
  case "$ROUTE" in api|cli|console) ;; *) die "--route must be api, cli or console, got '$ROUTE'" ;; esac
}

cmd_wait() {
  load_settings; use_poc_env; job_args "$@"
  [[ ${#EXTRA[@]} -eq 0 ]] || die "wait: unknown option ${EXTRA[0]}"
  require_running
  say "waiting for job $ID via $ROUTE (timeout $TIMEOUT s)"
  local started=$SECONDS output status
  case "$ROUTE" in
    api) helper api-wait --kit "$ADMIN_KIT" --job-id "$ID" --timeout "$TIMEOUT" || die "job $ID did not complete" ;;
    console) helper console-wait --kit "$ADMIN_KIT" --job-id "$ID" --timeout "$TIMEOUT" || die "job $ID did not complete" ;;
    cli)
      output=$(nvflare --format json job wait "$ID" --timeout "$TIMEOUT" --startup-kit "$ADMIN_KIT" 2>&1 </dev/null) || true
      status=$(helper cli-field data.status <<<"$output") || die "job $ID did not complete"
      echo "job $ID: $status"
      [[ "$status" == "FINISHED:COMPLETED" ]] || die "job $ID ended with status $status (expected FINISHED:COMPLETED)"
      ;;
  esac
  say "job $ID finished in $((SECONDS - started)) s of waiting"
}

cmd_download() {
  load_settings; use_poc_env; job_args "$@"
  [[ ${#EXTRA[@]} -eq 0 ]] || die "download: unknown option ${EXTRA[0]}"
  require_running
  mkdir -p "$RESULTS_DIR"
  local output
  case "$ROUTE" in
    api) helper api-download --kit "$ADMIN_KIT" --job-id "$ID" --out "$RESULTS_DIR" >/dev/null || die "download failed" ;;
    console) helper console-download --kit "$ADMIN_KIT" --job-id "$ID" --out "$RESULTS_DIR" >/dev/null || die "download failed" ;;
    cli)
      output=$(nvflare --format json job download "$ID" -o "$RESULTS_DIR" --force --startup-kit "$ADMIN_KIT" 2>&1 </dev/null) || true
      helper cli-field data.path <<<"$output" >/dev/null || die "nvflare job download failed"
      ;;
  esac
  [[ -d "$RESULTS_DIR/$ID/workspace" ]] || die "the download of job $ID has no workspace/ folder under $RESULTS_DIR/$ID"
  say "downloaded job $ID to $RESULTS_DIR/$ID/workspace"
}

cmd_abort() {
  load_settings; use_poc_env; job_args "$@"
  [[ ${#EXTRA[@]} -eq 0 ]] || die "abort: unknown option ${EXTRA[0]}"
  require_running
  local output status
  output=$(nvflare --format json job abort "$ID" --force --startup-kit "$ADMIN_KIT" 2>&1 </dev/null) || true
  helper cli-field data.status <<<"$output" >/dev/null || die "nvflare job abort failed"
  # The abort is asynchronous: wait for a final status, so that a download right after it works.
  local deadline=$((SECONDS + 120))
  while :; do
    output=$(nvflare --format json job meta "$ID" --startup-kit "$ADMIN_KIT" 2>&1 </dev/null) || true
    status=$(helper cli-field data.status <<<"$output" 2>/dev/null) || status="unknown"
    [[ "$status" == FINISHED* || "$status" == FAILED* || "$status" == ABANDONED ]] && break
    [[ $SECONDS -lt $deadline ]] || die "job $ID still has status $status 120 s after the abort"
    sleep 2
  done
  say "job $ID aborted: $status"
}

cmd_check() {
  load_settings; load_last_job
  local id="${JOB_ID:-}" rounds="${JOB_ROUNDS:-}" optional=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --job-id) id="$2"; shift 2 ;;
      --rounds) rounds="$2"; shift 2 ;;
      --optional-sites) optional="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "check: unknown option $1" ;;
    esac
  done
  [[ -n "$id" ]] || die "no job id: pass --job-id or submit a job first"
  [[ -n "$rounds" ]] || die "unknown number of rounds: pass --rounds"
  use_poc_env
  helper check-metrics --workspace "$RESULTS_DIR/$id/workspace" --rounds "$rounds" \
    --sites "$(tr ' ' ',' <<<"$SITE_NAMES")" --optional-sites "$optional" || die "metrics check failed"
}

cmd_report() {
  load_settings; load_last_job
  local id="${JOB_ID:-}"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --job-id) id="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "report: unknown option $1" ;;
    esac
  done
  [[ -n "$id" ]] || die "no job id: pass --job-id or submit a job first"
  local workspace="$RESULTS_DIR/$id/workspace"
  [[ -d "$workspace" ]] || die "job $id is not downloaded ($workspace missing); run: poc/poc.sh --workdir $WORKDIR download"
  use_poc_env
  "$VENV_BIN/gradinv" report "$workspace" || die "gradinv report failed for $workspace"
}

cmd_status() {
  load_settings
  use_poc_env
  local name daemon parent
  echo "workdir:   $WORKDIR"
  echo "sites:     $SITE_NAMES (heartbeat timeout ${HEARTBEAT_TIMEOUT} s, dead-client grace ${DEAD_CLIENT_GRACE:-60} s)"
  for name in $(participants); do
    daemon=$(pid_from_file "$PROJECT_DIR/$name/daemon_pid.fl"); parent=$(pid_from_file "$PROJECT_DIR/$name/pid.fl")
    if participant_running "$name"; then
      printf '%-10s running  (daemon %s, process %s, jobs: %s)\n' "$name:" "${daemon:--}" "$parent" \
        "$(descendants "$parent" | tr '\n' ' ')"
    else
      printf '%-10s stopped\n' "$name:"
    fi
  done
  if helper port-check --port "$POC_PORT" >/dev/null 2>&1; then echo "port $POC_PORT: free"; else echo "port $POC_PORT: in use"; fi
  load_last_job
  [[ -z "${JOB_ID:-}" ]] || echo "last job:  $JOB_ID (route $JOB_ROUTE)"
}

cmd_kill_site() {
  local site="" keep_daemon=0 round="" round_timeout=600
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --keep-daemon) keep_daemon=1; shift ;;
      --round) round="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      -*) die "kill-site: unknown option $1" ;;
      *) site="$1"; shift ;;
    esac
  done
  load_settings
  [[ " $SITE_NAMES " == *" $site "* ]] || die "kill-site: '$site' is not one of: $SITE_NAMES"
  use_poc_env
  if [[ -n "$round" ]]; then
    # "During round N": once the server job's log says the round started, i.e. its train tasks are out.
    load_last_job
    [[ -n "${JOB_ID:-}" ]] || die "kill-site --round needs a submitted job"
    local server_log="$PROJECT_DIR/server/$JOB_ID/log.txt" deadline=$((SECONDS + round_timeout))
    say "waiting for round $round of job $JOB_ID to start"
    until grep -q "Round $round started" "$server_log" 2>/dev/null; do
      [[ $SECONDS -lt $deadline ]] || die "round $round of job $JOB_ID did not start within $round_timeout s"
      participant_running server || die "the server is not running"
      sleep 0.5
    done
  fi
  local dir="$PROJECT_DIR/$site" daemon parent jobs victims=()
  daemon=$(pid_from_file "$dir/daemon_pid.fl"); parent=$(pid_from_file "$dir/pid.fl")
  is_ours "$parent" || die "$site is not running (no live process in $dir/pid.fl)"
  jobs=$(descendants "$parent" | tr '\n' ' ')
  if [[ $keep_daemon -eq 1 ]]; then
    victims=("$parent")  # the daemon notices within 5 s and starts a new client process
  else
    # Daemon first, or it would restart the client; all at once, like a crashed machine.
    is_ours "$daemon" && victims+=("$daemon")
    victims+=("$parent")
    for pid in $jobs; do is_ours "$pid" && victims+=("$pid"); done
  fi
  kill -KILL "${victims[@]}" 2>/dev/null || true
  say "killed $site: SIGKILL to ${victims[*]} (daemon ${daemon:-none}, process $parent, job processes: ${jobs:-none})" \
      "$([[ $keep_daemon -eq 1 ]] && echo '; its daemon will restart it')"
}

cmd_stop() {
  local timeout=60
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --timeout) timeout="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "stop: unknown option $1" ;;
    esac
  done
  [[ -f "$STATE_DIR/settings.env" ]] || { say "nothing to stop in $WORKDIR (not prepared)"; return 0; }
  load_settings
  use_poc_env
  local before
  before=$(all_pids | sort -u | tr '\n' ' ')
  if [[ -z "${before// /}" ]]; then
    say "POC is not running in $WORKDIR"
    return 0
  fi
  # Graceful first: `nvflare poc stop` asks the server to shut the system down, and the sub_start.sh daemons
  # exit a few seconds after their process (cleaning or restarting before that races them).
  local patience=5
  if participant_running server; then
    say "stopping POC through NVFlare (nvflare poc stop)"
    if run_logged "$LOG_DIR/stop.log" timeout 120 nvflare poc stop; then
      patience=$timeout
    else
      say "nvflare poc stop failed (log: $LOG_DIR/stop.log); stopping by the PID files"
    fi
  else
    # Without a server `poc stop` cannot reach the clients, and a daemon would restart its process.
    say "the server is not running; stopping the remaining processes by their PID files"
  fi
  local left="" waited=0
  while :; do
    left=$(live_pids $before $(all_pids) | sort -u | tr '\n' ' ')
    [[ -n "${left// /}" && $waited -lt $patience ]] || break
    sleep 1; waited=$((waited + 1))
  done
  if [[ -n "${left// /}" ]]; then
    say "still running after $waited s: $left; killing by PID (daemons first)"
    # Daemons first: a sub_start.sh daemon restarts its process within 5 s when it finds it gone.
    local name d daemons=() rest=()
    for name in $(participants); do
      d=$(pid_from_file "$PROJECT_DIR/$name/daemon_pid.fl"); is_ours "$d" && daemons+=("$d")
    done
    [[ ${#daemons[@]} -eq 0 ]] || kill_pids 5 "${daemons[@]}"
    for pid in $left $(all_pids); do is_ours "$pid" && rest+=("$pid"); done
    [[ ${#rest[@]} -eq 0 ]] || kill_pids 10 "${rest[@]}"
  fi
  left=$(live_pids $before $(all_pids) | sort -u | tr '\n' ' ')
  [[ -z "${left// /}" ]] || die "could not stop POC processes: $left"
  rm -f "$STATE_DIR/started.pids"
  say "POC stopped; no process of $POC_WS is left"
}

cmd_clean() {
  [[ $# -eq 0 ]] || { [[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }; die "clean: unknown option $1"; }
  if [[ ! -e "$WORKDIR" || -z "$(ls -A "$WORKDIR" 2>/dev/null)" ]]; then
    rmdir "$WORKDIR" 2>/dev/null || true; say "nothing to clean"; return 0
  fi
  [[ -f "$MARKER" ]] || die "$WORKDIR was not made by 'poc.sh prepare' (no $MARKER_NAME); not deleting it"
  cmd_stop
  use_poc_env
  if [[ -d "$POC_WS" ]]; then
    run_logged "$LOG_DIR/clean.log" nvflare poc clean || say "nvflare poc clean failed; deleting the folder instead"
  fi
  rm -rf "$WORKDIR"
  say "removed $WORKDIR"
}

cmd_env() {
  load_settings
  cat <<EOF
export HOME="$POC_HOME"
export NVFLARE_POC_WORKSPACE="$POC_WS"
export NVFLARE_STARTUP_KIT_DIR="$ADMIN_KIT"
export PATH="$VENV_BIN:\$PATH"
export GRPC_POLL_STRATEGY=poll GRPC_ENABLE_FORK_SUPPORT=False
EOF
  [[ -z "${DEAD_CLIENT_GRACE:-}" ]] || echo "export NVFLARE_DEAD_CLIENT_GRACE_PERIOD=$DEAD_CLIENT_GRACE"
}

# -------------------------------------------------------------------------------------------------------- main
main() {
  local workdir="${GRADINV_POC_WORKDIR:-./workspace/poc}" args=()
  while [[ $# -gt 0 ]]; do  # --workdir may come before or after the command
    case "$1" in
      --workdir) [[ $# -ge 2 ]] || die "--workdir needs a folder"; workdir="$2"; shift 2 ;;
      --workdir=*) workdir="${1#*=}"; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  set -- "${args[@]+"${args[@]}"}"
  [[ $# -gt 0 ]] || { usage; exit 2; }
  local command="$1"; shift
  case "$command" in -h|--help|help) usage; exit 0 ;; esac
  set_layout "$workdir"
  case "$command" in
    prepare) cmd_prepare "$@" ;;
    start) cmd_start "$@" ;;
    submit) cmd_submit "$@" ;;
    wait) cmd_wait "$@" ;;
    download) cmd_download "$@" ;;
    abort) cmd_abort "$@" ;;
    check) cmd_check "$@" ;;
    report) cmd_report "$@" ;;
    status) cmd_status "$@" ;;
    kill-site) cmd_kill_site "$@" ;;
    stop) cmd_stop "$@" ;;
    clean) cmd_clean "$@" ;;
    env) cmd_env "$@" ;;
    *) usage >&2; die "unknown command '$command'" ;;
  esac
}

# On one line: bash reads a script as it runs it, so nothing after this line is read once main has started
# (editing the file while it runs cannot make bash execute a fragment of the new text).
main "$@"; exit
