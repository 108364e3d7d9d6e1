# bqemulator, the BigQuery emulator from PyPI, for the BigQuery sink's tests. Source after
# common.sh and python.sh (ensure_venv installs the pinned bqemulator + duckdb + numpy from
# scripts/requirements-test.txt; port_to_start, start_background_service and wait_for_service
# run it).
#
#   start_bqemulator   REST on $FLUXGATE_TEST_BIGQUERY_URL (default http://127.0.0.1:9050),
#                      gRPC on 9060 ($FLUXGATE_TEST_BIGQUERY_GRPC_URL), project fluxgate-test: reused when it already answers,
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
  # The Storage Write API's port of the same emulator (FLUXGATE_BIGQUERY_WRITE_MODE=storage-write).
  export FLUXGATE_TEST_BIGQUERY_GRPC_URL=${FLUXGATE_TEST_BIGQUERY_GRPC_URL:-http://127.0.0.1:$FLUXGATE_BIGQUERY_GRPC_PORT}
  port_to_start bqemulator FLUXGATE_TEST_BIGQUERY_URL bqemulator_answers 9050 || return 0
  [ -x "$FLUXGATE_VENV/bin/python" ] || die "no virtualenv at $FLUXGATE_VENV: run ensure_venv first"
  local launcher
  launcher="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bqemulator_launcher.py"
  start_background_service bqemulator "$FLUXGATE_VENV/bin/python" "$launcher" start \
    --rest-host 127.0.0.1 --rest-port "$PORT_TO_START" \
    --grpc-host 127.0.0.1 --grpc-port "$FLUXGATE_BIGQUERY_GRPC_PORT" \
    --project "$FLUXGATE_BIGQUERY_TEST_PROJECT" --ephemeral --log-level warning
  wait_for_service 90 bqemulator "$STARTED_PID" bqemulator_answers "$FLUXGATE_TEST_BIGQUERY_URL"
}
