#!/usr/bin/env bash
# Benchmarks, printed as Markdown tables with ratios against a baseline run in the same process.
#   scripts/bench.sh                  # ingest: wrk against the release fluxgate-ingest beside
#                                     # pgbench writing the same rows, on PostgreSQL
#   scripts/bench.sh metrics          # the admin aggregations on 1M outbox rows
#   scripts/bench.sh cold-start       # release binaries: size, spawn to first Lambda Runtime API
#                                     # request, against curl making the same request
#   scripts/bench.sh drain            # release fluxgate-local draining 100k PENDING events to
#                                     # DONE, against the same SQL by one pgbench/sqlx client
#   scripts/bench.sh latency          # receive -> DONE p50/p95/p99 of fluxgate-local at 500/s
#   FLUXGATE_BENCH_DATABASES=postgres,mysql,sqlite scripts/bench.sh drain
#   FLUXGATE_BENCH_ROUNDS=5 scripts/bench.sh drain     # best of more rounds (default 3)
#   FLUXGATE_BENCH_SECONDS=30 scripts/bench.sh ingest # longer runs (default 15 s)
#   FLUXGATE_BENCH_INGEST_BINARY=/path/fluxgate-ingest scripts/bench.sh ingest  # that binary
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
source scripts/lib/databases.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fluxgate/target}"

# fluxgate-local as it ships (the release profile: fat LTO), copied at once out of the shared
# target folder, where another checkout's release build would replace it.
build_local() {
  cargo build --release -p fluxgate-local
  bench_bin_dir=$(mktemp -d "${TMPDIR:-/tmp}/fluxgate-bench-bin.XXXXXX")
  trap 'rm -rf "$bench_bin_dir"' EXIT
  cp "$CARGO_TARGET_DIR/release/fluxgate-local" "$bench_bin_dir/"
  export FLUXGATE_BENCH_LOCAL_BINARY="$bench_bin_dir/fluxgate-local"
}

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
      bench_bin_dir=$(mktemp -d "${TMPDIR:-/tmp}/fluxgate-bench-bin.XXXXXX")
      trap 'rm -rf "$bench_bin_dir"' EXIT
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
    build_local
    cargo bench -p fluxgate-tests --bench latency
    ;;
  *)
    die "unknown benchmark ${1}: use ingest, metrics, cold-start, drain or latency"
    ;;
esac
