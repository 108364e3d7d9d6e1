# bqemulator, the BigQuery emulator from PyPI, for the BigQuery sink's tests. Source after
# common.sh; needs the test virtualenv (scripts/lib/python.sh, pinned bqemulator + duckdb +
# numpy in scripts/requirements-test.txt).
# shellcheck shell=bash

: "${FLUXGATE_BIGQUERY_REST_PORT:=9050}"
: "${FLUXGATE_BIGQUERY_GRPC_PORT:=9060}"
: "${FLUXGATE_BIGQUERY_TEST_PROJECT:=fluxgate-test}"
: "${FLUXGATE_TEST_BIGQUERY_URL:=http://127.0.0.1:$FLUXGATE_BIGQUERY_REST_PORT}"
export FLUXGATE_TEST_BIGQUERY_URL

# The emulator answers a BigQuery REST call for the test project.
bqemulator_answers() {
  curl -fsS --max-time 2 \
    "$FLUXGATE_TEST_BIGQUERY_URL/bigquery/v2/projects/$FLUXGATE_BIGQUERY_TEST_PROJECT/datasets" \
    >/dev/null 2>&1
}

# start_bqemulator [PYTHON]: reuses an emulator that already answers (another checkout's test
# run, a developer's), else starts one with the virtualenv's Python through
# scripts/bqemulator_launcher.py (which works around DuckDB's `INSTALL spatial` needing the
# internet), appends its PID to BACKGROUND_PIDS so test.sh stops what it started, and waits
# until it answers. Fails loudly: tests never skip for a missing emulator.
start_bqemulator() {
  local python=${1:-${FLUXGATE_VENV:-${FLUXGATE_CACHE_DIR:-$HOME/.cache/fluxgate}/venv}/bin/python}
  local root log pid
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  section "bqemulator: $FLUXGATE_TEST_BIGQUERY_URL (project $FLUXGATE_BIGQUERY_TEST_PROJECT)"
  command -v curl >/dev/null 2>&1 || apt_install curl
  if bqemulator_answers; then
    info "running (reused)"
    return 0
  fi
  [ -x "$python" ] || die "no Python at $python: build the test virtualenv first (scripts/lib/python.sh)"
  "$python" -c 'import bqemulator, numpy' 2>/dev/null ||
    die "bqemulator or numpy is missing from $python's environment (scripts/requirements-test.txt pins them)"
  log=${FLUXGATE_CACHE_DIR:-$HOME/.cache/fluxgate}/bqemulator.log
  mkdir -p "$(dirname "$log")"
  "$python" "$root/scripts/bqemulator_launcher.py" start \
    --rest-host 127.0.0.1 --rest-port "$FLUXGATE_BIGQUERY_REST_PORT" \
    --grpc-host 127.0.0.1 --grpc-port "$FLUXGATE_BIGQUERY_GRPC_PORT" \
    --project "$FLUXGATE_BIGQUERY_TEST_PROJECT" --ephemeral --log-level warning \
    >"$log" 2>&1 &
  pid=$!
  BACKGROUND_PIDS+=("$pid")
  info "started (pid $pid, log $log)"
  local deadline=$((SECONDS + 90))
  until bqemulator_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2 || true
      die "bqemulator exited at start (log above, in full at $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$log" >&2 || true
      die "bqemulator did not answer at $FLUXGATE_TEST_BIGQUERY_URL within 90s"
    fi
    sleep 0.5
  done
  info "answering after $((SECONDS - deadline + 90))s"
}
