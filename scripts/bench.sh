#!/usr/bin/env bash
# Benchmarks, printed as Markdown tables with ratios against a baseline run in the same process.
#   scripts/bench.sh                  # ingest: wrk against the release fluxgate-ingest beside
#                                     # pgbench writing the same rows, on PostgreSQL
#   scripts/bench.sh metrics          # the admin aggregations on 1M outbox rows
#   scripts/bench.sh cold-start       # release binaries: size, spawn to first Lambda Runtime API
#                                     # request, against curl making the same request
#   scripts/bench.sh drain            # release fluxgate-local draining 100k PENDING events to
#                                     # DONE, against the same SQL by one pgbench/sqlx client
#   scripts/bench.sh latency          # receive -> DONE p50/p95/p99 of fluxgate-local at 500/s,
#                                     # and what eager publish to SQS (moto) adds to a POST
#   scripts/bench.sh bigquery         # rows/s and requests per 100k events of each BigQuery write
#                                     # mode into bqemulator, against a plain insertAll client
#   FLUXGATE_BENCH_DATABASES=postgres,mysql,sqlite scripts/bench.sh drain
#   FLUXGATE_BENCH_ROUNDS=5 scripts/bench.sh drain     # best of more rounds (default 3)
#   FLUXGATE_BENCH_SECONDS=30 scripts/bench.sh ingest # longer runs (default 15 s)
#   FLUXGATE_BENCH_INGEST_BINARY=/path/fluxgate-ingest scripts/bench.sh ingest  # that binary
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
source scripts/lib/databases.sh
source scripts/lib/python.sh
source scripts/lib/bqemulator.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fluxgate/target}"

# fluxgate-local as it ships (the release profile: fat LTO), copied at once out of the shared
# target folder, where another checkout's release build would replace it.
build_local() {
  # A binary named by the caller is measured as it is (say which profile in the results).
  [ -z "${FLUXGATE_BENCH_LOCAL_BINARY:-}" ] || return 0
  cargo build --release -p fluxgate-local
  cp "$CARGO_TARGET_DIR/release/fluxgate-local" "$bench_bin_dir/"
  export FLUXGATE_BENCH_LOCAL_BINARY="$bench_bin_dir/fluxgate-local"
}

# Copied binaries and services started here go when the script ends, whatever happens.
bench_bin_dir=$(mktemp -d "${TMPDIR:-/tmp}/fluxgate-bench-bin.XXXXXX")
BACKGROUND_PIDS=()
on_exit() {
  local pid
  for pid in "${BACKGROUND_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$bench_bin_dir"
}
trap on_exit EXIT

case "${1:-ingest}" in
  ingest)
    ensure_postgres
    ensure_pgbench
    command -v wrk >/dev/null 2>&1 || apt_install wrk
    # fluxgate-ingest as it ships (the release profile, its own package and default features:
    # the Lambda build), copied out of the shared target folder. FLUXGATE_BENCH_INGEST_BINARY
    # set by the caller measures that binary instead (another profile, another branch's build).
    if [ -z "${FLUXGATE_BENCH_INGEST_BINARY:-}" ]; then
      cargo build --release -p fluxgate-ingest
      cp "$CARGO_TARGET_DIR/release/fluxgate-ingest" "$bench_bin_dir/"
      export FLUXGATE_BENCH_INGEST_BINARY="$bench_bin_dir/fluxgate-ingest"
    fi
    # The pool pgbench's 32 clients get; FLUXGATE_DB_MAX_CONNECTIONS=… measures another.
    export FLUXGATE_DB_MAX_CONNECTIONS="${FLUXGATE_DB_MAX_CONNECTIONS:-32}"
    # The harness only starts processes (wrk, pgbench, fluxgate-ingest) and counts rows: the
    # test profile, which the test suite has built already, is enough for it.
    cargo test -p fluxgate-tests --bench ingest
    ;;
  metrics)
    ensure_postgres
    ensure_mariadb
    exec cargo bench -p fluxgate-tests --bench metrics
    ;;
  cold-start)
    # The binaries as they are deployed: the release profile, each package on its own with its
    # default features (`aws`, the Lambda build), as SAM builds them. One `cargo build` of all
    # five would unify their features and link every function with every client.
    for function in ingest outbox-drain worker replay metrics; do
      cargo build --release -p "fluxgate-$function"
    done
    # The harness only spawns processes and waits on a socket: the test profile (whose
    # dependencies the test suite has built already) is enough for it.
    exec cargo test -p fluxgate-tests --bench cold_start
    ;;
  drain)
    ensure_postgres
    case ",${FLUXGATE_BENCH_DATABASES:-postgres}," in
      *,mysql,* | *,mariadb,*) ensure_mariadb ;;
    esac
    ensure_pgbench
    # The harness runs in the bench profile: its raw SQL client on MariaDB and SQLite should
    # not be slowed by a debug build.
    build_local
    cargo bench -p fluxgate-tests --bench drain
    ;;
  latency)
    ensure_postgres
    # moto (SQS) for the eager-publish part, from the test venv.
    ensure_venv
    start_moto
    build_local
    cargo build --release -p fluxgate-ingest
    cp "$CARGO_TARGET_DIR/release/fluxgate-ingest" "$bench_bin_dir/"
    export FLUXGATE_BENCH_INGEST_BINARY="$bench_bin_dir/fluxgate-ingest"
    cargo bench -p fluxgate-tests --bench latency
    ;;
  bigquery)
    ensure_postgres
    ensure_venv
    # bqemulator (REST 9050, gRPC 9060): reused when it answers, else started here and stopped
    # at exit.
    start_bqemulator
    build_local
    # The harness only seeds, starts fluxgate-local and counts; its baseline client waits on the
    # emulator: the test profile (built by the test suite already) is enough for it.
    cargo test -p fluxgate-tests --bench bigquery
    ;;
  *)
    die "unknown benchmark ${1}: use ingest, metrics, cold-start, drain, latency or bigquery"
    ;;
esac
