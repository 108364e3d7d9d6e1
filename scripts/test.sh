#!/usr/bin/env bash
# fluxgate's test command (the README's and CI's, through .ci/run):
#
#   bash scripts/test.sh
#
# On a fresh machine it installs and starts what the tests need (PostgreSQL, MariaDB; later the
# Python-side services), and is quick when they are already there. Then: rustfmt check, clippy
# with warnings as errors, cfn-lint of template.yaml, and the whole workspace's tests (cargo
# nextest when installed).
#
# Settings (environment):
#   CARGO_TARGET_DIR             build cache, default ~/.cache/fluxgate/target (outside the clone)
#   FLUXGATE_TEST_POSTGRES_URL   admin URL of the PostgreSQL test server
#                                (default postgres://postgres@127.0.0.1:5432/postgres)
#   FLUXGATE_TEST_MYSQL_URL      admin URL of the MariaDB test server
#                                (default mysql://root@127.0.0.1:3306/test)
#   FLUXGATE_TEST_DB_MIN_AGE_MINUTES  leftover test databases older than this are dropped (10)
#   FLUXGATE_SKIP_LINT=1         skip rustfmt and clippy (local iterations only)
#   extra arguments              are passed to the test runner, e.g. `-p fluxgate-tests`
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export FLUXGATE_SCRIPT_START=$SECONDS

# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh
# shellcheck source=scripts/lib/databases.sh
. scripts/lib/databases.sh
# shellcheck source=scripts/lib/python.sh
. scripts/lib/python.sh
# shellcheck source=scripts/lib/bqemulator.sh
. scripts/lib/bqemulator.sh

FLUXGATE_CACHE_DIR=${FLUXGATE_CACHE_DIR:-$HOME/.cache/fluxgate}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$FLUXGATE_CACHE_DIR/target}
mkdir -p "$FLUXGATE_CACHE_DIR"

# Background services this script starts; stopped by PID when it exits, whatever happens.
BACKGROUND_PIDS=()
CURRENT_STEP=setup
on_exit() {
  local status=$? pid
  for pid in "${BACKGROUND_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    printf '\nerror: scripts/test.sh failed (exit %s) in: %s\n' "$status" "$CURRENT_STEP" >&2
  fi
}
trap on_exit EXIT

step() {
  CURRENT_STEP=$*
  section "$*"
}

# ---------------------------------------------------------------------------------------------
# Python-side test services (scripts/lib/python.sh): ONE virtualenv of pinned tools
# (scripts/requirements-test.txt: moto[server], bqemulator + duckdb + numpy, cfn-lint,
# cargo-lambda) at $FLUXGATE_CACHE_DIR/venv, reused while the file's sha256 matches; its bin/ is
# put on PATH. Services are reused when their port already answers, otherwise started here,
# their PIDs appended to BACKGROUND_PIDS (stopped at exit) and waited for. A service that fails
# to start fails this script: tests never skip quietly.
#   moto_server (SQS, Secrets Manager)  -> FLUXGATE_TEST_MOTO_URL (default http://127.0.0.1:4566)
#   bqemulator (BigQuery REST 9050, gRPC 9060, project fluxgate-test)
#                                       -> FLUXGATE_TEST_BIGQUERY_URL (default http://127.0.0.1:9050)
#                                          FLUXGATE_TEST_BIGQUERY_GRPC_URL (the Storage Write API,
#                                          default http://127.0.0.1:9060)
# ---------------------------------------------------------------------------------------------
ensure_python_services() {
  step "Python tools and services"
  ensure_venv
  start_moto
  start_bqemulator
}

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    # MariaDB's second claim strategy (for servers without SKIP LOCKED) on the real server.
    step "Store conformance on MariaDB with FLUXGATE_MYSQL_CLAIM_MODE=claim-then-fetch"
    info "the MariaDB tests only: nextest counts the other databases' as skipped (they run below)"
    FLUXGATE_MYSQL_CLAIM_MODE=claim-then-fetch \
      cargo nextest run -p fluxgate-tests --test store_conformance -E 'test(/^mariadb::/)'
    step "Doc tests"
    info "none yet: this runs any code example a doc comment gets (nextest does not)"
    cargo test --workspace --doc
    step "Tests: cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast "$@"
  else
    step "Store conformance on MariaDB with FLUXGATE_MYSQL_CLAIM_MODE=claim-then-fetch"
    FLUXGATE_MYSQL_CLAIM_MODE=claim-then-fetch \
      cargo test -p fluxgate-tests --test store_conformance -- mariadb::
    step "Tests: cargo test --workspace (cargo-nextest is not installed)"
    cargo test --workspace --no-fail-fast "$@"
  fi
}

main() {
  command -v cargo >/dev/null 2>&1 ||
    die "fluxgate needs the Rust toolchain (cargo) on PATH"
  info "repository $ROOT"
  info "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

  CURRENT_STEP="PostgreSQL"
  ensure_postgres
  CURRENT_STEP="MariaDB"
  ensure_mariadb
  CURRENT_STEP="leftover test databases"
  drop_leftover_test_databases
  CURRENT_STEP="Python-side services"
  ensure_python_services

  if [ "${FLUXGATE_SKIP_LINT:-}" != 1 ]; then
    step "Formatting: cargo fmt --all -- --check"
    cargo fmt --all -- --check
    step "Lints: cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
    # The common crate's modules import each other in one direction only (docs/ARCHITECTURE.md).
    step "Lints: no import circle in shared/src"
    python3 scripts/lib/module_cycles.py shared/src >/dev/null
  fi
  # The AWS SAM template, offline (cfn-lint from the venv): any error or warning fails here.
  step "Template: cfn-lint template.yaml"
  cfn-lint template.yaml


  run_tests "$@"

  CURRENT_STEP="finished"
  section "All checks passed"
}

main "$@"
