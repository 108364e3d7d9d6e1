# Python-side test tools and the services they run. Source it after common.sh; it defines
# functions only.
#
#   ensure_venv    the ONE virtualenv of fluxgate's Python tools (moto, bqemulator, cfn-lint,
#                  cargo-lambda), at $FLUXGATE_VENV (default ~/.cache/fluxgate/venv), built from
#                  the pinned scripts/requirements-test.txt and reused while that file's sha256
#                  matches; its bin/ goes first on PATH.
#   start_moto     moto_server (SQS, Secrets Manager) at $FLUXGATE_TEST_MOTO_URL
#                  (default http://127.0.0.1:4566): reused when it already answers, else started
#                  in the background and waited for; exports FLUXGATE_TEST_MOTO_URL.
#   port_to_start / start_background_service / wait_for_service
#                  the plumbing start_moto uses, for other services (scripts/lib/bqemulator.sh):
#                  the PID goes into BACKGROUND_PIDS, which scripts/test.sh stops at exit.
# shellcheck shell=bash

FLUXGATE_CACHE_DIR=${FLUXGATE_CACHE_DIR:-$HOME/.cache/fluxgate}
FLUXGATE_VENV=${FLUXGATE_VENV:-$FLUXGATE_CACHE_DIR/venv}
FLUXGATE_REQUIREMENTS=${FLUXGATE_REQUIREMENTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/requirements-test.txt}
# Where started services write their output (kept after the run, for a look when one fails).
FLUXGATE_SERVICE_LOG_DIR=${FLUXGATE_SERVICE_LOG_DIR:-$FLUXGATE_CACHE_DIR/logs}

# The interpreter the venv is made from: python3 >= 3.10 with the venv module; installed from
# Debian's packages when missing.
venv_base_python() {
  local python
  for python in "${FLUXGATE_PYTHON:-}" python3; do
    [ -n "$python" ] || continue
    if command -v "$python" >/dev/null 2>&1 &&
      "$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      command -v "$python"
      return
    fi
  done
  apt_install python3 python3-venv >&2
  command -v python3 || die "python3 is still missing after installing it"
}

ensure_venv() {
  [ -f "$FLUXGATE_REQUIREMENTS" ] || die "missing $FLUXGATE_REQUIREMENTS"
  local wanted stamp="$FLUXGATE_VENV/.requirements.sha256"
  wanted=$(sha256sum "$FLUXGATE_REQUIREMENTS" | cut -d' ' -f1)
  mkdir -p "$(dirname "$FLUXGATE_VENV")"
  # Several clones (worktrees, CI) may share the cache: one builds, the others wait and reuse.
  (
    flock -w 900 9 || die "waited 15 minutes for another build of $FLUXGATE_VENV"
    if [ -x "$FLUXGATE_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
      info "Python tools: reusing $FLUXGATE_VENV (requirements sha256 ${wanted:0:12})"
      exit 0
    fi
    local python started=$SECONDS
    python=$(venv_base_python)
    info "Python tools: building $FLUXGATE_VENV from scripts/requirements-test.txt with $("$python" --version 2>&1)"
    # A venv cannot be moved (its scripts name their own path), so it is rebuilt in place; the
    # stamp is written last, so an interrupted build is never taken for a finished one.
    rm -rf "$FLUXGATE_VENV"
    "$python" -m venv "$FLUXGATE_VENV"
    "$FLUXGATE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --requirement "$FLUXGATE_REQUIREMENTS"
    printf '%s\n' "$wanted" >"$stamp"
    info "Python tools: built in $((SECONDS - started))s"
  ) 9>"$FLUXGATE_VENV.lock"
  case ":$PATH:" in
    *":$FLUXGATE_VENV/bin:"*) ;;
    *) export PATH="$FLUXGATE_VENV/bin:$PATH" ;;
  esac
}

# start_background_service NAME COMMAND...: starts COMMAND in the background with its output in
# $FLUXGATE_SERVICE_LOG_DIR/NAME.log, records its PID in BACKGROUND_PIDS (scripts/test.sh stops
# them at exit) and in STARTED_PID for the caller.
start_background_service() {
  local name=$1
  shift
  mkdir -p "$FLUXGATE_SERVICE_LOG_DIR"
  local log="$FLUXGATE_SERVICE_LOG_DIR/$name.log"
  "$@" >"$log" 2>&1 </dev/null &
  STARTED_PID=$!
  BACKGROUND_PIDS+=("$STARTED_PID")
  info "$name: started (pid $STARTED_PID, log $log)"
}

# wait_for_service SECONDS NAME PID PROBE...: waits until PROBE succeeds; fails early with the
# end of the service's log when the process exits, and after SECONDS otherwise.
wait_for_service() {
  local timeout=$1 name=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + timeout)) log="$FLUXGATE_SERVICE_LOG_DIR/$name.log"
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "$name exited before it answered (log above, $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log" >&2 || true
      die "$name did not answer within ${timeout}s (log above, $log)"
    fi
    sleep 0.25
  done
  info "$name: ready"
}

# port_to_start NAME VAR PROBE DEFAULT_PORT: whether to start the test service NAME for the URL
# in $VAR. Fails (nothing to start) when PROBE already answers there; dies when the URL is
# not on this machine or another program holds its port; else sets PORT_TO_START.
port_to_start() {
  local name=$1 var=$2 probe=$3 default_port=$4
  local url=${!var}
  if "$probe" "$url"; then
    info "$name: reusing the server at $url"
    return 1
  fi
  is_local_url "$url" ||
    die "no $name answers at $var=$url, and it is not on this machine to start"
  PORT_TO_START=$(url_port "$url" "$default_port")
  if (: <"/dev/tcp/127.0.0.1/$PORT_TO_START") 2>/dev/null; then
    die "port $PORT_TO_START answers but is not $name ($var=$url); free it or point $var elsewhere"
  fi
}

# True when a moto server answers at URL (its management API, so another service on the
# port is not taken for moto).
moto_answers() {
  curl --silent --fail --max-time 2 --output /dev/null "$1/moto-api/data.json"
}

start_moto() {
  export FLUXGATE_TEST_MOTO_URL=${FLUXGATE_TEST_MOTO_URL:-http://127.0.0.1:4566}
  port_to_start moto FLUXGATE_TEST_MOTO_URL moto_answers 4566 || return 0
  command -v moto_server >/dev/null 2>&1 || die "moto_server is missing: run ensure_venv first"
  start_background_service moto moto_server -H 127.0.0.1 -p "$PORT_TO_START"
  wait_for_service 60 moto "$STARTED_PID" moto_answers "$FLUXGATE_TEST_MOTO_URL"
}
