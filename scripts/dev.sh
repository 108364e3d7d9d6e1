#!/usr/bin/env bash
# Runs the whole pipeline in one process on embedded defaults: SQLite, an in-process queue and a
# file warehouse under ./.fluxgate. No cloud account, no database server.
#   scripts/dev.sh                      # http://127.0.0.1:8080
#   PORT=9000 scripts/dev.sh            # another port
#   DATABASE_URL=postgres://… scripts/dev.sh   # PostgreSQL (or mysql://…) instead of SQLite
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "fluxgate needs the Rust toolchain: install it from https://rustup.rs, then run this again." >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fluxgate/target}"
export FLUXGATE_LOG_FORMAT="${FLUXGATE_LOG_FORMAT:-text}"
exec cargo run --quiet -p fluxgate-local -- "$@"
