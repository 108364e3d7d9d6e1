# bqemulator, the BigQuery emulator from PyPI, for the BigQuery sink's tests. Source after
# common.sh and python.sh (ensure_venv installs the pinned bqemulator + duckdb + numpy from
# scripts/requirements-test.txt; start_background_service / wait_for_service run it).
#
#   start_bqemulator   REST on $FLUXGATE_TEST_BIGQUERY_URL (default http://127.0.0.1:9050),
#                      gRPC on 9060, project fluxgate-test: reused when it already answers,
#                      else started through scripts/bqemulator_launcher.py (which stubs DuckDB's
#                      `INSTALL spatial`, a download this machine cannot make), its PID in
#                      BACKGROUND_PIDS so scripts/test.sh stops what it started.
# shellcheck shell=bash

FLUXGATE_BIGQUERY_TEST_PROJECT=${FLUXGATE_BIGQUERY_TEST_PROJECT:-fluxgate-test}
FLUXGATE_BIGQUERY_GRPC_PORT=${FLUXGATE_BIGQUERY_GRPC_PORT:-9060}

# True when a BigQuery REST API answers for the test project at URL (so another service on
# the port is not taken for the emulator).
bqemulator_answers() {
  curl --silent --fail --max-time 2 --output /dev/null \
    "$1/bigquery/v2/projects/$FLUXGATE_BIGQUERY_TEST_PROJECT/datasets"
}

start_bqemulator() {
  export FLUXGATE_TEST_BIGQUERY_URL=${FLUXGATE_TEST_BIGQUERY_URL:-http://127.0.0.1:9050}
  local url=$FLUXGATE_TEST_BIGQUERY_URL
  if bqemulator_answers "$url"; then
    info "bqemulator: reusing the server at $url"
    return
  fi
  is_local_url "$url" ||
    die "no bqemulator answers at FLUXGATE_TEST_BIGQUERY_URL=$url, and it is not on this machine to start"
  local port launcher
  port=$(url_port "$url" 9050)
  if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port answers but is not bqemulator (FLUXGATE_TEST_BIGQUERY_URL=$url); free it or point FLUXGATE_TEST_BIGQUERY_URL elsewhere"
  fi
  [ -x "$FLUXGATE_VENV/bin/python" ] || die "no virtualenv at $FLUXGATE_VENV: run ensure_venv first"
  launcher="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bqemulator_launcher.py"
  start_background_service bqemulator "$FLUXGATE_VENV/bin/python" "$launcher" start \
    --rest-host 127.0.0.1 --rest-port "$port" \
    --grpc-host 127.0.0.1 --grpc-port "$FLUXGATE_BIGQUERY_GRPC_PORT" \
    --project "$FLUXGATE_BIGQUERY_TEST_PROJECT" --ephemeral --log-level warning
  wait_for_service 90 bqemulator "$STARTED_PID" bqemulator_answers "$url"
}
