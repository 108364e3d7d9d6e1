#!/usr/bin/env bash
# Ingest benchmark: fluxgate's HTTP ingest beside raw INSERTs of the same rows, same process,
# same database server. Prints a Markdown table. Needs the same services as the tests.
#   scripts/bench.sh                                   # PostgreSQL and MariaDB
#   FLUXGATE_BENCH_DATABASES=postgres,sqlite scripts/bench.sh
#   FLUXGATE_BENCH_SCALE=4 scripts/bench.sh            # more events per run
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
source scripts/lib/databases.sh
ensure_postgres
ensure_mariadb
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fluxgate/target}"
exec cargo bench -p fluxgate-tests --bench ingest
